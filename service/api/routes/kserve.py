"""The Open Inference Protocol (KServe v2) over HTTP/REST, beside our own API, for clients written for Triton or KServe.

The input tensor is the preprocessed patch exactly as the model takes it (the manifest's grid and HU window, scaled
to [0, 1]); clients resample and window themselves. Each row of a batch goes to the same batcher as /predict (same
queue bound, deadlines and metrics); the outputs are the model's tensors in manifest order. Errors are
`{"error": "..."}` (service/api/v2_errors.py).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from service import refusals
from service.api.deps import get_state
from service.api.disconnect import in_thread_to_the_end, while_connected
from service.api.headers import one_header
from service.api.routes.health import DRAINING
from service.api.v2_errors import ModelNotFound
from service.api.v2_tensors import (
    HEADER_LENGTH,
    InferRequest,
    datatype,
    decompress,
    encode_infer_response,
    is_count,
    parse_infer_request,
    short,
)
from service.batching import Batcher, submit_all
from service.clinical.calibration import calibrated_rows
from service.config import Settings
from service.errors import DeadlineExceeded, MalformedInput, NotReady, PayloadTooLarge
from service.runtime.manifest import Manifest, TensorSpec
from service.runtime.session import CUDA
from service.state import ServiceState

router = APIRouter(prefix="/v2", tags=["open inference protocol (KServe v2)"])

SERVER_NAME = "resmtnet-serve"
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data", "model_configuration"]
RETRY = {"Retry-After": "5"}
RANGE_SLACK = 1e-4  # rounding in a client's own windowing
INLINE_HEADER_BYTES = 64 << 10  # binary requests with a JSON header this small are decoded on the event loop
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "description": "an inference request; with Inference-Header-Content-Length, tensor bytes follow the JSON",
        "content": {"application/json": {}, "application/octet-stream": {}},
    }
}

State = Annotated[ServiceState, Depends(get_state)]


def _served(state: ServiceState, name: str, version: str | None = None, *, ready: bool = False) -> Manifest:
    """The served model's manifest if name (and version) are the served ones: 404 otherwise, 503 until loaded."""
    served = state.model.manifest.name if state.model else state.settings.model_name
    if name != served:
        raise ModelNotFound(f"unknown model {short(name)}; this server serves {served!r}")
    if state.model is None:
        raise NotReady(f"model {served!r} is not loaded: {state.reason}", headers=RETRY)
    manifest = state.model.manifest
    if version is not None and version != manifest.version:
        raise ModelNotFound(f"model {served!r} has no version {short(version)}; it serves {manifest.version!r}")
    if ready and (not state.ready or state.batcher is None):
        raise NotReady(f"model {served!r} is not ready: {state.reason}", headers=RETRY)
    return manifest


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": datatype(spec), "shape": spec.shape}


def _metadata(manifest: Manifest) -> dict[str, Any]:
    return {
        "name": manifest.name,
        "versions": [manifest.version],
        "platform": PLATFORM,
        "inputs": [_tensor(s) for s in manifest.inputs],
        "outputs": [_tensor(s) for s in manifest.outputs],
    }


def _config(state: ServiceState, manifest: Manifest) -> dict[str, Any]:
    """The subset of Triton's model configuration that perf_analyzer and model_analyzer read."""
    s, provider = state.settings, state.model.provider if state.model else ""
    sessions = state.plan.sessions if state.plan else 1

    def tensor(spec: TensorSpec) -> dict[str, Any]:
        return {"name": spec.name, "data_type": f"TYPE_{datatype(spec)}", "dims": spec.shape[1:]}

    return {
        "name": manifest.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": s.max_batch_size,
        "input": [tensor(spec) for spec in manifest.inputs],
        "output": [tensor(spec) for spec in manifest.outputs],
        "dynamic_batching": {"max_queue_delay_microseconds": round(s.max_delay_ms * 1000)},
        "instance_group": [{"count": sessions, "kind": "KIND_GPU" if provider == CUDA else "KIND_CPU"}],
    }


