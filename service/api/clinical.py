"""The API side of the clinical outputs: what a request asks for (uncertainty, the `clinical` member), the model
runs that needs (each nodule's cube with its flipped views, submitted together to the batcher), and the fields each
nodule's entry gains (service/clinical/report.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import Request

from service.batching import Batcher, Prediction, submit_all
from service.clinical.brock import PatientFactors
from service.clinical.inputs import parse_clinical
from service.clinical.report import OutputIndex, clinical_fields
from service.clinical.uncertainty import extra_views, spread
from service.config import Settings
from service.errors import NotAcceptable, UnusableInput
from service.runtime.manifest import Manifest

UNCERTAINTY_PARAM = "uncertainty"
FORMAT_PARAM = "format"
FORMATS = {"json": False, "sr": True}  # ?format= value: whether the answer is a DICOM SR
DICOM = "application/dicom"
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass
class ClinicalPlan:
    """Per request: how many views each nodule runs (1: no uncertainty), the patient factors per nodule, warnings."""

    views: int = 1
    patients: list[PatientFactors] | None = None
    warnings: list[str] = field(default_factory=list)


def check_query(request: Request) -> None:
    """/predict's query takes `uncertainty` and `format`, each at most once: a misspelt or repeated one is a 422,
    never a setting quietly left at its default or decided by whichever came last."""
    names = [name for name, _ in request.query_params.multi_items()]
    for name in names:
        if name not in (UNCERTAINTY_PARAM, FORMAT_PARAM):
            raise UnusableInput(
                f"unknown query parameter {name[:40]!r}; /predict takes {UNCERTAINTY_PARAM} and {FORMAT_PARAM}"
            )
        if names.count(name) > 1:
            raise UnusableInput(f"query parameter {name} is given {names.count(name)} times; give it once")


def plan(request: Request, settings: Settings, clinical: Any, nodules: int, series: bool = False) -> ClinicalPlan:
    """Read `?uncertainty=` against RESMTNET_UNCERTAINTY, and validate the `clinical` member (422s); a patch
    request that will take nothing but a DICOM SR gets a 406."""
    if not series:
        if request.query_params.get(FORMAT_PARAM, "").strip().lower() == "sr":
            raise UnusableInput(
                f"{FORMAT_PARAM}=sr (a DICOM SR) answers CT series uploads only: a patch has no DICOM study to refer "
                f"to; leave {FORMAT_PARAM} out or send {FORMAT_PARAM}=json"
            )
        sr, json_ok = answer_format(request)
        if sr and not json_ok:
            raise NotAcceptable(
                f"a DICOM SR ({DICOM}) answers CT series uploads only: a patch has no DICOM study to refer to; "
                "accept application/json"
            )
    out = ClinicalPlan()
    asked = request.query_params.get(UNCERTAINTY_PARAM)
    wanted: bool | None = None
    if asked is not None and asked.strip():
        value = asked.strip().lower()
        if value not in _TRUE + _FALSE:
            raise UnusableInput(f"query parameter {UNCERTAINTY_PARAM} must be true or false; got {asked[:20]!r}")
        wanted = value in _TRUE
    if settings.uncertainty == "off":
        if wanted:
            out.warnings.append("uncertainty was asked for, but this server computes none (RESMTNET_UNCERTAINTY=off)")
    elif wanted or (wanted is None and settings.uncertainty == "always"):
        out.views = settings.uncertainty_views
    parsed = parse_clinical(clinical, nodules)
    if parsed is not None:
        out.patients, warnings = parsed
        out.warnings += warnings
    return out


def _accept_q(accept: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            if p.lower().startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if media:
            out[media.lower()] = max(q, out.get(media.lower(), 0.0))
    return out


def answer_format(request: Request) -> tuple[bool, bool]:
    """(answer with a DICOM SR, JSON is acceptable): `?format=sr` or `?format=json` when given (for clients that
    cannot set headers), else the Accept header."""
    asked = request.query_params.get(FORMAT_PARAM)
    if asked is not None and asked.strip():
        value = asked.strip().lower()
        if value not in FORMATS:
            raise UnusableInput(f"query parameter {FORMAT_PARAM} must be json or sr; got {asked[:20]!r}")
        return FORMATS[value], not FORMATS[value]
    return sr_preferred(request.headers.get("accept"))


def sr_preferred(accept: str | None) -> tuple[bool, bool]:
    """(the client prefers a DICOM SR, the client also takes JSON) from an Accept header."""
    if not accept:
        return False, True
    q = _accept_q(accept)
    dicom = q.get(DICOM, 0.0)
    json_q = max(q.get("application/json", 0.0), q.get("application/*", 0.0), q.get("*/*", 0.0))
    return dicom > 0 and dicom >= json_q, json_q > 0


async def run_nodules(
    batcher: Batcher, cubes: list[np.ndarray], deadline: float, views: int
) -> list[tuple[Prediction, list[Prediction]]]:
    """Every nodule's cube (and its views) submitted at once, so that they share batches; all answered, or the
    request fails as a whole with nothing left queued."""
    groups = [[cube, *extra_views(cube, views)] if views >= 2 else [cube] for cube in cubes]
    flat = await submit_all(batcher, [c for group in groups for c in group], deadline)
    out, start = [], 0
    for group in groups:
        out.append((flat[start], flat[start + 1 : start + len(group)]))
        start += len(group)
    return out


def add_clinical(
    nodule: dict[str, Any],
    manifest: Manifest,
    prediction: Prediction,
    views: list[Prediction],
    patient: PatientFactors | None,
    warnings: list[str],
) -> dict[str, Any]:
    """The nodule's entry with its clinical fields; `malignancy` becomes the calibrated probabilities."""
    index = OutputIndex.of(manifest)
    if index is None:
        nodule["warnings"].append("this model lacks the outputs the clinical rules read: no clinical fields")
        return nodule
    uncertainty = None
    if views:
        uncertainty = spread([index.p_malignant(p.outputs, manifest) for p in (prediction, *views)])
    nodule.update(clinical_fields(manifest, index, prediction.outputs, patient, uncertainty))
    nodule["warnings"].extend(warnings)
    return nodule
