"""What the app holds while it runs: the verified model session, the batcher and the readiness verdict."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from service.batching import Batcher, padded_size, power_of_two_sizes
from service.clinical.report import clinical_gaps
from service.config import Settings
from service.metrics import Metrics
from service.runtime.cpus import affinity_mask, available_cpus
from service.runtime.session import CUDA, ModelSession, SessionError, expected_provider, open_session, warm_up
from service.runtime.store import ModelStoreError, resolve
from service.server import Drain

log = logging.getLogger("resmtnet")
SOLO_MAX_BATCH = 1  # the solo session takes batches of one: a lone request


@dataclass(frozen=True)
class WorkerPlan:
    """The onnxruntime sessions to open: one side by side per entry of `threads`, each with that many intra-op
    threads (0: onnxruntime's own choice), and a solo session with `solo_threads` for lone requests (0: none)."""

    threads: tuple[int, ...]
    solo_threads: int = 0
    cpus: tuple[int, ...] = ()  # the CPU each side-by-side session's thread is pinned to (empty: none is)

    @property
    def sessions(self) -> int:
        return len(self.threads)


def worker_plan(settings: Settings, provider: str) -> WorkerPlan:
    """On CPU, by default one session per 4 cores but at least two, every core given to one of them, plus a solo
    session with every core for a request that comes alone. On 2 cores: two 1-thread sessions (10% more throughput
    at 16 clients than one 2-thread session) and a 2-thread solo session (a lone request as fast as on one 2-thread
    session, where a 1-thread session would add about 5 ms; bench/README). On CUDA, one session. Cores are those this
    process may use: its affinity mask capped by any cgroup CPU quota (a container's CPU limit)."""
    if provider == CUDA:
        return WorkerPlan((settings.intra_op_threads,) * (settings.workers or 1))
    cores = available_cpus()
    sessions = settings.workers or (max(cores // 4, 2) if cores >= 2 else 1)
    if settings.intra_op_threads:
        threads = (settings.intra_op_threads,) * sessions
    else:  # the cores shared out, the remainder one more thread each for the first sessions
        threads = tuple(max(cores // sessions + (i < cores % sessions), 1) for i in range(sessions))
    solo = cores if settings.solo_session and sessions > 1 and cores > max(threads) else 0
    return WorkerPlan(threads, solo, pinned_cpus(threads, cores) if settings.pin_sessions else ())


def pinned_cpus(threads: tuple[int, ...], cores: int) -> tuple[int, ...]:
    """A CPU of its own for each session, when every session has one thread (its caller, the batcher's worker) and
    the process's cores are its own: its affinity mask holds exactly the cores it counts on (no container CPU limit
    narrower than the mask, which would share the mask's CPUs with other containers). On 2 cores the two sessions
    then stop trading places with each other and the event loop: 2 to 4% more throughput at 16 clients (README)."""
    mask = affinity_mask()
    if len(threads) < 2 or any(t != 1 for t in threads) or len(mask) != cores or len(threads) > cores:
        return ()
    return tuple(mask[: len(threads)])


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    model: ModelSession | None = None
    batcher: Batcher | None = None
    ready: bool = False
    reason: str = "starting"
    plan: WorkerPlan | None = None  # the sessions opened, once loaded
    drain: Drain = field(default_factory=Drain)  # when shutdown began (set by the server on SIGTERM)
    preprocess_pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.preprocess_pool = ThreadPoolExecutor(self.settings.preprocess_threads, thread_name_prefix="preprocess")

    def _load(self) -> tuple[WorkerPlan, list[ModelSession], ModelSession | None, list[int] | None]:
        """Verified sessions (one per worker, and the solo one if planned), each warmed at every batch size the
        batcher can give it."""
        s = self.settings
        entry = resolve(s.model_store, s.model_name, s.model_version)
        plan = worker_plan(s, expected_provider(s.provider))
        models = [open_session(entry, s.provider, threads, s.intra_op_spinning) for threads in plan.threads]
        solo = open_session(entry, s.provider, plan.solo_threads, s.intra_op_spinning) if plan.solo_threads else None
        first = models[0]
        pad = s.pad_batches == "yes" or (s.pad_batches == "auto" and first.provider == CUDA)
        pad_sizes = power_of_two_sizes(s.max_batch_size) if pad else None
        if first.provider == CUDA or s.provider != "cuda":
            for model in models:
                warm_up(model, pad_sizes or list(range(1, s.max_batch_size + 1)))
            if solo is not None:
                warm_up(solo, [padded_size(n, pad_sizes) for n in range(1, SOLO_MAX_BATCH + 1)])
        return plan, models, solo, pad_sizes

    async def start(self) -> None:
        """Load, verify and warm the model off the event loop; then start the batcher if all is well."""
        s = self.settings
        try:
            plan, models, solo, pad_sizes = await asyncio.get_running_loop().run_in_executor(
                self.preprocess_pool, self._load
            )
        except (ModelStoreError, SessionError) as exc:
            self.reason = f"model not loaded: {exc}"
            log.error(self.reason)
            return
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for corrupt files
            self.reason = f"model not loaded: {type(exc).__name__}: {str(exc)[:300]}"
            log.error(self.reason)
            return
        self.model, self.plan = models[0], plan
        model = self.model
        m = model.manifest
        self.metrics.model_info.labels(name=m.name, version=m.version, provider=model.provider).set(1)
        if s.provider == "cuda" and model.provider != CUDA:
            self.reason = model.provider_note
            log.error(self.reason)
            return
        self.batcher = Batcher(
            [each.run for each in models],
            max_batch_size=s.max_batch_size,
            max_delay_s=s.max_delay_ms / 1000.0,
            max_queue=s.max_queue,
            pad_sizes=pad_sizes,
            metrics=self.metrics,
            retry_after_s=s.retry_after_s,
            solo=solo.run if solo else None,
            solo_max_batch=SOLO_MAX_BATCH,
            pin_cpus=plan.cpus,
        )
        self.batcher.start()
        self.ready = True
        self.reason = model.provider_note or "ready"
        self.metrics.ready.set(1)
        log.info(
            "serving %s %s on %s with %d session(s) of %s intra-op thread(s)%s%s; %d CPU(s) available",
            m.name,
            m.version,
            model.provider,
            len(models),
            "/".join(str(t) for t in plan.threads) if any(plan.threads) else "onnxruntime's default",
            f" and a {plan.solo_threads}-thread solo session" if solo else "",
            f", pinned to CPUs {', '.join(map(str, plan.cpus))}" if plan.cpus else "",
            available_cpus(),
        )
        for gap in clinical_gaps(m):
            log.warning("%s %s: %s", m.name, m.version, gap)

    async def stop(self) -> None:
        self.ready = False
        self.metrics.ready.set(0)
        if self.batcher:
            await self.batcher.stop()
        self.preprocess_pool.shutdown(wait=False, cancel_futures=True)
