"""The stop token that work in a worker thread checks between its steps."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.api.disconnect import in_thread_to_the_end
from service.cancel import GivenUp, Stop
from service.errors import DeadlineExceeded


def test_a_fresh_stop_lets_the_work_go_on():
    Stop(time.perf_counter() + 60, "testing").check()


def test_a_stop_past_its_deadline_raises_a_504_naming_the_step():
    with pytest.raises(DeadlineExceeded) as caught:
        Stop(time.perf_counter() - 0.001, "its CT series was being prepared").check()
    assert caught.value.status == 504
    assert caught.value.detail == "the request's deadline passed while its CT series was being prepared"


def test_a_given_up_stop_raises_given_up_even_before_its_deadline():
    stop = Stop(time.perf_counter() + 60, "testing")
    stop.give_up()
    with pytest.raises(GivenUp):
        stop.check()


def test_cancelling_the_caller_gives_up_the_thread_and_still_waits_for_it():
    """The thread sees the give-up at its next check and ends early; the caller's cancellation comes only after."""
    started, checks = threading.Event(), []

    def work(stop: Stop) -> str:
        started.set()
        for _ in range(500):  # 5 s unless stopped
            time.sleep(0.01)
            try:
                stop.check()
            except GivenUp:
                checks.append("given up")
                raise
        return "finished"

    async def main() -> float:
        stop = Stop(time.perf_counter() + 60, "testing")
        task = asyncio.ensure_future(in_thread_to_the_end(None, work, stop, stop=stop))
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        t = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert checks == ["given up"]  # the thread had ended before the cancellation was passed on
        return time.perf_counter() - t

    assert asyncio.run(main()) < 1.0
