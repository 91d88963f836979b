import pytest

from service.clinical.report import clinical_gaps
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
