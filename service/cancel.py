"""A stop token that work in a worker thread checks between its steps: a thread cannot be interrupted, but it can
stop at the next step once its request is given up (the client left, the server stops) or its deadline has passed."""

from __future__ import annotations

import threading
import time

from service.errors import DeadlineExceeded


class GivenUp(Exception):
    """The request was given up while its work ran; nobody waits for the result."""


class Stop:
    """Raised at the next check(): GivenUp once give_up() was called, DeadlineExceeded once the perf_counter
    deadline has passed."""

    def __init__(self, deadline: float, doing: str) -> None:
        self.deadline = deadline
        self.doing = doing  # "its CT series was being prepared": the 504's detail names the step
        self._given_up = threading.Event()

    def give_up(self) -> None:
        self._given_up.set()

    def check(self) -> None:
        if self._given_up.is_set():
            raise GivenUp()
        if time.perf_counter() >= self.deadline:
            raise DeadlineExceeded(f"the request's deadline passed while {self.doing}")