def _body_limit(settings: Settings, manifest: Manifest) -> int:
    """The largest infer body worth reading: a full batch in binary plus a JSON header as large as /predict allows."""
    row_bytes = int(np.prod(manifest.input.shape[1:])) * 4
    return settings.max_json_bytes + settings.max_batch_size * row_bytes


def _check_values(patches: np.ndarray, manifest: Manifest) -> None:
    """Finite and in [0, 1]: HU sent as-is (the commonest mistake) would give confident nonsense."""
    low, high = float(patches.min()), float(patches.max())
    name = manifest.input.name
    if not (np.isfinite(low) and np.isfinite(high)):
        raise MalformedInput(f"input {name!r} holds NaN or infinite values")
    if low < -RANGE_SLACK or high > 1 + RANGE_SLACK:
        p = manifest.preprocessing
        raise MalformedInput(
            f"input {name!r} has values from {low:g} to {high:g}; it must be the preprocessed patch in [0, 1]: "
            f"{p.patch_size}^3 voxels at {p.spacing_mm:g} mm, HU clipped to {list(p.hu_window)} and scaled to [0, 1]"
        )


def _prepare(
    body: bytes, encoding: str | None, header_length: str | None, manifest: Manifest, max_batch: int, limit: int
) -> InferRequest:
    """Decode and check one infer body (in a worker thread unless it is a small binary request)."""
    body = decompress(body, encoding, limit)
    request = parse_infer_request(body, header_length, manifest.inputs, manifest.outputs, max_batch)
    _check_values(request.inputs[manifest.input.name], manifest)
    return request


def _inline(body: bytes, encoding: str | None, header_length: str | None, settings: Settings) -> bool:
    return (
        encoding is None
        and header_length is not None
        and is_count(header_length.strip())
        and int(header_length) <= INLINE_HEADER_BYTES
        and len(body) <= settings.inline_prepare_bytes
    )


