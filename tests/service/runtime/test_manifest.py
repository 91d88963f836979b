import json

import pytest
from pydantic import ValidationError

from service.runtime.manifest import MANIFEST_FILE, Manifest
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
