"""Lung-RADS v2022 (American College of Radiology), baseline screening, for one nodule from the model's type and
sizes: category 2, 3, 4A or 4B with its management and risk band, and what the rules need that a patch cannot show.

Sizes are mean diameters ((long axis + perpendicular short axis) / 2) rounded to one decimal, as v2022 asks, taken
"in any plane to reflect the true size": the model's axial sizes scaled to the section (axial, coronal or sagittal)
where the nodule is largest (service.clinical.sections). The table (baseline, no prior CT):

| type | 2 | 3 | 4A | 4B |
| --- | --- | --- | --- | --- |
| solid | < 6 mm | 6 to < 8 mm | 8 to < 15 mm | >= 15 mm |
| part-solid | total < 6 mm | total >= 6 mm, solid < 6 mm | solid 6 to < 8 mm | solid >= 8 mm |
| non-solid (ground glass) | < 30 mm | >= 30 mm | | |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from service.clinical.features import SPICULATION_THRESHOLD, is_spiculated, shown_score
from service.clinical.sections import (
    ELONGATED,
    MAX_FACTOR,
    Sections,
    in_largest_section,
    part_in_largest_section,
)

VERSION = "Lung-RADS v2022 (ACR), baseline screening"
BOUNDARY_MARGIN_MM = 1.0  # a size this close to a threshold gets a note: the model's diameter error is ~0.6 mm
SECTION_MARGIN_MM = 1.5  # the same for a size taken outside the axial section: 1.2-1.5 mm on elongated phantoms
ALTERNATIVE_TYPE_MIN_P = 0.2  # another type at least this probable is assessed too, when its category differs


@dataclass(frozen=True)
class Category:
    code: str
    descriptor: str
    management: str
    risk: str  # probability of malignancy that v2022 gives the category


CATEGORIES = {
    "2": Category("2", "benign: based on imaging features or indolent behavior", "12-month screening LDCT", "< 1%"),
    "3": Category("3", "probably benign: based on imaging features or behavior", "6-month LDCT", "1-2%"),
    "4A": Category(
        "4A",
        "suspicious",
        "LDCT in 3 months; PET/CT may be considered when there is a solid nodule or solid component >= 8 mm",
        "5-15%",
    ),
    "4B": Category(
        "4B",
        "very suspicious",
        "diagnostic chest CT with or without contrast; PET/CT may be considered when there is a solid nodule or "
        "solid component >= 8 mm; tissue sampling; and/or referral for further clinical evaluation. Management "
        "depends on clinical evaluation, patient preference and the probability of malignancy",
        "> 15%",
    ),
}

# Per type: (which size, [(upper bound exclusive, category), ...]) read in order; part-solid first checks the total.
_SOLID = [(6.0, "2"), (8.0, "3"), (15.0, "4A"), (math.inf, "4B")]
_PART_SOLID_TOTAL = 6.0
_PART_SOLID_COMPONENT = [(6.0, "3"), (8.0, "4A"), (math.inf, "4B")]
_NON_SOLID = [(30.0, "2"), (math.inf, "3")]
_LABELS = {"solid": "solid", "part_solid": "part-solid", "ground_glass": "non-solid (ground-glass)"}

NOT_ASSESSED = (
    "the setting: Lung-RADS is for lung cancer screening CT of eligible people (USPSTF 2021: aged 50 to 80 with "
    "at least 20 pack-years, smoking now or within 15 years); a nodule found on CT done for another reason follows "
    "the Fleischner Society 2017 guidelines instead, which this service does not apply",
    "elongated nodules: sizes are taken in the section where the nodule's predicted extent is largest, but the "
    "model's diameter reads part of a nodule's size from its extent in every direction: a nodule elongated within "
    "the axial plane is under-measured (the model card gives by how much), a tube-like one may be partly taken for "
    "a vessel, and its category may be too low: measure its long and short axes by hand",
    "prior CT: v2022 categories for new, growing, stable or resolving nodules need a comparison; a baseline screen "
    "is assumed",
    "calcification pattern and fat: a benign calcification (complete, central, popcorn, concentric rings) or fat "
    "makes a nodule category 1",
    "juxtapleural or perifissural location: such solid nodules under 10 mm with smooth margins and an oval, "
    "lentiform or triangular shape are category 2",
    "airway nodules and atypical pulmonary cysts, which have their own v2022 rules",
    "findings outside the nodule (lymphadenopathy, effusion, ...) that may raise a category 3 or 4 to 4X; only "
    "the model's spiculation score is screened",
    "category 0 (incomplete study, possible infection or inflammation) and the S modifier",
    "the exam's category, which is that of its most suspicious nodule: each nodule is assessed alone",
)


def round_mean_diameter(value_mm: float) -> float:
    """Mean diameter to one decimal, halves rounded up (7.95 -> 8.0), as a reader would report it. It starts from
    the value the answer shows (6 decimals): the model's float32 7.95 is 7.949999809..., which must not give 7.9
    beside a displayed 7.95."""
    shown = round(float(value_mm), 6)
    return float(Decimal(repr(shown)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _lookup(table: list[tuple[float, str]], size: float) -> tuple[str, float, float]:
    lower = 0.0
    for upper, code in table:
        if size < upper:
            return code, lower, upper
        lower = upper
    raise AssertionError("the last bound is infinite")


def _band(lower: float, upper: float) -> str:
    if lower == 0:
        return f"< {upper:g} mm"
    if math.isinf(upper):
        return f">= {lower:g} mm"
    return f">= {lower:g} and < {upper:g} mm"


def categorize(nodule_type: str, diameter_mm: float, solid_diameter_mm: float = 0.0) -> tuple[str, str]:
    """(category code, the rule that gave it) for sizes already rounded to one decimal."""
    label = _LABELS[nodule_type]
    if nodule_type == "solid":
        code, lo, hi = _lookup(_SOLID, diameter_mm)
        return code, f"{label} nodule, mean diameter {_band(lo, hi)} at baseline"
    if nodule_type == "ground_glass":
        code, lo, hi = _lookup(_NON_SOLID, diameter_mm)
        return code, f"{label} nodule, mean diameter {_band(lo, hi)} at baseline"
    if nodule_type != "part_solid":
        raise ValueError(f"unknown nodule type {nodule_type!r}")
    if diameter_mm < _PART_SOLID_TOTAL:
        return "2", f"{label} nodule, total mean diameter < {_PART_SOLID_TOTAL:g} mm at baseline"
    code, lo, hi = _lookup(_PART_SOLID_COMPONENT, solid_diameter_mm)
    return code, (
        f"{label} nodule, total mean diameter >= {_PART_SOLID_TOTAL:g} mm with a solid component "
        f"{_band(lo, hi)} at baseline"
    )


def _thresholds(nodule_type: str) -> list[tuple[str, float]]:
    if nodule_type == "solid":
        return [("mean diameter", t) for t, _ in _SOLID[:-1]]
    if nodule_type == "ground_glass":
        return [("mean diameter", t) for t, _ in _NON_SOLID[:-1]]
    return [("mean diameter", _PART_SOLID_TOTAL)] + [("solid component", t) for t, _ in _PART_SOLID_COMPONENT[:-1]]


def _section_notes(
    nodule_type: str, shape: Sections, code: str, axial: tuple[float, float], sized: tuple[float, float, str]
) -> list[str]:
    """What a reader should know about the section the size was read in: when it changed the category, when the
    grid's noise kept a category-changing section out, when its ratio was capped, and when the nodule is so
    elongated that its size may be under-measured."""
    (axial_total, axial_solid), (total, solid, solid_plane) = axial, sized
    part = nodule_type == "part_solid"
    notes = []
    axial_code, _ = categorize(nodule_type, axial_total, axial_solid)
    if axial_code != code:
        notes.append(
            "sized where the predicted shape looks largest (it may take in an attached vessel): "
            f"{total:.1f} mm in the {shape.largest} section"
            + (f", solid component {solid:.1f} mm in its {solid_plane} section" if part else "")
            + f"; the axial section alone ({axial_total:.1f} mm"
            + (f", solid component {axial_solid:.1f} mm" if part else "")
            + f") would give category {axial_code}: confirm on coronal and sagittal reformats"
        )
    widest = shape.widest
    if shape.largest == "axial" and widest != "axial":
        wide = round_mean_diameter(axial_total * shape.capped_ratio(widest))
        wide_code, _ = categorize(nodule_type, wide, min(axial_solid, wide))
        if wide_code != code:
            notes.append(
                f"its {widest} section reads {wide:.1f} mm (category {wide_code}), within what the map's 2.5 mm grid "
                "alone makes a round nodule's sections differ: the axial size stands; check on reformats"
            )
    if shape.ratio(shape.largest) > MAX_FACTOR:
        notes.append(
            f"its {shape.largest} section is {shape.ratio(shape.largest):.1f} times its axial one, more than any "
            f"nodule evaluated (a vessel along it is likelier): the size is taken as {MAX_FACTOR:g} times the axial "
            "one; measure by hand"
        )
    if shape.elongation >= ELONGATED:
        notes.append(
            f"elongated: the predicted nodule is {shape.elongation:.1f} times longer than wide; the model "
            "under-measures such shapes when they lie within the axial plane. The occupancy map's own estimate is "
            f"{shape.largest_mm:.1f} mm in its {widest} section (it may take in an attached vessel): measure the long "
            "and short axes by hand"
        )
    return notes


def _boundary_notes(nodule_type: str, sizes: dict[str, float], margins: dict[str, float]) -> list[str]:
    notes = []
    for name, threshold in _thresholds(nodule_type):
        value, margin = sizes[name], margins[name]
        if abs(value - threshold) < margin:
            notes.append(
                f"{name} {value:.1f} mm is within {margin:g} mm of the {threshold:g} mm threshold: the "
                "category turns on the model's measurement error; confirm the size on the images"
            )
    return notes


@dataclass(frozen=True)
class Assessment:
    category: Category
    rule: str
    nodule_type: str
    diameter_mm: float
    solid_diameter_mm: float | None
    plane: str
    solid_plane: str | None
    axial_diameter_mm: float
    elongation: float | None
    spiculation_score: float
    spiculated: bool  # the model's score at the threshold, or a reader's judgement when given
    suggest_4x_review: bool
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        c = self.category
        return {
            "version": VERSION,
            "category": c.code,
            "descriptor": c.descriptor,
            "management": c.management,
            "risk": c.risk,
            "rule": self.rule,
            "basis": {
                "nodule_type": self.nodule_type,
                "diameter_mm": self.diameter_mm,
                "solid_diameter_mm": self.solid_diameter_mm,
                "plane": self.plane,
                "solid_plane": self.solid_plane,
                "axial_diameter_mm": self.axial_diameter_mm,
                "elongation": self.elongation,
                "spiculation_score": shown_score(self.spiculation_score),
            },
            "suggest_4x_review": self.suggest_4x_review,
            "spiculation_threshold": SPICULATION_THRESHOLD,
            "alternatives": self.alternatives,
            "notes": self.notes,
            "not_assessed": list(NOT_ASSESSED),
        }


def weighs_solid_component(type_probabilities: dict[str, float]) -> bool:
    """Whether the solid component can matter: a part-solid nodule, or part-solid as a plausible alternative."""
    most = max(type_probabilities, key=lambda k: type_probabilities[k])
    return most == "part_solid" or type_probabilities.get("part_solid", 0.0) >= ALTERNATIVE_TYPE_MIN_P


def assess(
    type_probabilities: dict[str, float],
    diameter_mm: float,
    solid_diameter_mm: float,
    spiculation_score: float,
    shape: Sections | None = None,
    solid_shape: Sections | None = None,
    reader_spiculated: bool | None = None,
) -> Assessment:
    """Lung-RADS for the model's most probable type; other types it finds plausible are assessed alongside. The
    diameters are the model's axial ones; `shape` and `solid_shape` (the nodule's and its solid part's sections,
    when the map shows them) scale them to the section where each is largest. A reader's judgement of spiculation,
    when given, decides the 4X suggestion in place of the model's score."""
    nodule_type = max(type_probabilities, key=lambda k: type_probabilities[k])
    axial = round_mean_diameter(diameter_mm)
    axial_solid = min(round_mean_diameter(max(solid_diameter_mm, 0.0)), axial)
    plane = shape.largest if shape else "axial"
    total = round_mean_diameter(in_largest_section(diameter_mm, shape))
    scaled_solid, solid_plane = part_in_largest_section(max(solid_diameter_mm, 0.0), solid_shape, shape)
    solid = round_mean_diameter(scaled_solid)
    notes = []
    if solid > total:  # a solid nodule's "solid component" is the nodule itself; only part-solid ones need a word
        if nodule_type == "part_solid":
            notes.append(f"the predicted solid component ({solid:.1f} mm) exceeds the nodule ({total:.1f} mm); capped")
        solid = total
    code, rule = categorize(nodule_type, total, solid)
    if shape is not None:
        notes += _section_notes(nodule_type, shape, code, (axial, axial_solid), (total, solid, solid_plane))
    margins = {
        "mean diameter": BOUNDARY_MARGIN_MM if plane == "axial" else SECTION_MARGIN_MM,
        "solid component": BOUNDARY_MARGIN_MM if solid_plane == "axial" else SECTION_MARGIN_MM,
    }
    notes += _boundary_notes(nodule_type, {"mean diameter": total, "solid component": solid}, margins)
    alternatives = []
    for other, p in type_probabilities.items():
        if other != nodule_type and p >= ALTERNATIVE_TYPE_MIN_P:
            other_code, _ = categorize(other, total, solid)
            if other_code != code:
                alternatives.append({"nodule_type": other, "probability": round(float(p), 4), "category": other_code})
    spiculated = is_spiculated(spiculation_score) if reader_spiculated is None else reader_spiculated
    suggest_4x = spiculated and code in ("3", "4A", "4B")
    if suggest_4x:
        why = (
            f"spiculation score {shown_score(spiculation_score):g} >= {SPICULATION_THRESHOLD:g}"
            if reader_spiculated is None
            else "judged spiculated by a reader (clinical.spiculated)"
        )
        notes.append(
            f"{why}: a reader may upgrade this category 3 or 4 nodule to 4X (additional features that increase the "
            "suspicion of lung cancer)"
        )
    return Assessment(
        category=CATEGORIES[code],
        rule=rule,
        nodule_type=nodule_type,
        diameter_mm=total,
        solid_diameter_mm=solid if nodule_type == "part_solid" else None,
        plane=plane,
        solid_plane=solid_plane if nodule_type == "part_solid" else None,
        axial_diameter_mm=axial,
        elongation=round(shape.elongation, 2) if shape else None,
        spiculation_score=float(spiculation_score),
        spiculated=spiculated,
        suggest_4x_review=suggest_4x,
        alternatives=alternatives,
        notes=notes,
    )
