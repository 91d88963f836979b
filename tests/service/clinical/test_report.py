from dataclasses import replace

import numpy as np
import pytest

from service.clinical.brock import PatientFactors, brock_probability
from service.clinical.report import OutputIndex, clinical_fields, clinical_gaps
from service.runtime.manifest import Manifest
from tests.conftest import DEFAULT_VERSION, REPO

MANIFEST = REPO / "model_store" / "res_mtnet" / DEFAULT_VERSION / "manifest.json"


@pytest.fixture
def manifest() -> Manifest:
    return Manifest.model_validate_json(MANIFEST.read_text())


def with_outputs(manifest: Manifest, outputs: list) -> Manifest:
    return manifest.model_copy(update={"outputs": outputs})


def test_the_default_model_gives_the_rules_everything_they_read(manifest):
    assert clinical_gaps(manifest) == []


def test_a_model_without_an_occupancy_map_keeps_axial_sizes(manifest):
    outputs = [o for o in manifest.outputs if o.name != "occupancy"]
    assert clinical_gaps(with_outputs(manifest, outputs)) == [
        "Lung-RADS sizes stay in the axial section: the model has no occupancy output"
    ]


def test_an_occupancy_map_of_another_form_is_named(manifest):
    outputs = [
        o.model_copy(update={"labels": ["solid_part", "nodule"]}) if o.name == "occupancy" else o
        for o in manifest.outputs
    ]
    (gap,) = clinical_gaps(with_outputs(manifest, outputs))
    assert "occupancy output is not of shape (N, 2, d, d, d) with labels nodule, solid_part" in gap


def test_a_model_without_the_clinical_heads_is_named(manifest):
    outputs = [o for o in manifest.outputs if o.name != "attributes"]
    (gap,) = clinical_gaps(with_outputs(manifest, outputs))
    assert gap.startswith("no clinical fields")


def test_a_malignancy_output_without_the_positive_label_gets_no_clinical_fields(manifest):
    """p_malignant reads that label: without it, no clinical fields, rather than a failure at request time."""
    outputs = [
        o.model_copy(update={"labels": ["low", "high"]}) if o.name == "malignancy" else o for o in manifest.outputs
    ]
    (gap,) = clinical_gaps(with_outputs(manifest, outputs))
    assert gap.startswith("no clinical fields")


def test_an_occupancy_map_that_is_not_a_cube_is_named(manifest):
    outputs = [
        o.model_copy(update={"shape": [-1, 2, 16, 16, 8]}) if o.name == "occupancy" else o for o in manifest.outputs
    ]
    (gap,) = clinical_gaps(with_outputs(manifest, outputs))
    assert "occupancy output is not of shape (N, 2, d, d, d)" in gap


def outputs_row(spiculation: float, diameter: float = 9.0, solid: float = 9.0) -> list[np.ndarray]:
    """One row of the default model's outputs: a solid nodule with the given sizes and spiculation score."""
    return [
        np.array([0.8, 0.2], np.float32),
        np.array([0.9, 0.05, 0.05], np.float32),
        np.array([diameter, 380.0, solid], np.float32),
        np.array([4, 1, 4, 4, spiculation, 5], np.float32),
        np.zeros((2, 16, 16, 16), np.float32),
    ]


PATIENT = PatientFactors(age=64, female=True, family_history=False, emphysema=True, nodule_count=1, upper_lobe=True)


@pytest.mark.parametrize("score", [2.4999998, 2.4996, 2.5, 2.4994, 2.6])
def test_spiculated_follows_the_score_the_answer_shows(manifest, score):
    """A reader comparing the shown score with the threshold gets the flag, the 4X suggestion and Brock given."""
    index = OutputIndex.of(manifest)
    fields = clinical_fields(manifest, index, outputs_row(np.float32(score)), PATIENT, None)
    shown = fields["lung_rads"]["basis"]["spiculation_score"]
    spiculated = shown >= fields["lung_rads"]["spiculation_threshold"]
    assert fields["brock_inputs"]["spiculated"] is spiculated
    assert fields["lung_rads"]["suggest_4x_review"] is spiculated  # 9 mm solid: category 4A
    size, kind = fields["brock_inputs"]["size_mm"], fields["brock_inputs"]["nodule_type"]
    assert fields["brock_probability"] == round(brock_probability(PATIENT, size, kind, spiculated), 6)


@pytest.mark.parametrize(("diameter", "solid", "shown"), [(9.74, 9.84, 9.74), (9.0, 5.5, 5.5), (6.0, -0.2, 0.0)])
def test_the_solid_component_is_never_larger_than_the_nodule_nor_negative(manifest, diameter, solid, shown):
    fields = clinical_fields(manifest, OutputIndex.of(manifest), outputs_row(1.0, diameter, solid), None, None)
    assert fields["measurements"]["solid_diameter_mm"] == pytest.approx(shown, abs=1e-5)
    assert fields["measurements"]["diameter_mm"] == pytest.approx(diameter, abs=1e-5)


def test_brock_takes_a_readers_spiculation_over_the_models_flag(manifest):
    index = OutputIndex.of(manifest)
    row = outputs_row(1.2)  # the model sees no spiculation
    by_model = clinical_fields(manifest, index, row, PATIENT, None)
    by_reader = clinical_fields(manifest, index, row, replace(PATIENT, spiculated=True), None)
    assert by_model["brock_inputs"]["spiculated"] is False and by_model["brock_inputs"]["spiculated_from"] == "model"
    flag = manifest.evaluation["spiculation_flag"]
    counts = f"{flag['flagged_reader_score_3_or_more']} of the {flag['reader_score_3_or_more']}"
    assert counts in by_model["brock_inputs"]["spiculation_note"]
    assert (
        by_reader["brock_inputs"]["spiculated"] is True and by_reader["brock_inputs"]["spiculated_from"] == "clinical"
    )
    assert by_reader["brock_inputs"]["spiculation_note"] is None
    size, kind = by_reader["brock_inputs"]["size_mm"], by_reader["brock_inputs"]["nodule_type"]
    assert by_reader["brock_probability"] == round(brock_probability(PATIENT, size, kind, True), 6)
    assert by_reader["brock_probability"] > by_model["brock_probability"]
    assert by_reader["lung_rads"]["category"] == by_model["lung_rads"]["category"] == "4A"  # 9 mm solid
    assert by_reader["lung_rads"]["suggest_4x_review"] and not by_model["lung_rads"]["suggest_4x_review"]
    assert any("judged spiculated by a reader" in n for n in by_reader["lung_rads"]["notes"])
    not_by_reader = clinical_fields(manifest, index, outputs_row(2.8), replace(PATIENT, spiculated=False), None)
    assert not not_by_reader["lung_rads"]["suggest_4x_review"]  # the reader's judgement over a high score
