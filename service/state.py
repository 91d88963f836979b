"""What the app holds while it runs: the verified model session, the batcher and the readiness verdict."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from service.batching import Batcher, power_of_two_sizes
from service.config import Settings
from service.metrics import Metrics
from service.runtime.cpus import available_cpus
from service.runtime.session import CUDA, ModelSession, SessionError, expected_provider, open_session, warm_up
from service.runtime.store import ModelStoreError, resolve

log = logging.getLogger("resmtnet")


def worker_plan(settings: Settings, provider: str) -> tuple[int, int]:
    """(sessions, intra-op threads each). On CPU, by default one session per 4 cores, sharing the cores out: on 2 cores
    one 2-thread session (lowest latency: +3 ms over in-process at 1 client; 2 one-thread sessions give 18% more
    throughput at 16 clients but +8 ms at 1 client, bench/README). On CUDA, one session. Cores are those this
    process may use: its affinity mask capped by any cgroup CPU quota (a container's CPU limit)."""
    cores = available_cpus()
    if provider == CUDA:
        return settings.workers or 1, settings.intra_op_threads
    workers = settings.workers or max(cores // 4, 1)
    return workers, settings.intra_op_threads or max(cores // workers, 1)


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    model: ModelSession | None = None
    batcher: Batcher | None = None
    ready: bool = False
    reason: str = "starting"
    preprocess_pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.preprocess_pool = ThreadPoolExecutor(self.settings.preprocess_threads, thread_name_prefix="preprocess")

    def _load(self) -> tuple[list[ModelSession], list[int] | None]:
        """Verified sessions (one per worker), each warmed at every batch size the batcher can form."""
        s = self.settings
        entry = resolve(s.model_store, s.model_name, s.model_version)
        workers, threads = worker_plan(s, expected_provider(s.provider))
        models = [open_session(entry, s.provider, threads, s.intra_op_spinning) for _ in range(workers)]
        first = models[0]
        pad = s.pad_batches == "yes" or (s.pad_batches == "auto" and first.provider == CUDA)
        pad_sizes = power_of_two_sizes(s.max_batch_size) if pad else None
        if first.provider == CUDA or s.provider != "cuda":
            for model in models:
                warm_up(model, pad_sizes or list(range(1, s.max_batch_size + 1)))
        return models, pad_sizes

    async def start(self) -> None:
        """Load, verify and warm the model off the event loop; then start the batcher if all is well."""
        s = self.settings
        try:
            models, pad_sizes = await asyncio.get_running_loop().run_in_executor(self.preprocess_pool, self._load)
        except (ModelStoreError, SessionError) as exc:
            self.reason = f"model not loaded: {exc}"
            log.error(self.reason)
            return
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for corrupt files
            self.reason = f"model not loaded: {type(exc).__name__}: {str(exc)[:300]}"
            log.error(self.reason)
            return
        self.model = model = models[0]
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
        )
        self.batcher.start()
        self.ready = True
        self.reason = model.provider_note or "ready"
        self.metrics.ready.set(1)
        _, threads = worker_plan(s, model.provider)
        log.info(
            "serving %s %s on %s with %d session(s) of %s intra-op thread(s); %d CPU(s) available",
            m.name,
            m.version,
            model.provider,
            len(models),
            threads or "onnxruntime's default",
            available_cpus(),
        )

    async def stop(self) -> None:
        self.ready = False
        self.metrics.ready.set(0)
        if self.batcher:
            await self.batcher.stop()
        self.preprocess_pool.shutdown(wait=False, cancel_futures=True)