async def _infer(request: Request, state: ServiceState, name: str, version: str | None) -> Response:
    manifest = _served(state, name, version, ready=True)
    batcher = state.batcher
    if batcher is None:  # _served(ready=True) checked it; this tells mypy
        raise NotReady("the batcher is not running", headers=RETRY)
    batcher.refuse_if_full()  # before the body is read
    settings = state.settings
    limit = _body_limit(settings, manifest)
    declared = request.headers.get("content-length", "")
    if is_count(declared) and int(declared) > limit:
        raise PayloadTooLarge(f"the inference request is {declared} bytes; the limit is {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise PayloadTooLarge(f"the inference request is {len(body)} bytes; the limit is {limit} bytes")
    return await while_connected(request, _answer(request, state, manifest, batcher, body, limit))


async def _answer(
    request: Request, state: ServiceState, manifest: Manifest, batcher: Batcher, body: bytes, limit: int
) -> Response:
    """Decode the tensors, run their rows through the batcher and encode the outputs."""
    settings = state.settings
    arrived = time.perf_counter()  # the deadline counts from here: a slow upload link is not the service's time
    deadline = state.drain.answer_deadline(arrived + settings.request_timeout_s)
    encoding, header_length = one_header(request, "content-encoding"), one_header(request, HEADER_LENGTH)
    args = (body, encoding, header_length, manifest, settings.max_batch_size, limit)
    t_pre = time.perf_counter()
    if _inline(body, encoding, header_length, settings):
        parsed = _prepare(*args)
    else:
        parsed = await in_thread_to_the_end(state.preprocess_pool, _prepare, *args)
    state.metrics.preprocess_seconds.observe(time.perf_counter() - t_pre)
    if parsed.timeout_s is not None:
        deadline = min(deadline, arrived + parsed.timeout_s)
    if time.perf_counter() >= deadline:
        refusals.count(state.metrics.rejections, "deadline")
        raise DeadlineExceeded("the request's deadline passed before it reached the model")
    patches = parsed.inputs[manifest.input.name][:, 0]  # (N, D, D, D): the batcher adds the channel axis back
    request.state.input_kind, request.state.nodules = "v2-tensor", len(patches)  # for the audit record
    # rows are bounded by max_batch_size per request, as in Triton; the batcher's queue decides the rest
    if len(patches) > batcher.max_queue:  # could never be queued: no retry would help
        raise PayloadTooLarge(
            f"the request has {len(patches)} rows; the model's queue holds at most {batcher.max_queue} "
            "(RESMTNET_MAX_QUEUE): send fewer rows per request"
        )
    predictions = await submit_all(batcher, list(patches), deadline, share_limit=False)
    heads = {spec.name: np.stack([p.outputs[k] for p in predictions]) for k, spec in enumerate(manifest.outputs)}
    if (calibration := manifest.calibration) is not None:  # the same probabilities /predict reports
        labels = manifest.output(calibration.output).labels or []
        heads[calibration.output] = calibrated_rows(heads[calibration.output], labels, calibration)
    header: dict[str, Any] = {"model_name": manifest.name, "model_version": manifest.version}
    if parsed.id is not None:
        header["id"] = parsed.id
    content, headers = encode_infer_response(header, [(o, heads[o.name]) for o in parsed.outputs])
    media_type = headers.pop("content-type")
    return Response(content, headers=headers, media_type=media_type)


@router.get("")
async def server_metadata(request: Request) -> dict[str, Any]:
    """Server name, version and the protocol extensions it supports."""
    return {"name": SERVER_NAME, "version": request.app.version, "extensions": EXTENSIONS}


@router.get("/health/live")
@router.head("/health/live", include_in_schema=False)
async def server_live() -> dict[str, bool]:
    """200 while the process answers."""
    return {"live": True}


@router.get("/health/ready")
@router.head("/health/ready", include_in_schema=False)
async def server_ready(state: State) -> dict[str, bool]:
    """200 once the model is loaded and warmed, until the server begins to shut down; 503 with the reason."""
    if state.drain.begun:
        raise NotReady(DRAINING, headers=RETRY)
    if not state.ready:
        raise NotReady(f"not ready: {state.reason}", headers=RETRY)
    return {"ready": True}


@router.get("/models/{name}")
async def model_metadata(name: str, state: State) -> dict[str, Any]:
    """Inputs and outputs with datatype and shape (-1: the batch axis)."""
    return _metadata(_served(state, name))


@router.get("/models/{name}/versions/{version}")
async def model_version_metadata(name: str, version: str, state: State) -> dict[str, Any]:
    return _metadata(_served(state, name, version))


@router.get("/models/{name}/ready")
async def model_ready(name: str, state: State) -> dict[str, Any]:
    """200 when the model answers inference requests; 503 with the reason before, 404 for another model."""
    return {"name": _served(state, name, ready=True).name, "ready": True}


@router.get("/models/{name}/versions/{version}/ready")
async def model_version_ready(name: str, version: str, state: State) -> dict[str, Any]:
    return {"name": _served(state, name, version, ready=True).name, "ready": True}


@router.get("/models/{name}/config")
async def model_config(name: str, state: State) -> dict[str, Any]:
    """Triton's model configuration, the subset perf_analyzer reads (max_batch_size, tensors, batching)."""
    return _config(state, _served(state, name))


@router.get("/models/{name}/versions/{version}/config")
async def model_version_config(name: str, version: str, state: State) -> dict[str, Any]:
    return _config(state, _served(state, name, version))


@router.post("/models/{name}/infer", openapi_extra=_INFER_BODY)
async def infer(name: str, request: Request, state: State) -> Response:
    """Inference on a batch of preprocessed patches, JSON or binary tensors."""
    return await _infer(request, state, name, None)


@router.post("/models/{name}/versions/{version}/infer", openapi_extra=_INFER_BODY)
async def infer_version(name: str, version: str, request: Request, state: State) -> Response:
    return await _infer(request, state, name, version)
