"""The batcher with a fake model: batching, delay bound, bounded queue, deadlines, client departure."""

import asyncio
import os
import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.batching import (
    Batcher,
    Pending,
    RunBatch,
    collect_batch,
    padded_size,
    power_of_two_sizes,
    submit_all,
)
from service.errors import DeadlineExceeded, NotReady, Overloaded, PayloadTooLarge
from service.metrics import Metrics


class FakeModel:
    """Echoes each patch's first voxel; records every batch it was given."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.batches: list[int] = []
        self.seen: list[float] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        self.release.wait()
        time.sleep(self.seconds)
        self.batches.append(len(batch))
        self.seen.extend(float(v) for v in batch[:, 0, 0, 0, 0])
        return [batch[:, 0, 0, 0, :1] * 2]


def patch(value: float) -> np.ndarray:
    return np.full((2, 2, 2), value, dtype=np.float32)


def far() -> float:
    return time.perf_counter() + 30


async def test_collect_batch_takes_everything_queued_up_to_the_limit():
    queue: asyncio.Queue[Pending] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for i in range(5):
        queue.put_nowait(Pending(patch(i), far(), loop.create_future()))
    batch = await collect_batch(queue, max_size=3, max_delay_s=0.0)
    assert [p.patch[0, 0, 0] for p in batch] == [0, 1, 2]
    assert queue.qsize() == 2


async def test_collect_batch_takes_a_fair_share_when_several_sessions_serve_the_queue():
    queue: asyncio.Queue[Pending] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for i in range(5):
        queue.put_nowait(Pending(patch(i), far(), loop.create_future()))
    assert len(await collect_batch(queue, max_size=16, max_delay_s=0.0, sessions=2)) == 3  # of 5
    assert len(await collect_batch(queue, max_size=16, max_delay_s=0.0, sessions=2)) == 1  # of 2
    assert len(await collect_batch(queue, max_size=16, max_delay_s=0.0, sessions=2)) == 1  # the last one
    for i in range(40):
        queue.put_nowait(Pending(patch(i), far(), loop.create_future()))
    assert len(await collect_batch(queue, max_size=16, max_delay_s=0.0, sessions=2)) == 16  # capped


async def test_with_a_delay_several_sessions_still_wait_for_company():
    queue: asyncio.Queue[Pending] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    queue.put_nowait(Pending(patch(0), far(), loop.create_future()))
    loop.call_later(0.005, queue.put_nowait, Pending(patch(1), far(), loop.create_future()))
    batch = await collect_batch(queue, max_size=8, max_delay_s=0.05, sessions=2)
    assert len(batch) == 2


async def test_cancelled_while_collecting_the_items_go_back_to_the_queue():
    queue: asyncio.Queue[Pending] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    queue.put_nowait(Pending(patch(0), far(), loop.create_future()))
    task = asyncio.ensure_future(collect_batch(queue, max_size=8, max_delay_s=5.0))
    await asyncio.sleep(0.01)  # it holds the first item and waits for company
    assert queue.qsize() == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert queue.qsize() == 1


async def test_collect_batch_waits_for_company_no_longer_than_the_delay():
    queue: asyncio.Queue[Pending] = asyncio.Queue()
    queue.put_nowait(Pending(patch(0), far(), asyncio.get_running_loop().create_future()))
    started = time.perf_counter()
    batch = await collect_batch(queue, max_size=8, max_delay_s=0.05)
    waited = time.perf_counter() - started
    assert len(batch) == 1
    assert 0.03 <= waited < 0.5


def test_padding_sizes():
    assert power_of_two_sizes(16) == [1, 2, 4, 8, 16]
    assert power_of_two_sizes(12) == [1, 2, 4, 8, 12]
    assert padded_size(3, [1, 2, 4, 8]) == 4
    assert padded_size(3, None) == 3


async def test_concurrent_requests_form_batches_and_each_gets_its_own_row():
    model = FakeModel(seconds=0.02)
    metrics = Metrics(CollectorRegistry())
    batcher = Batcher(model, max_batch_size=8, max_delay_s=0.005, max_queue=64, metrics=metrics)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(patch(i), far()) for i in range(32)))
    finally:
        await batcher.stop()
    assert [float(r.outputs[0][0]) for r in results] == [2.0 * i for i in range(32)]
    assert max(model.batches) > 1 and sum(model.batches) == 32
    assert metrics.registry.get_sample_value("resmtnet_batch_size_count") == len(model.batches)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
async def test_each_session_runs_on_the_cpu_it_is_pinned_to():
    mask = sorted(os.sched_getaffinity(0))
    cpus = [mask[0], mask[-1]]
    seen: list[set[int]] = [set(), set()]

    def run_on(i: int):
        def run(batch: np.ndarray) -> list[np.ndarray]:
            seen[i] |= os.sched_getaffinity(0)  # the calling thread's own mask, on Linux
            time.sleep(0.01)  # long enough for the other session to take the next batch
            return [batch.reshape(len(batch), -1)[:, :1]]

        return run

    batcher = Batcher([run_on(0), run_on(1)], max_batch_size=1, max_delay_s=0, max_queue=64, pin_cpus=cpus)
    batcher.start()
    try:
        await asyncio.gather(*(batcher.submit(patch(i), far()) for i in range(8)))
    finally:
        await batcher.stop()
    assert seen == [{cpus[0]}, {cpus[1]}]
    assert os.sched_getaffinity(0) == set(mask)  # the event loop's thread is not pinned


async def test_full_queue_is_refused_at_once_with_retry_after():
    model = FakeModel()
    model.release.clear()  # the model is stuck: nothing leaves the queue
    metrics = Metrics(CollectorRegistry())
    batcher = Batcher(model, max_batch_size=1, max_delay_s=0, max_queue=2, metrics=metrics, retry_after_s=3)
    batcher.start()
    try:
        waiting = [asyncio.create_task(batcher.submit(patch(0), far()))]
        await asyncio.sleep(0.02)  # the first is running (stuck)
        waiting += [asyncio.create_task(batcher.submit(patch(i), far())) for i in (1, 2)]
        await asyncio.sleep(0.02)  # two are queued: the queue is full
        assert batcher.depth == 2
        started = time.perf_counter()
        with pytest.raises(Overloaded) as info:
            await batcher.submit(patch(9), far())
        assert time.perf_counter() - started < 0.05
        assert info.value.headers["Retry-After"] == "3"
        assert metrics.registry.get_sample_value("resmtnet_rejections_total", {"reason": "queue_full"}) == 1
    finally:
        model.release.set()
        await asyncio.gather(*waiting)
        await batcher.stop()


async def test_request_past_its_deadline_gets_504_and_never_reaches_the_model():
    model = FakeModel(seconds=0.2)
    metrics = Metrics(CollectorRegistry())
    batcher = Batcher(model, max_batch_size=1, max_delay_s=0, max_queue=8, metrics=metrics)
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit(patch(1), far()))
        await asyncio.sleep(0.01)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(patch(7), time.perf_counter() + 0.05)
        await first
        await asyncio.sleep(0.01)
    finally:
        await batcher.stop()
    assert 7.0 not in model.seen
    assert metrics.registry.get_sample_value("resmtnet_rejections_total", {"reason": "deadline"}) == 1


async def test_a_patch_already_on_the_model_when_its_deadline_passes_gets_its_answer_not_504():
    """Its work is done or nearly: a 504 would waste it, and the README says a 504 never reached the model."""
    model = FakeModel(seconds=0.2)
    metrics = Metrics(CollectorRegistry())
    batcher = Batcher(model, max_batch_size=1, max_delay_s=0, max_queue=8, metrics=metrics)
    batcher.start()
    try:
        answer = await batcher.submit(patch(3), time.perf_counter() + 0.05)  # on the model at once, for 0.2 s
    finally:
        await batcher.stop()
    assert float(answer.outputs[0][0]) == 6.0 and model.seen == [3.0]
    assert metrics.registry.get_sample_value("resmtnet_rejections_total", {"reason": "deadline"}) is None


async def test_a_cancelled_request_is_dropped_before_the_model():
    model = FakeModel(seconds=0.1)
    batcher = Batcher(model, max_batch_size=1, max_delay_s=0, max_queue=8, metrics=Metrics(CollectorRegistry()))
    batcher.start()
    try:
        first = asyncio.create_task(batcher.submit(patch(1), far()))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(batcher.submit(patch(5), far()))
        await asyncio.sleep(0.01)
        gone.cancel()  # what happens to a handler whose client disconnected
        await first
        await asyncio.sleep(0.05)
    finally:
        await batcher.stop()
    assert 5.0 not in model.seen


async def test_a_model_error_reaches_every_request_of_the_batch():
    def broken(_: np.ndarray) -> list[np.ndarray]:
        raise RuntimeError("boom")

    batcher = Batcher(broken, max_batch_size=4, max_delay_s=0.01, max_queue=8)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(patch(i), far()) for i in range(3)), return_exceptions=True)
    finally:
        await batcher.stop()
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_several_sessions_run_batches_side_by_side():
    active, peak = 0, 0
    lock = threading.Lock()

    def run(batch: np.ndarray) -> list[np.ndarray]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return [batch[:, 0, 0, 0, :1]]

    batcher = Batcher([run, run], max_batch_size=2, max_delay_s=0, max_queue=64)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit(patch(i), far()) for i in range(8)))
    finally:
        await batcher.stop()
    assert [float(r.outputs[0][0]) for r in results] == list(range(8))
    assert peak == 2


class Sessions:
    """Shared sessions and a solo one over a common record: which ran each batch, and how many ran at once."""

    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.active: list[str] = []
        self.overlaps_with_solo = 0
        self.peak_shared = 0
        self.ran: list[tuple[str, int]] = []

    def session(self, name: str):
        def run(batch: np.ndarray) -> list[np.ndarray]:
            with self.lock:
                if self.active and (name == "solo" or "solo" in self.active):
                    self.overlaps_with_solo += 1
                self.active.append(name)
                self.peak_shared = max(self.peak_shared, sum(a != "solo" for a in self.active))
                self.ran.append((name, len(batch)))
            time.sleep(self.seconds)
            with self.lock:
                self.active.remove(name)
            return [batch[:, 0, 0, 0, :1]]

        return run

    def batcher(self, solo: RunBatch | None = None, max_batch_size: int = 8, max_queue: int = 64) -> Batcher:
        """Two shared sessions, 'a' and 'b', beside a solo one (by default the recorded 'solo'), no delay."""
        return Batcher(
            [self.session("a"), self.session("b")],
            max_batch_size=max_batch_size,
            max_delay_s=0,
            max_queue=max_queue,
            solo=solo or self.session("solo"),
        )


async def test_a_lone_request_runs_on_the_solo_session():
    s = Sessions()
    batcher = s.batcher()
    batcher.start()
    try:
        for i in range(5):  # one client, one request at a time
            result = await batcher.submit(patch(i), far())
            assert float(result.outputs[0][0]) == i
    finally:
        await batcher.stop()
    assert s.ran == [("solo", 1)] * 5


async def test_requests_arriving_together_run_side_by_side_not_one_after_another_on_the_solo_session():
    s = Sessions()
    batcher = s.batcher()
    batcher.start()
    try:
        await asyncio.gather(*(batcher.submit(patch(i), far()) for i in range(2)))
    finally:
        await batcher.stop()
    assert sorted(s.ran) == [("a", 1), ("b", 1)]


async def test_a_failing_solo_run_fails_its_request_and_frees_every_session():
    s = Sessions()

    def broken(batch: np.ndarray) -> list[np.ndarray]:
        raise RuntimeError("solo session broke")

    batcher = s.batcher(solo=broken)
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="solo session broke"):
            await batcher.submit(patch(0), far())
        results = await asyncio.gather(*(batcher.submit(patch(i), far()) for i in range(2)))  # both shared ones
    finally:
        await batcher.stop()
    assert [float(r.outputs[0][0]) for r in results] == [0, 1]
    assert sorted(s.ran) == [("a", 1), ("b", 1)]


async def test_under_load_shared_sessions_run_side_by_side_and_never_beside_the_solo_one():
    s = Sessions(seconds=0.01)
    batcher = s.batcher(max_batch_size=4, max_queue=256)
    rng = np.random.default_rng(0)
    pauses = rng.exponential(0.01, size=(6, 10))  # six clients, ten requests each, lulls and bursts
    answers: dict[int, float] = {}

    async def client(c: int) -> None:
        for k in range(10):
            await asyncio.sleep(float(pauses[c, k]))
            value = 10 * c + k
            answers[value] = float((await batcher.submit(patch(value), far())).outputs[0][0])

    batcher.start()
    try:
        await asyncio.gather(*(client(c) for c in range(6)))
    finally:
        await batcher.stop()
    assert answers == {v: float(v) for v in range(60)}
    names = [name for name, _ in s.ran]
    assert "solo" in names and {"a", "b"} & set(names)
    assert s.peak_shared == 2
    assert s.overlaps_with_solo == 0
    assert all(size == 1 for name, size in s.ran if name == "solo")


async def test_a_batch_larger_than_the_solo_limit_goes_to_a_shared_session_even_when_all_are_idle():
    s = Sessions()
    batcher = Batcher(
        [s.session("a")], max_batch_size=8, max_delay_s=0.05, max_queue=64, solo=s.session("solo"), solo_max_batch=1
    )
    batcher.start()
    try:
        await asyncio.gather(*(batcher.submit(patch(i), far()) for i in range(3)))
    finally:
        await batcher.stop()
    assert s.ran == [("a", 3)]


async def test_stopping_answers_what_is_still_queued():
    model = FakeModel()
    model.release.clear()
    batcher = Batcher(model, max_batch_size=1, max_delay_s=0, max_queue=8)
    batcher.start()
    running = asyncio.create_task(batcher.submit(patch(0), far()))
    await asyncio.sleep(0.02)
    queued = asyncio.create_task(batcher.submit(patch(1), far()))
    await asyncio.sleep(0.02)
    model.release.set()
    await batcher.stop()
    assert float((await running).outputs[0][0]) == 0.0
    with pytest.raises(NotReady):
        await queued


async def test_submit_all_refuses_a_request_that_would_take_over_half_the_queue():
    batcher = Batcher(FakeModel(), max_batch_size=4, max_delay_s=0, max_queue=8)
    batcher.start()
    try:
        answers = await submit_all(batcher, [patch(i) for i in range(4)], far())
        assert [float(a.outputs[0][0]) for a in answers] == [0, 2, 4, 6]  # in order
        with pytest.raises(PayloadTooLarge, match="at most 4"):
            await submit_all(batcher, [patch(i) for i in range(5)], far())
    finally:
        await batcher.stop()


async def test_submit_all_withdraws_the_rest_when_one_patch_is_refused():
    model = FakeModel()
    model.release.clear()  # stuck: the queue fills
    metrics = Metrics(CollectorRegistry())
    batcher = Batcher(model, max_batch_size=1, max_delay_s=0, max_queue=6, metrics=metrics)
    batcher.start()
    try:
        blocker = asyncio.create_task(batcher.submit(patch(-1), far()))
        await asyncio.sleep(0.02)  # running (stuck)
        others = [asyncio.create_task(batcher.submit(patch(-2), far())) for _ in range(4)]
        await asyncio.sleep(0.02)  # four queued: room for two more
        with pytest.raises(Overloaded):
            await submit_all(batcher, [patch(i) for i in range(3)], far())  # the third finds the queue full
        await asyncio.sleep(0.01)  # the withdrawn siblings' tasks end
        assert batcher.depth == 6  # the two withdrawn siblings are still queued...
        batcher.refuse_if_full()  # ...but do not count as a full queue: nothing refused
        later = [asyncio.create_task(batcher.submit(patch(7), far())) for _ in range(2)]  # they make room
        await asyncio.sleep(0.02)
        assert batcher.depth == 6
        model.release.set()
        await asyncio.gather(blocker, *others, *later)
        await asyncio.sleep(0.05)
        assert sorted(model.seen) == [-2, -2, -2, -2, -1, 7, 7]  # the two accepted siblings never ran
        assert metrics.registry.get_sample_value("resmtnet_rejections_total", {"reason": "queue_full"}) == 1
    finally:
        model.release.set()
        await batcher.stop()


async def test_whatever_fails_in_a_batch_reaches_its_requests_instead_of_leaving_them_waiting():
    model = FakeModel()
    batcher = Batcher(model, max_batch_size=4, max_delay_s=0.05, max_queue=8, metrics=Metrics(CollectorRegistry()))
    batcher.start()
    try:  # two shapes in one batch: stacking them fails before the model is called
        odd = np.zeros((3, 3, 3), dtype=np.float32)
        answers = await asyncio.wait_for(
            asyncio.gather(batcher.submit(patch(1), far()), batcher.submit(odd, far()), return_exceptions=True), 2
        )
    finally:
        await batcher.stop()
    assert all(isinstance(a, ValueError) for a in answers), answers


async def test_a_run_that_hangs_past_the_grace_still_gets_its_504(monkeypatch):
    from service import batching

    monkeypatch.setattr(batching, "RUNNING_GRACE_S", 0.2)
    model = FakeModel()
    model.release.clear()  # the model never returns until released
    metrics = Metrics(CollectorRegistry())
    batcher = Batcher(model, max_batch_size=1, max_delay_s=0, max_queue=8, metrics=metrics)
    batcher.start()
    started = time.perf_counter()
    try:
        with pytest.raises(DeadlineExceeded, match="did not answer within its deadline"):
            await batcher.submit(patch(2), time.perf_counter() + 0.1)
        waited = time.perf_counter() - started
    finally:
        model.release.set()
        await batcher.stop()
    assert 0.25 < waited < 1.0
    assert metrics.registry.get_sample_value("resmtnet_rejections_total", {"reason": "deadline"}) == 1
