"""JSON integers too large for a float (about 310 digits and more) are refused as bad values, never a 500."""

import json

import pytest

from service.api.v2_tensors import _timeout_s
from service.clinical.inputs import parse_clinical
from service.dicom.centers import parse_centers
from service.errors import UnusableInput

HUGE = 10**400


def test_patch_center_too_large_for_a_float_is_422(client, hu_patch):
    body = {"patch": hu_patch[::4, ::4, ::4].tolist(), "spacing": [4, 4, 4], "center": {"i": HUGE, "j": 1, "k": 1}}
    r = client.post("/predict", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 422 and "center.i must be a finite number" in r.json()["detail"]


def test_clinical_age_too_large_for_a_float_is_422(client, hu_patch):
    clinical = {"age": HUGE, "sex": "female", "family_history": False, "emphysema": False, "nodule_count": 1}
    clinical["upper_lobe"] = [True]
    body = {"patch": hu_patch[::4, ::4, ::4].tolist(), "spacing": [4, 4, 4], "clinical": clinical}
    r = client.post("/predict", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 422 and "age must be a number" in r.json()["detail"]
    with pytest.raises(UnusableInput, match="outside 1-"):
        parse_clinical({**clinical, "age": 60, "nodule_count": HUGE}, 1)


def test_series_center_too_large_for_a_float_is_422():
    with pytest.raises(UnusableInput, match=r"centers\[0\].x must be a finite number"):
        parse_centers(json.dumps([{"x": HUGE, "y": 0, "z": 0}]), max_nodules=4)


def test_open_inference_timeout_too_large_is_capped():
    assert _timeout_s({"parameters": {"timeout": HUGE}}) == 24 * 3600
