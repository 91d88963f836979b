import json

import pytest
from pydantic import ValidationError

from service.runtime.manifest import MANIFEST_FILE, Manifest, TensorSpec
from tests.conftest import TEST_VERSION


def _doc(tiny_store):
    return json.loads((tiny_store / "res_mtnet" / TEST_VERSION / MANIFEST_FILE).read_text())


def test_a_manifest_without_calibration_is_still_valid(tiny_store):
    doc = _doc(tiny_store)
    doc.pop("calibration", None)
    assert Manifest.model_validate(doc).calibration is None


def test_a_calibration_must_name_a_two_label_output_and_its_positive_label(tiny_store):
    doc = _doc(tiny_store)
    ok = Manifest.model_validate({**doc, "calibration": {"temperature": 1.2}})
    assert ok.calibration is not None and ok.calibration.output == "malignancy"
    for bad in (
        {"temperature": 1.2, "output": "nodule_type"},
        {"temperature": 1.2, "positive_label": "cancer"},
        {"temperature": 0},
    ):
        with pytest.raises(ValidationError):
            Manifest.model_validate({**doc, "calibration": bad})


def test_labels_name_the_axis_after_the_batch_axis_and_only_rows_of_labels_are_answered():
    head = TensorSpec(name="measurements", shape=[-1, 3], labels=["a", "b", "c"], units=["mm", "mm3", "mm"])
    grid = TensorSpec(name="occupancy", shape=[-1, 2, 16, 16, 16], labels=["nodule", "solid_part"])
    assert head.per_label and not grid.per_label
    assert not TensorSpec(name="x", shape=[-1, 3]).per_label
    with pytest.raises(ValidationError, match="occupancy: 16 labels for an axis of 2 after the batch axis"):
        TensorSpec(name="occupancy", shape=[-1, 2, 16, 16, 16], labels=[str(i) for i in range(16)])
