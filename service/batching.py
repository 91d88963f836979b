"""The dynamic batcher: one per model. Requests queue (bounded); a loop collects up to max_batch_size of them,
waiting at most max_delay after the first, drops those whose deadline passed or whose client left, and runs the
rest as one onnxruntime call in a worker thread: one run at a time per session (several sessions may run side by
side; a solo session with every core takes a lone request while the others are idle), and the event loop never
touches array work.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service import refusals
from service.errors import DeadlineExceeded, NotReady, Overloaded, PayloadTooLarge
from service.metrics import Metrics
from service.refusals import Submission
from service.runtime.cpus import pin_this_thread

log = logging.getLogger("resmtnet")
RunBatch = Callable[[np.ndarray], list[np.ndarray]]
# A patch already on the model when its deadline passes is waited for this much longer (a batch takes milliseconds;
# a run that takes longer than this is hung, and its request gets its 504 after all).
RUNNING_GRACE_S = 5.0


@dataclass
class Pending:
    """One patch waiting for the model."""

    patch: np.ndarray  # (D, D, D) float32, already preprocessed
    deadline: float  # perf_counter seconds
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    submission: Submission | None = None  # the request it belongs to, for counting refusals once per request
    running: bool = False  # taken into a batch for the model: its answer comes, whatever the deadline


class Worker:
    """One session's run function and the one thread that always calls it, on one CPU when `cpu` is given."""

    def __init__(self, run: RunBatch, cpu: int | None = None) -> None:
        self.run = run
        pin = None if cpu is None else functools.partial(_pin, cpu)
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime", initializer=pin)


def _pin(cpu: int) -> None:
    if not pin_this_thread(cpu):
        log.warning("could not pin a session's thread to CPU %d; it runs on any", cpu)


@dataclass(frozen=True)
class Prediction:
    """One row of every model output, and where the time went."""

    outputs: list[np.ndarray]
    queue_s: float
    inference_s: float
    batch_size: int


