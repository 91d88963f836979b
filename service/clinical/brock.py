"""Brock (PanCan) probability that a nodule is lung cancer: the full model with spiculation, McWilliams et al.,
N Engl J Med 2013;369:910-919 (model 2b, derived on the Pan-Canadian Early Detection of Lung Cancer Study).

    logit = -6.7892 + 0.0287 (age - 62) + 0.6011 female + 0.2961 family history + 0.2953 emphysema
            - 5.3854 ((size / 10) ^ -0.5 - 1.58113883) + type + 0.6581 upper lobe - 0.0824 (nodule count - 4)
            + 0.7729 spiculation,   type: solid 0, part-solid 0.377, non-solid -0.1276

size in mm: the longest diameter, as PanCan measured it. The service estimates it from the Lung-RADS mean diameter
and the predicted shape (service.clinical.sections.longest_diameter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

INTERCEPT = -6.7892
AGE = 0.0287
AGE_CENTRE = 62.0
FEMALE = 0.6011
FAMILY_HISTORY = 0.2961
EMPHYSEMA = 0.2953
SIZE = -5.3854
SIZE_CENTRE = 1.58113883  # (4 mm / 10) ** -0.5: size is centred at 4 mm
TYPE = {"solid": 0.0, "part_solid": 0.377, "ground_glass": -0.1276}
UPPER_LOBE = 0.6581
NODULE_COUNT = -0.0824
NODULE_COUNT_CENTRE = 4.0
SPICULATION = 0.7729
MIN_SIZE_MM = 1.0  # PanCan nodules were at least 1 mm; smaller predictions are clamped


@dataclass(frozen=True)
class PatientFactors:
    """What the request's `clinical` member says about the patient and one nodule's location."""

    age: float
    female: bool
    family_history: bool
    emphysema: bool
    nodule_count: int
    upper_lobe: bool
    spiculated: bool | None = None  # a reader's judgement (Brock, 4X) when the request gives one; None: the model's


def brock_logit(patient: PatientFactors, size_mm: float, nodule_type: str, spiculated: bool) -> float:
    size = max(float(size_mm), MIN_SIZE_MM)
    return (
        INTERCEPT
        + AGE * (patient.age - AGE_CENTRE)
        + FEMALE * patient.female
        + FAMILY_HISTORY * patient.family_history
        + EMPHYSEMA * patient.emphysema
        + SIZE * ((size / 10.0) ** -0.5 - SIZE_CENTRE)
        + TYPE[nodule_type]
        + UPPER_LOBE * patient.upper_lobe
        + NODULE_COUNT * (patient.nodule_count - NODULE_COUNT_CENTRE)
        + SPICULATION * spiculated
    )


def brock_probability(patient: PatientFactors, size_mm: float, nodule_type: str, spiculated: bool) -> float:
    """P(lung cancer) in [0, 1] for one nodule."""
    z = brock_logit(patient, size_mm, nodule_type, spiculated)
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
