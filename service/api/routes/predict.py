"""POST /predict and /v1/predict: a nodule patch in (.npy upload or JSON), or a CT series with nodule centres
(routes/series.py), per-head results out."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from service.api.answers import answer, nodule_result
from service.api.clinical import add_clinical, check_query, plan, run_nodules
from service.api.deps import get_state
from service.api.disconnect import in_thread_to_the_end, while_connected
from service.api.headers import one_header
from service.api.multipart import Part, parse_form
from service.api.routes.series import SERIES_FIELDS, SeriesInput, predict_series, series_from_form
from service.api.schemas import (
    JsonPatchRequest,
    MultipartPatchRequest,
    MultipartSeriesRequest,
    PredictResponse,
    Problem,
)
from service.dicom.elements import ElementScan
from service.errors import (
    NotReady,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnusableInput,
)
from service.imaging.formats import (
    check_finite,
    check_hounsfield,
    parse_spacing,
    parse_voxel_center,
    read_json_request,
    read_npy,
)
from service.imaging.preprocess import preprocess
from service.runtime.manifest import Manifest
from service.state import ServiceState

router = APIRouter(tags=["predict"])

FORM_FIELDS = ("patch", "spacing", "center", "clinical")
MAX_FORM_PARTS = 16
STREAM_BODY_BYTES = 8 << 20  # bodies declared at least this large are received by _receive's growing buffer

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {"application/problem+json": {}}}
    for code in (400, 406, 413, 415, 422, 503, 504)
}
_ERRORS[200] = {
    "content": {"application/dicom": {"schema": {"type": "string", "format": "binary"}}},
    "description": "JSON; or, for a CT series with Accept: application/dicom or ?format=sr, a DICOM 3D SR",
}
_BODY = {
    "parameters": [
        {
            "name": "uncertainty",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["true", "false"]},
            "description": "malignancy_uncertainty over flipped views (default: RESMTNET_UNCERTAINTY)",
        },
        {
            "name": "format",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["json", "sr"]},
            "description": "json, or sr for a DICOM SR (CT series only); overrides the Accept header",
        },
    ],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "oneOf": [MultipartPatchRequest.model_json_schema(), MultipartSeriesRequest.model_json_schema()]
                }
            },
            "application/json": {"schema": JsonPatchRequest.model_json_schema()},
        },
    },
}


@dataclass
class PatchInput:
    """What the body carried, before any array work: .npy bytes or a JSON document, and the form fields."""

    npy: bytes | memoryview | None = None
    json_body: bytes | None = None
    spacing: Any = None
    center: Any = None
    clinical: Any = None

    def small_enough_to_inline(self, limit: int) -> bool:
        """A .npy patch this small is prepared faster on the event loop than handed to a thread; JSON never is."""
        return self.json_body is None and self.npy is not None and len(self.npy) <= limit


def _prepare(item: PatchInput, manifest: Manifest, max_voxels: int) -> tuple[np.ndarray, tuple, list[str], Any]:
    """Parse, validate and preprocess one patch, once per request (in a worker thread unless the patch is small);
    the `clinical` value rides along unchecked."""
    spacing_value, center_value, clinical = item.spacing, item.center, item.clinical
    if item.json_body is not None:
        volume, spacing_value, center_value, clinical = read_json_request(item.json_body)
        if volume.size > max_voxels:
            raise PayloadTooLarge(f"the patch has {volume.size} voxels; the limit is {max_voxels}")
    else:
        volume = read_npy(item.npy or b"", max_voxels)
    spacing = parse_spacing(spacing_value)
    center = parse_voxel_center(center_value, volume.shape)
    check_finite(volume)
    warnings = check_hounsfield(volume)
    spec = manifest.preprocessing
    cube, covered = preprocess(volume, spacing, center, spec)
    if covered < 0.999:
        warnings.append(
            f"the patch covers {covered:.0%} of the model's {spec.field_of_view_mm:g} mm field of view; "
            f"the rest was filled with {spec.fill_hu:g} HU"
        )
    if max(spacing) > 2.5:
        warnings.append(f"slice spacing {max(spacing):g} mm is over 2.5 mm: small nodules are measured less well")
    return cube, center, warnings, clinical


async def _read_patch(request: Request, state: ServiceState) -> PatchInput | SeriesInput:
    """The body's parts by content type; array work is left to _prepare (a series: to routes/series.py)."""
    content_type = one_header(request, "content-type") or ""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        max_files = state.settings.dicom_max_files
        max_parts = max(MAX_FORM_PARTS, max_files + len(SERIES_FIELDS))
        body, scan = await _receive(request), ElementScan()
        try:
            parts = parse_form(body, content_type, max_parts=max_parts, length_hint=scan.length)
        except PayloadTooLarge:
            raise PayloadTooLarge(
                f"the form has more than {max_parts} parts; a series upload takes at most {max_files} files"
            ) from None
        item = _patch_from_form(parts)
        if isinstance(item, SeriesInput):
            item.scan = scan
        return item
    if ctype == "application/json":
        declared = request.headers.get("content-length", "")
        too_long = declared.isdigit() and int(declared) > state.settings.max_json_bytes
        body = b"" if too_long else await request.body()
        if too_long or len(body) > state.settings.max_json_bytes:
            raise PayloadTooLarge(
                f"JSON bodies are limited to {state.settings.max_json_bytes} bytes; send a .npy upload"
            )
        return PatchInput(json_body=body)
    shown = ctype or "none"
    raise UnsupportedMediaType(
        f"content type {shown!r} is not supported; send multipart/form-data (patch=.npy, spacing) or application/json"
    )


