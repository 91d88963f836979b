"""The request's optional `clinical` member (a form field of JSON text, or a member of the JSON body): what Brock
needs about the patient, checked field by field with a precise 422 for each problem.

    {"age": 63, "sex": "female", "family_history": false, "emphysema": true, "nodule_count": 2,
     "upper_lobe": [true, false]}       # one value per nodule centre, in order (a bare true/false for one nodule)

Optionally "spiculated": [false, true], a reader's judgement per centre, which Brock and the 4X suggestion take over the
model's flag (the model finds a minority of the nodules readers call spiculated: the model card says how many).
"""

from __future__ import annotations

import json
from typing import Any

from service import strict_json
from service.clinical.brock import PatientFactors
from service.errors import UnusableInput
from service.imaging.formats import finite_number

FIELDS = ("age", "sex", "family_history", "emphysema", "nodule_count", "upper_lobe")
OPTIONAL = ("spiculated",)  # a reader's judgement per centre, for Brock in place of the model's flag
AGE_RANGE = (18.0, 110.0)  # accepted
PANCAN_AGE = (50.0, 75.0)  # the derivation cohort's ages; outside, a warning
SCREENING_AGE = (50.0, 80.0)  # whom lung cancer screening is for (USPSTF 2021, ACR); outside, a warning
MAX_NODULE_COUNT = 200
MAX_TEXT = 4096


def _fail(detail: str) -> UnusableInput:
    return UnusableInput(f"clinical: {detail}")


def _bool(doc: dict[str, Any], name: str, meaning: str) -> bool:
    value = doc[name]
    if not isinstance(value, bool):
        raise _fail(f"{name} must be true or false ({meaning}); got {json.dumps(value)[:40]}")
    return value


def _age(value: Any) -> float:
    age = finite_number(value)
    if age is None:
        raise _fail(f"age must be a number of years; got {json.dumps(value)[:40]}")
    lo, hi = AGE_RANGE
    if not lo <= age <= hi:
        raise _fail(f"age {age:g} is outside {lo:g}-{hi:g} years")
    return age


def _sex(value: Any) -> bool:
    if value not in ("female", "male"):
        raise _fail(f'sex must be "female" or "male"; got {json.dumps(value)[:40]}')
    return value == "female"


def _count(value: Any, nodules: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"nodule_count must be a whole number (nodules seen on the CT); got {json.dumps(value)[:40]}")
    if not 1 <= value <= MAX_NODULE_COUNT:
        shown = str(value) if abs(value) < 10**40 else f"with {len(str(abs(value)))} digits"
        raise _fail(f"nodule_count {shown} is outside 1-{MAX_NODULE_COUNT}")
    if value < nodules:
        raise _fail(f"nodule_count {value} is fewer than the {nodules} nodule centres in this request")
    return value


def _per_centre(value: Any, name: str, nodules: int) -> list[bool]:
    """One true/false per nodule centre, in order (a bare one for a single centre)."""
    if isinstance(value, bool) and nodules == 1:
        return [value]
    if not isinstance(value, list):
        expected = "true or false (or a list of one)" if nodules == 1 else f"a list of {nodules} true/false values"
        raise _fail(f"{name} must be {expected}, one per nodule centre in order; got {json.dumps(value)[:40]}")
    if len(value) != nodules:
        raise _fail(f"{name} has {len(value)} value(s) for {nodules} nodule centre(s); give one per centre")
    for i, v in enumerate(value):
        if not isinstance(v, bool):
            raise _fail(f"{name}[{i}] must be true or false; got {json.dumps(v)[:40]}")
    return list(value)


def parse_clinical(value: Any, nodules: int) -> tuple[list[PatientFactors], list[str]] | None:
    """Per-nodule patient factors and warnings, or None when the request has no `clinical` member."""
    if value is None:
        return None
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise _fail(f"the field is over {MAX_TEXT} characters")
        try:
            value = strict_json.loads(value)
        except strict_json.DuplicateMember as exc:
            raise _fail(str(exc)) from None
        except (ValueError, RecursionError):
            raise _fail('not valid JSON; send an object like {"age": 63, "sex": "female", ...}') from None
    if not isinstance(value, dict):
        raise _fail(f"must be a JSON object with {', '.join(FIELDS)}")
    missing = [f for f in FIELDS if f not in value]
    if missing:
        raise _fail(f"missing {', '.join(missing)} (the Brock model needs all of {', '.join(FIELDS)})")
    unknown = sorted(set(value) - set(FIELDS) - set(OPTIONAL))
    if unknown:
        named = ", ".join(json.dumps(name) for name in unknown)[:120]
        raise _fail(f"unknown field(s) {named}; expected {', '.join(FIELDS)} and optionally {', '.join(OPTIONAL)}")
    age = _age(value["age"])
    female = _sex(value["sex"])
    family = _bool(value, "family_history", "lung cancer in a first-degree relative")
    emphysema = _bool(value, "emphysema", "emphysema seen on CT")
    count = _count(value["nodule_count"], nodules)
    lobes = _per_centre(value["upper_lobe"], "upper_lobe", nodules)
    given = value.get("spiculated")
    spiculated: list[bool | None] = (
        [None] * nodules if given is None else list(_per_centre(given, "spiculated", nodules))
    )
    warnings = []
    if not PANCAN_AGE[0] <= age <= PANCAN_AGE[1]:
        warnings.append(
            f"the age given is outside the {PANCAN_AGE[0]:g}-{PANCAN_AGE[1]:g} years of the PanCan cohort that Brock "
            "was derived on: its probability is an extrapolation"
        )
    if not SCREENING_AGE[0] <= age <= SCREENING_AGE[1]:
        warnings.append(
            f"the age given is outside the {SCREENING_AGE[0]:g}-{SCREENING_AGE[1]:g} years for whom lung cancer "
            "screening is recommended (USPSTF 2021): Lung-RADS categories are for screening CT; an incidental nodule "
            "follows the Fleischner Society 2017 guidelines"
        )
    factors = [
        PatientFactors(age, female, family, emphysema, count, upper, spiculated=spiculated_here)
        for upper, spiculated_here in zip(lobes, spiculated, strict=True)
    ]
    return factors, warnings