async def collect_batch(
    queue: asyncio.Queue[Pending], max_size: int, max_delay_s: float, sessions: int = 1
) -> list[Pending]:
    """Block for the first item, then take what is queued, waiting until first arrival + max_delay for more.

    With several sessions and no delay, take only a fair share of what is queued once the first item arrives (at
    least one), so that the next session to come free gets the rest instead of one session taking a long batch
    while another idles (shorter batches, a shorter tail). With a delay the batch is meant to grow: no share.
    Cancelled while collecting (shutdown), the items taken go back to the queue, or fail if it is full."""
    first = await queue.get()
    if sessions > 1 and max_delay_s <= 0:
        max_size = max(1, min(max_size, -(-(queue.qsize() + 1) // sessions)))
    batch = [first]
    until = first.enqueued + max_delay_s
    try:
        while len(batch) < max_size:
            try:
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = until - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
    except asyncio.CancelledError:
        _give_back(queue, batch)
        raise
    return batch


def _give_back(queue: asyncio.Queue[Pending], batch: list[Pending]) -> None:
    for p in batch:
        try:
            queue.put_nowait(p)
        except asyncio.QueueFull:
            if not p.future.done():
                p.future.set_exception(NotReady("the service is shutting down; retry", headers={"Retry-After": "1"}))


def padded_size(n: int, sizes: list[int] | None) -> int:
    """The smallest allowed size >= n (sizes ascending), or n when padding is off."""
    if not sizes:
        return n
    return next((s for s in sizes if s >= n), n)


def power_of_two_sizes(max_batch_size: int) -> list[int]:
    sizes, s = [], 1
    while s < max_batch_size:
        sizes.append(s)
        s *= 2
    return sizes + [max_batch_size]


class Batcher:
    """Queue, collect, run. With several runs (one onnxruntime session each), batches run side by side, each
    session one batch at a time; a batch is collected only once a session is free, so batches grow under load.

    An optional solo run (a session with every core's thread) takes a batch of at most solo_max_batch patches when
    every other session is idle, and holds them all while it runs: a lone request gets the latency of all cores,
    while under load single-threaded sessions side by side give the throughput."""

    def __init__(
        self,
        run: RunBatch | list[RunBatch],
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue: int,
        pad_sizes: list[int] | None = None,
        metrics: Metrics | None = None,
        retry_after_s: int = 1,
        solo: RunBatch | None = None,
        solo_max_batch: int = 1,
        pin_cpus: Sequence[int] = (),
    ) -> None:
        runs = run if isinstance(run, list) else [run]
        self._workers = [Worker(each, pin_cpus[i] if i < len(pin_cpus) else None) for i, each in enumerate(runs)]
        self._solo = Worker(solo) if solo else None
        self.solo_max_batch = solo_max_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.pad_sizes = pad_sizes
        self.metrics = metrics
        self.retry_after_s = retry_after_s
        self.max_queue = max_queue
        self._queue: asyncio.Queue[Pending] = asyncio.Queue(maxsize=max_queue)
        self._idle: asyncio.Queue[Worker] = asyncio.Queue()
        self._running: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        for worker in self._workers:
            self._idle.put_nowait(worker)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while not self._queue.empty():  # nobody will run these any more: answer them now
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(
                    NotReady("the service is shutting down; retry", headers={"Retry-After": "1"})
                )
        for worker in [*self._workers, *([self._solo] if self._solo else [])]:
            worker.thread.shutdown(wait=True)

    def _reject(self, reason: str, submission: Submission | None) -> None:
        if self.metrics:
            refusals.count(self.metrics.rejections, reason, submission)
        elif submission is not None:
            submission.refused = True

    def _queue_full(self, submission: Submission | None) -> Overloaded:
        self._reject("queue_full", submission)
        return Overloaded(
            f"the model's queue is full ({self._queue.maxsize} waiting); retry later",
            headers={"Retry-After": str(self.retry_after_s)},
        )

    async def submit(self, patch: np.ndarray, deadline: float, submission: Submission | None = None) -> Prediction:
        """Queue one preprocessed patch and wait for its row of outputs (503 when full, 504 past deadline)."""
        future: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        submission = submission or refusals.current() or Submission()
        pending = Pending(patch, deadline, future, submission=submission)
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            if not self._drop_withdrawn():
                raise self._queue_full(submission) from None
            self._queue.put_nowait(pending)
        if self.metrics:
            self.metrics.queue_depth.set(self._queue.qsize())
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(deadline - time.perf_counter(), 0.0))
        except TimeoutError:
            if pending.running:  # already on the model: its answer is moments away, and the work is done
                try:
                    return await asyncio.wait_for(asyncio.shield(future), RUNNING_GRACE_S)
                except TimeoutError:  # a run that hangs: the request is not held past the grace
                    future.cancel()
                    self._reject("deadline", submission)
                    raise DeadlineExceeded("the model did not answer within its deadline") from None
            if future.done() and not future.cancelled():  # the batcher settled it first (and counted it)
                return future.result()
            future.cancel()  # never reaches the model
            self._reject("deadline", submission)
            raise DeadlineExceeded("the request's deadline passed before the model answered") from None
        except asyncio.CancelledError:  # the client left, or a sibling patch was refused: withdrawn
            future.cancel()
            raise

    async def _loop(self) -> None:
        while True:
            worker = await self._idle.get()
            batch = await collect_batch(self._queue, self.max_batch_size, self.max_delay_s, len(self._workers))
            if self.metrics:
                self.metrics.queue_depth.set(self._queue.qsize())
            live = self._live(batch)
            if not live:
                self._idle.put_nowait(worker)
                continue
            held = [worker]
            if self._solo is not None and self._solo_fits(live):
                held += [self._idle.get_nowait() for _ in range(self._idle.qsize())]
                worker = self._solo
            task = asyncio.get_running_loop().create_task(self._execute(worker, live, held))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _solo_fits(self, live: list[Pending]) -> bool:
        """The batch is small, nothing else waits, and every session is free except the one the loop holds."""
        return len(live) <= self.solo_max_batch and self._queue.empty() and self._idle.qsize() == len(self._workers) - 1

    async def _execute(self, worker: Worker, live: list[Pending], held: list[Worker]) -> None:
        """One onnxruntime call for the batch in a worker thread; every request gets its row or the error (whatever
        fails: the model, stacking, the outputs). The sessions held (the one running, or all of them while the
        solo session runs) are freed at the end."""
        try:
            started = time.perf_counter()
            inputs = self._stack(live)
            outputs = await asyncio.get_running_loop().run_in_executor(worker.thread, worker.run, inputs)
            elapsed = time.perf_counter() - started
            if self.metrics:
                self.metrics.inference_seconds.observe(elapsed)
                self.metrics.batch_size.observe(len(live))
            for i, p in enumerate(live):
                if not p.future.done():
                    queued = started - p.enqueued
                    p.future.set_result(Prediction([o[i] for o in outputs], queued, elapsed, len(live)))
                    if self.metrics:
                        self.metrics.queue_seconds.observe(queued)
        except Exception as exc:  # noqa: BLE001 - handed to every request still waiting
            for p in live:
                if not p.future.done():
                    p.future.set_exception(exc)
        finally:
            for each in held:
                self._idle.put_nowait(each)

    def _live(self, batch: list[Pending]) -> list[Pending]:
        """Drop patches withdrawn (future cancelled: the client left, which the HTTP layer counts, or a sibling
        patch was refused) or past their deadline."""
        now, live = time.perf_counter(), []
        for p in batch:
            if p.future.done():
                continue
            if now >= p.deadline:
                self._reject("deadline", p.submission)
                p.future.set_exception(DeadlineExceeded("the request's deadline passed while it was queued"))
            else:
                p.running = True
                live.append(p)
        return live

    def _stack(self, live: list[Pending]) -> np.ndarray:
        size = padded_size(len(live), self.pad_sizes)
        first = live[0].patch
        out = np.zeros((size, 1) + first.shape, dtype=np.float32)
        for i, p in enumerate(live):
            out[i, 0] = p.patch
        return out

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def refuse_if_full(self) -> None:
        """503 at once, before a request's body is even read, while the queue is full (counted as queue_full)."""
        if self._queue.full() and not self._drop_withdrawn():
            raise self._queue_full(None)

    def _drop_withdrawn(self) -> bool:
        """Take the withdrawn patches (future done: the client left, a sibling patch was refused, the deadline
        passed) out of the full queue, in order otherwise; True when that made room. Nobody waits for them."""
        queued = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        for p in queued:
            if not p.future.done():
                self._queue.put_nowait(p)
        if self.metrics:
            self.metrics.queue_depth.set(self._queue.qsize())
        return not self._queue.full()


async def submit_all(
    batcher: Batcher, cubes: list[np.ndarray], deadline: float, share_limit: bool = True
) -> list[Prediction]:
    """Several patches of one request to the batcher at once (they may share a batch), answers in order. With
    share_limit, one request may take at most half the queue, so that it cannot shut out every other; if one patch
    is refused (queue full, deadline), the others are withdrawn and the request fails as a whole."""
    if share_limit and len(cubes) > max(batcher.max_queue // 2, 1):
        raise PayloadTooLarge(
            f"the request needs {len(cubes)} model runs; at most {max(batcher.max_queue // 2, 1)} are taken from "
            "one request (fewer nodules, or no uncertainty views)"
        )
    if len(cubes) == 1:
        return [await batcher.submit(cubes[0], deadline)]
    submission = refusals.current() or Submission()
    tasks = [asyncio.ensure_future(batcher.submit(cube, deadline, submission)) for cube in cubes]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)  # withdrawn before the refusal is answered: a retry finds their places free
        raise
