"""One nodule's clinical fields from its row of model outputs: calibrated malignancy (the raw kept, labelled),
its spread over flipped views, Lung-RADS v2022 and, given the patient's factors, the Brock probability."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.clinical.brock import PatientFactors, brock_probability
from service.clinical.calibration import calibrated_positive, calibrated_row
from service.clinical.features import SPICULATION_THRESHOLD
from service.clinical.lung_rads import assess, weighs_solid_component
from service.clinical.sections import TYPICAL_LONG_OVER_MEAN, Sections, longest_diameter, sections
from service.runtime.manifest import Manifest


def _r(x: float) -> float:
    return round(float(x), 6)


@dataclass(frozen=True)
class OutputIndex:
    """Where the rules find their inputs among the model's outputs, by output name and label (from the manifest)."""

    malignancy: int
    malignancy_labels: list[str]
    positive: int  # the malignancy label P(malignant) reads: the calibration's positive label, else "malignant"
    nodule_type: int
    type_labels: list[str]
    measurements: int
    diameter: int
    solid_diameter: int
    attributes: int
    spiculation: int
    occupancy: int | None = None  # the occupancy map, when the model has one with nodule and solid-part channels
    occupancy_voxel_mm: float = 0.0

    @classmethod
    def of(cls, manifest: Manifest) -> OutputIndex | None:
        """None for a model without the heads and labels the clinical rules read."""
        names = [o.name for o in manifest.outputs]
        try:
            mal, typ, mea, att = (names.index(n) for n in ("malignancy", "nodule_type", "measurements", "attributes"))
            labels = [manifest.outputs[i].labels or [] for i in (mal, typ, mea, att)]
            positive = labels[0].index(manifest.calibration.positive_label if manifest.calibration else "malignant")
            occupancy, voxel_mm = _occupancy_output(manifest)
            return cls(
                malignancy=mal,
                malignancy_labels=labels[0],
                positive=positive,
                nodule_type=typ,
                type_labels=labels[1],
                measurements=mea,
                diameter=labels[2].index("diameter_mm"),
                solid_diameter=labels[2].index("solid_diameter_mm"),
                attributes=att,
                spiculation=labels[3].index("spiculation"),
                occupancy=occupancy,
                occupancy_voxel_mm=voxel_mm,
            )
        except ValueError:
            return None

    def shapes(self, outputs: Sequence[np.ndarray], with_solid_part: bool) -> tuple[Sections | None, Sections | None]:
        """The nodule's and (when asked) its solid part's sections, from this row's occupancy map (None where there
        is none)."""
        if self.occupancy is None:
            return None, None
        nodule, solid_part = outputs[self.occupancy]
        solid = sections(solid_part, self.occupancy_voxel_mm) if with_solid_part else None
        return sections(nodule, self.occupancy_voxel_mm), solid

    def p_malignant(self, outputs: Sequence[np.ndarray], manifest: Manifest) -> float:
        """Calibrated P(malignant) of one row of outputs."""
        return calibrated_positive(float(outputs[self.malignancy][self.positive]), manifest.calibration)


def _occupancy_output(manifest: Manifest) -> tuple[int | None, float]:
    """Index of the (N, 2, d, d, d) occupancy output and its voxel size in mm, or (None, 0) when there is none."""
    for i, spec in enumerate(manifest.outputs):
        cube = len(spec.shape) == 5 and spec.shape[2] == spec.shape[3] == spec.shape[4]
        if spec.name == "occupancy" and spec.labels == ["nodule", "solid_part"] and cube:
            d = manifest.preprocessing.patch_size * manifest.preprocessing.spacing_mm
            return i, d / spec.shape[-1]
    return None, 0.0


def clinical_gaps(manifest: Manifest) -> list[str]:
    """What the clinical rules cannot read from this model, one sentence each (none: everything), for the log at
    startup: a model without them is still served, with fewer clinical fields."""
    index = OutputIndex.of(manifest)
    if index is None:
        return [
            "no clinical fields: the rules need the outputs malignancy (with the positive label the calibration "
            "names, or malignant), nodule_type, measurements (diameter_mm, solid_diameter_mm) and attributes "
            "(spiculation) with those labels"
        ]
    if index.occupancy is not None:
        return []
    if any(o.name == "occupancy" for o in manifest.outputs):
        return [
            "Lung-RADS sizes stay in the axial section: the occupancy output is not of shape (N, 2, d, d, d) "
            "with labels nodule, solid_part"
        ]
    return ["Lung-RADS sizes stay in the axial section: the model has no occupancy output"]