async def _receive(request: Request) -> bytes | bytearray:
    """The body: as Starlette collects it when small; appended to one growing buffer when large (a CT upload), which
    spares the final join of hundreds of chunks (about 100 ms for 160 MB here) without trusting Content-Length
    for an allocation."""
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or int(declared) < STREAM_BODY_BYTES:
        return await request.body()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    return body


def _patch_from_form(parts: list[Part]) -> PatchInput | SeriesInput:
    """The patch file and its text fields; unknown or repeated fields are refused, never ignored."""
    fields: dict[str, Part] = {}
    for part in parts:
        if part.name in SERIES_FIELDS:
            return series_from_form(parts)
        if part.name not in FORM_FIELDS:
            raise UnusableInput(f"unknown form field {part.name[:40]!r}; expected {', '.join(FORM_FIELDS)}")
        if part.name in fields:
            raise UnusableInput(f"form field {part.name!r} appears more than once; send one patch per request")
        fields[part.name] = part
    upload = fields.get("patch")
    if upload is None:
        raise UnusableInput(
            "the form needs a 'patch' file (.npy of HU values, axes z, y, x), or 'series' (DICOM files or one .zip) "
            "with 'centers'"
        )
    if not upload.is_file:
        raise UnusableInput("'patch' must be a file part (.npy), not a text field")
    text = {name: fields[name].text() for name in ("spacing", "center", "clinical") if name in fields}
    return PatchInput(
        npy=upload.data, spacing=text.get("spacing"), center=text.get("center"), clinical=text.get("clinical")
    )


def _input_kind(item: PatchInput | SeriesInput) -> str:
    if isinstance(item, SeriesInput):
        return "ct-series"
    return "patch-json" if item.json_body is not None else "patch-npy"


async def _in_pool(state: ServiceState, fn, *args):
    return await in_thread_to_the_end(state.preprocess_pool, fn, *args)


def _center(zyx: tuple) -> dict[str, float]:
    return {"i": zyx[2], "j": zyx[1], "k": zyx[0]}


def _check_identity_encoding(request: Request) -> None:
    """/predict reads bodies as sent: a compressed one (Content-Encoding) is a 415 that says so, not a garbled
    multipart or JSON error, and a plain one labelled compressed is not read as if the label were absent."""
    coding = (one_header(request, "content-encoding") or "").strip().lower()
    if coding not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding {coding[:20]!r} is not accepted on /predict: send the body uncompressed (the /v2 "
            "endpoints take gzip and deflate)"
        )


@router.post("/predict", response_model=PredictResponse, responses=_ERRORS, openapi_extra=_BODY)
@router.post("/v1/predict", response_model=PredictResponse, responses=_ERRORS, openapi_extra=_BODY)
async def predict(request: Request, state: Annotated[ServiceState, Depends(get_state)]) -> Response:
    """Predict every head for one nodule patch (HU values with their voxel spacing), or for each nodule of a CT
    series (DICOM files or one .zip, with the nodules' centres)."""
    started = time.perf_counter()
    if not state.ready or state.batcher is None or state.model is None:
        raise NotReady(f"the model is not ready: {state.reason}", headers={"Retry-After": "5"})
    state.batcher.refuse_if_full()  # no upload read, no series prepared, for a queue that cannot take it
    check_query(request)
    _check_identity_encoding(request)
    item = await _read_patch(request, state)  # bounded in time by the middleware (RESMTNET_BODY_TIMEOUT_S)
    request.state.input_kind = _input_kind(item)  # for the audit record
    deadline = state.drain.answer_deadline(time.perf_counter() + state.settings.request_timeout_s)  # from here
    return await while_connected(request, _answer(request, state, item, started, deadline))


async def _answer(
    request: Request, state: ServiceState, item: PatchInput | SeriesInput, started: float, deadline: float
) -> Response:
    """Prepare the input, run it through the batcher and build the answer."""
    assert state.batcher is not None and state.model is not None
    manifest = state.model.manifest
    if isinstance(item, SeriesInput):
        return await predict_series(request, state, item, started, deadline)
    t_pre = time.perf_counter()
    max_voxels = state.settings.max_patch_voxels
    if item.small_enough_to_inline(state.settings.inline_prepare_bytes):
        cube, center_zyx, warnings, clinical = _prepare(item, manifest, max_voxels)
    else:
        cube, center_zyx, warnings, clinical = await _in_pool(state, _prepare, item, manifest, max_voxels)
    asks = plan(request, state.settings, clinical, nodules=1)
    preprocess_s = time.perf_counter() - t_pre
    state.metrics.preprocess_seconds.observe(preprocess_s)
    request.state.nodules = 1
    ((prediction, views),) = await run_nodules(state.batcher, [cube], deadline, asks.views)
    nodule = nodule_result(manifest, prediction.outputs, _center(center_zyx), warnings)
    patient = asks.patients[0] if asks.patients else None
    nodules = [add_clinical(nodule, manifest, prediction, views, patient, asks.warnings)]
    body = answer(request.state.request_id, manifest, nodules, [prediction], preprocess_s, started)
    return JSONResponse(body)
