"""The CT branch of POST /predict: a DICOM series (files or one .zip) with nodule centres, one result per nodule.

The series is prepared in a worker thread (at most RESMTNET_DICOM_CONCURRENCY at once, so that memory stays
bounded), then every nodule's cube goes to the same batcher as patches, all at once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from service import refusals
from service.api.answers import answer, nodule_result
from service.api.clinical import DICOM, add_clinical, answer_format, plan, run_nodules
from service.api.disconnect import in_thread_to_the_end
from service.api.multipart import Part
from service.api.v2_tensors import is_count
from service.cancel import Stop
from service.clinical.brock import PatientFactors
from service.dicom.centers import parse_centers
from service.dicom.elements import ElementScan
from service.dicom.pipeline import SeriesSource, prepare
from service.dicom.series import SeriesChoice
from service.dicom.sources import SeriesLimits
from service.errors import DeadlineExceeded, Overloaded, PayloadTooLarge, UnusableInput
from service.runtime.manifest import Manifest
from service.state import ServiceState

SERIES_FIELDS = ("series", "centers", "series_index", "series_uid")
SHARED_FIELDS = ("clinical",)  # also taken by a patch upload, so they do not mark a form as a series


@dataclass
class SeriesInput:
    """The parts of a series request, before any parsing of DICOM."""

    files: list[memoryview] = field(default_factory=list)
    centers: str | None = None
    choice: SeriesChoice = field(default_factory=SeriesChoice)
    scan: ElementScan | None = None  # what the multipart reader already read of each file
    clinical: str | None = None


def series_from_form(parts: list[Part]) -> SeriesInput:
    """The `series` files and the text fields; unknown or repeated text fields are refused."""
    item = SeriesInput()
    text: dict[str, str] = {}
    for part in parts:
        if part.name == "series":
            if not part.is_file:
                raise UnusableInput("'series' must be file parts (DICOM files or one .zip), not text fields")
            item.files.append(part.data)
            continue
        if part.name == "patch":
            if any(other.name == "series" for other in parts):
                raise UnusableInput("send either 'patch' or 'series', not both")
            first = next(other.name for other in parts if other.name in SERIES_FIELDS)
            raise UnusableInput(
                f"form field {first!r} belongs to a series upload; a patch takes patch, spacing, center"
            )
        if part.name not in SERIES_FIELDS + SHARED_FIELDS:
            expected = ", ".join(SERIES_FIELDS + SHARED_FIELDS)
            raise UnusableInput(f"unknown form field {part.name[:40]!r}; expected {expected}")
        if part.name in text:
            raise UnusableInput(f"form field {part.name!r} appears more than once")
        text[part.name] = part.text()
    if not item.files:
        raise UnusableInput("the form has no 'series' file: send DICOM files or one .zip as 'series', with 'centers'")
    item.centers = text.get("centers")
    item.clinical = text.get("clinical")
    item.choice = _choice(text.get("series_index"), text.get("series_uid"))
    return item


def _choice(index: str | None, uid: str | None) -> SeriesChoice:
    if index is not None and uid is not None:
        raise UnusableInput("give series_index or series_uid, not both")
    if index is not None:
        text = index.strip()
        try:
            if not is_count(text):
                raise ValueError(text)
            return SeriesChoice(index=int(text))
        except ValueError:
            raise UnusableInput(
                "series_index must be a whole number, 0 or more (0 for the first series in the upload)"
            ) from None
    if uid is not None:
        uid = uid.strip()
        if not uid or len(uid) > 64:
            raise UnusableInput("series_uid must be a DICOM UID (at most 64 characters)")
        return SeriesChoice(uid=uid)
    return SeriesChoice()


def limits_of(state: ServiceState) -> SeriesLimits:
    s = state.settings
    return SeriesLimits(
        s.dicom_max_files,
        s.dicom_max_bytes,
        s.dicom_max_zip_entries,
        s.dicom_max_nodules,
        max_region_voxels=s.max_patch_voxels,
    )


def _gate(request: Request, state: ServiceState) -> asyncio.Semaphore:
    """One semaphore per app bounds the series being prepared at once."""
    gate = getattr(request.app.state, "dicom_gate", None)
    if gate is None:
        gate = asyncio.Semaphore(state.settings.dicom_concurrency)
        request.app.state.dicom_gate = gate
    return gate


async def predict_series(
    request: Request, state: ServiceState, item: SeriesInput, started: float, deadline: float
) -> Response:
    """Prepare the series off the event loop, then batch every nodule's cube; one result per centre, in order.
    JSON, or a DICOM SR when the client prefers application/dicom or sends ?format=sr."""
    assert state.batcher is not None and state.model is not None
    manifest = state.model.manifest
    sr, _ = answer_format(request)
    # Everything that can be refused without the series is refused before it is prepared.
    n_centers = len(parse_centers(item.centers, state.settings.dicom_max_nodules))
    asks = plan(request, state.settings, item.clinical, nodules=n_centers, series=True)
    runs_needed, most = n_centers * max(asks.views, 1), max(state.batcher.max_queue // 2, 1)
    if runs_needed > most:
        raise PayloadTooLarge(
            f"{n_centers} nodule centres with {max(asks.views, 1)} view(s) each need {runs_needed} model runs; "
            f"at most {most} are taken from one request"
        )
    gate = _gate(request, state)
    try:
        async with asyncio.timeout(max(deadline - time.perf_counter(), 0.0)):  # cancels acquire() cleanly
            await gate.acquire()
    except TimeoutError:
        refusals.count(state.metrics.rejections, "ct_busy")
        raise Overloaded(
            "other CT uploads are being prepared; retry later",
            headers={"Retry-After": str(state.settings.retry_after_s)},
        ) from None
    stop = Stop(deadline, "its CT series was being prepared")
    try:
        t_pre = time.perf_counter()
        prepared = await in_thread_to_the_end(
            None,
            prepare,
            item.files,
            item.centers,
            item.choice,
            manifest.preprocessing,
            limits_of(state),
            item.scan,
            sr,
            stop,
            stop=stop,
        )
        preprocess_s = time.perf_counter() - t_pre
    except DeadlineExceeded:
        refusals.count(state.metrics.rejections, "deadline")
        raise
    finally:
        gate.release()
    state.metrics.preprocess_seconds.observe(preprocess_s)
    request.state.nodules = len(prepared.nodules)
    runs = await run_nodules(state.batcher, [n.cube for n in prepared.nodules], deadline, asks.views)
    predictions = [p for p, _ in runs]
    patients: list[PatientFactors | None] = list(asks.patients) if asks.patients else [None] * len(runs)
    nodules = [
        add_clinical(nodule_result(manifest, p.outputs, n.center, n.warnings), manifest, p, v, pt, asks.warnings)
        for n, (p, v), pt in zip(prepared.nodules, runs, patients, strict=True)
    ]
    body = answer(
        request.state.request_id, manifest, nodules, predictions, preprocess_s, started, series=prepared.series
    )
    if sr and prepared.source is not None:
        return await _structured_report(prepared.source, body["nodules"], manifest)
    return JSONResponse(body)


async def _structured_report(source: SeriesSource, nodules: list[dict[str, Any]], manifest: Manifest) -> Response:
    """The answer as a DICOM Comprehensive 3D SR, built in a worker thread."""
    from service.dicom.structured_report import build_report  # highdicom takes 0.5 s to import: only when asked

    data = await in_thread_to_the_end(None, build_report, source, nodules, manifest)  # it reads the request body
    headers = {"Content-Disposition": 'attachment; filename="res_mtnet_sr.dcm"'}
    return Response(data, media_type=DICOM, headers=headers)