def _measurements(manifest: Manifest, index: OutputIndex, outputs: Sequence[np.ndarray]) -> dict[str, float]:
    """The measurements head's values with the solid component within [0, the nodule's diameter]: a solid nodule's
    solid component is the nodule itself, and the head's two estimates may cross by a fraction of a millimetre."""
    row = outputs[index.measurements]
    shown = {k: _r(v) for k, v in zip(manifest.outputs[index.measurements].labels or [], row, strict=True)}
    diameter = shown["diameter_mm"]
    shown["solid_diameter_mm"] = min(max(shown["solid_diameter_mm"], 0.0), max(diameter, 0.0))
    return shown


def _spiculation_note(manifest: Manifest) -> str:
    """How far the model's spiculation flag can be trusted, from the model's own evaluation where it has one."""
    flag = manifest.evaluation.get("spiculation_flag") or {}
    found = ""
    if {"flagged_reader_score_3_or_more", "reader_score_3_or_more"} <= flag.keys():
        found = (
            f" On held-out LIDC nodules it flagged {flag['flagged_reader_score_3_or_more']} of the "
            f"{flag['reader_score_3_or_more']} that readers scored 3 or more."
        )
    return (
        f"the model's flag (its spiculation score >= {SPICULATION_THRESHOLD:g}) misses many spiculated nodules."
        f"{found} Send clinical.spiculated to give Brock a reader's judgement."
    )


def clinical_fields(
    manifest: Manifest,
    index: OutputIndex,
    outputs: Sequence[np.ndarray],
    patient: PatientFactors | None,
    uncertainty: dict[str, Any] | None,
) -> dict[str, Any]:
    """The fields this nodule's entry gains; `malignancy` becomes the calibrated probabilities."""
    raw = outputs[index.malignancy]
    calibrated = calibrated_row([float(v) for v in raw], index.malignancy_labels, manifest.calibration)
    types = {k: float(v) for k, v in zip(index.type_labels, outputs[index.nodule_type], strict=True)}
    diameter = float(outputs[index.measurements][index.diameter])
    solid = float(outputs[index.measurements][index.solid_diameter])
    spiculation = float(outputs[index.attributes][index.spiculation])
    shape, solid_shape = index.shapes(outputs, weighs_solid_component(types))
    reader_spiculated = patient.spiculated if patient is not None else None
    lung_rads = assess(types, diameter, solid, spiculation, shape, solid_shape, reader_spiculated)
    fields: dict[str, Any] = {
        "measurements": _measurements(manifest, index, outputs),
        "malignancy": {k: _r(v) for k, v in zip(index.malignancy_labels, calibrated, strict=True)},
        "malignancy_raw": {k: _r(v) for k, v in zip(index.malignancy_labels, raw, strict=True)},
        "malignancy_calibration": (
            {"method": manifest.calibration.method, "temperature": manifest.calibration.temperature}
            if manifest.calibration
            else None
        ),
        "malignancy_uncertainty": uncertainty,
        "lung_rads": lung_rads.as_dict(),
        "brock_probability": None,
        "brock_inputs": None,
    }
    if patient is not None:
        by_model, spiculated = reader_spiculated is None, lung_rads.spiculated
        size = round(longest_diameter(lung_rads.diameter_mm, shape, lung_rads.plane), 1)
        fields["brock_probability"] = _r(brock_probability(patient, size, lung_rads.nodule_type, spiculated))
        fields["brock_inputs"] = {
            "size_mm": size,
            "size_definition": (
                "estimated longest diameter, as PanCan measured: the Lung-RADS mean diameter "
                f"({lung_rads.diameter_mm:.1f} mm, {lung_rads.plane} section) times the predicted shape's long axis "
                f"over its mean diameter there, at least {TYPICAL_LONG_OVER_MEAN:g} (typical of LIDC nodules)"
            ),
            "nodule_type": lung_rads.nodule_type,
            "spiculated": spiculated,
            "spiculated_from": "model" if by_model else "clinical",
            "spiculation_note": _spiculation_note(manifest) if by_model else None,
            "spiculation_threshold": SPICULATION_THRESHOLD,
            "age": patient.age,
            "female": patient.female,
            "family_history": patient.family_history,
            "emphysema": patient.emphysema,
            "nodule_count": patient.nodule_count,
            "upper_lobe": patient.upper_lobe,
        }
    return fields
