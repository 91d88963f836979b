"""What the app holds while it runs: the verified model session, the batcher and the readiness verdict."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from service.batching import Batcher, power_of_two_sizes
from service.config import Settings
from service.metrics import Metrics
from service.runtime.session import CUDA, ModelSession, SessionError, open_session, warm_up
from service.runtime.store import ModelStoreError, resolve

log = logging.getLogger("resmtnet")


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

    def _load(self) -> tuple[ModelSession, list[int] | None, list[int]]:
        s = self.settings
        entry = resolve(s.model_store, s.model_name, s.model_version)
        model = open_session(entry, s.provider, s.intra_op_threads, s.intra_op_spinning)
        pad = s.pad_batches == "yes" or (s.pad_batches == "auto" and model.provider == CUDA)
        pad_sizes = power_of_two_sizes(s.max_batch_size) if pad else None
        warm_sizes = pad_sizes or list(range(1, s.max_batch_size + 1))
        if model.provider == CUDA or s.provider != "cuda":
            warm_up(model, warm_sizes)
        return model, pad_sizes, warm_sizes

    async def start(self) -> None:
        """Load, verify and warm the model off the event loop; then start the batcher if all is well."""
        s = self.settings
        try:
            model, pad_sizes, _ = await asyncio.get_running_loop().run_in_executor(self.preprocess_pool, self._load)
        except (ModelStoreError, SessionError) as exc:
            self.reason = f"model not loaded: {exc}"
            log.error(self.reason)
            return
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for corrupt files
            self.reason = f"model not loaded: {type(exc).__name__}: {str(exc)[:300]}"
            log.error(self.reason)
            return
        self.model = model
        m = model.manifest
        self.metrics.model_info.labels(name=m.name, version=m.version, provider=model.provider).set(1)
        if s.provider == "cuda" and model.provider != CUDA:
            self.reason = model.provider_note
            log.error(self.reason)
            return
        self.batcher = Batcher(
            model.run,
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
        log.info("serving %s %s on %s", m.name, m.version, model.provider)

    async def stop(self) -> None:
        self.ready = False
        self.metrics.ready.set(0)
        if self.batcher:
            await self.batcher.stop()
        self.preprocess_pool.shutdown(wait=False, cancel_futures=True)
