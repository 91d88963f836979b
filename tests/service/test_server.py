"""The drain's deadlines and the configured protocol class (the protocol itself: tests/e2e/test_protocol_guards.py)."""

import time

from service.server import GRACEFUL_SHUTDOWN_S, Drain, GuardedHttpToolsProtocol, guarded_protocol


def test_a_drain_changes_nothing_until_it_begins_then_brings_deadlines_forward():
    drain = Drain(uploads_s=5.0)
    far = time.perf_counter() + 1000.0
    assert drain.upload_deadline() is None and drain.answer_deadline(far) == far
    drain.begin()
    first = drain.since_monotonic
    drain.begin()  # a second signal does not move the start
    assert drain.since_monotonic == first
    assert drain.upload_deadline() == first + 5.0
    assert drain.answer_deadline(far) < drain.since_perf + GRACEFUL_SHUTDOWN_S
    near = time.perf_counter() + 1.0
    assert drain.answer_deadline(near) == near


def test_guarded_protocol_carries_the_configured_limits():
    cls = guarded_protocol(4096, 2.5, hsts_seconds=600)
    assert issubclass(cls, GuardedHttpToolsProtocol)
    assert (cls.max_header_bytes, cls.header_timeout_s) == (4096, 2.5)
    assert (b"strict-transport-security", b"max-age=600") in cls.answer_headers
    assert (b"x-content-type-options", b"nosniff") in guarded_protocol(4096, 2.5).answer_headers
