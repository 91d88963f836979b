"""A request whose client leaves after its body arrived is dropped, not run: its queued patches are withdrawn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from service.cancel import Stop

T = TypeVar("T")


async def while_connected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """The result of `work` (preparing the request and waiting for the model), unless the client disconnects first:
    then `work` is cancelled, which withdraws its patches from the batcher's queue, and ClientDisconnect is raised
    (answered as 499 and counted as client_gone, like a client that leaves during its upload). `work` runs in this
    task; one watcher task waits for the disconnect."""
    task = asyncio.current_task()
    assert task is not None
    gone = finished = False

    def on_disconnect(watcher: asyncio.Task[None]) -> None:
        nonlocal gone
        if not finished and not watcher.cancelled() and watcher.exception() is None:
            gone = True
            task.cancel()

    watcher = asyncio.ensure_future(_disconnected(request.receive))
    watcher.add_done_callback(on_disconnect)
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:  # cancelled for the disconnect alone, not also from outside
            raise ClientDisconnect() from None
        raise
    finally:
        finished = True  # a callback already scheduled must not cancel what comes after
        watcher.cancel()


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has gone (the body was read whole before: receive() only waits for that)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def in_thread_to_the_end(
    executor: Executor | None, fn: Callable[..., T], *args: Any, stop: Stop | None = None
) -> T:
    """fn(*args) in the executor. Cancelled meanwhile (the client left, the server stops), this gives up `stop` (fn
    checks it between its steps, so it ends early) and still waits for the thread to finish before passing the
    cancellation on: what the caller holds for it (the request body, the CT gate, its share of the in-flight bytes)
    is released only once nothing uses it."""
    job = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        if stop is not None:
            stop.give_up()
        await asyncio.wait((job,))  # the thread cannot be interrupted: wait for it, whatever it ends with
        if not job.cancelled():
            job.exception()  # read, so that asyncio does not log it as never retrieved (GivenUp, most often)
        raise
