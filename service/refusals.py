"""A refused request is counted once: resmtnet_rejections_total{reason} takes each request under the first reason it
was refused for, whichever layer refuses it (the body's limits, a route, the batcher, a client that then leaves)."""

from __future__ import annotations

from contextvars import ContextVar

from prometheus_client import Counter


class Submission:
    """What one client request submits (its patches, across the batcher's calls): refused at most once."""

    __slots__ = ("refused",)

    def __init__(self) -> None:
        self.refused = False


_current: ContextVar[Submission | None] = ContextVar("submission", default=None)


def begin_request() -> None:
    """A fresh Submission for the request this task now serves (the middleware calls this as a request arrives)."""
    _current.set(Submission())


def current() -> Submission | None:
    """The Submission of the request this task serves, or None outside a request."""
    return _current.get()


def count(rejections: Counter, reason: str, submission: Submission | None = None) -> None:
    """Count a refusal under `reason`, unless this request (`submission`, by default the current one) was counted."""
    submission = submission or current()
    if submission is not None:
        if submission.refused:
            return
        submission.refused = True
    rejections.labels(reason=reason).inc()
