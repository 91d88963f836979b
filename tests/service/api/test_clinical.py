"""Clinical fields in POST /predict answers: calibrated malignancy beside the raw, Lung-RADS, Brock from the
`clinical` member (form field or JSON), uncertainty over flipped views on request, for patches and CT series."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from service.api.schemas import PredictResponse
from service.clinical.brock import PatientFactors, brock_probability
from service.clinical.calibration import calibrated_positive
from service.clinical.sections import ELONGATED
from service.runtime.manifest import Manifest
from tests.conftest import DEFAULT_STORE, DEFAULT_VERSION, TEST_VERSION
from tests.service.api.conftest import make_client, npy
from tests.service.api.test_predict import assert_problem, post_npy
from tests.service.clinical.test_sections import ellipsoid
from tests.service.dicom.builders import form_files, small_chest, world_centers, write
from training.data.phantoms import lung_background, paint_nodule, scanner

CLINICAL = {
    "age": 68,
    "sex": "female",
    "family_history": True,
    "emphysema": False,
    "nodule_count": 2,
    "upper_lobe": True,
}


def test_every_nodule_gets_lung_rads_and_labelled_raw_probabilities(client, hu_patch):
    r = post_npy(client, hu_patch)
    assert r.status_code == 200, r.text
    (nodule,) = PredictResponse.model_validate(r.json()).model_dump()["nodules"]
    rads = nodule["lung_rads"]
    assert "v2022" in rads["version"] and rads["category"] in {"2", "3", "4A", "4B"}
    assert rads["management"] and rads["risk"] and rads["not_assessed"]
    assert rads["basis"]["axial_diameter_mm"] == round(nodule["measurements"]["diameter_mm"], 1)
    assert rads["basis"]["diameter_mm"] >= rads["basis"]["axial_diameter_mm"]
    assert "occupancy" not in nodule  # the map is read by the service, not answered
    # the tiny test model has no calibration: malignancy is the raw probability, said so
    assert nodule["malignancy_calibration"] is None and nodule["malignancy"] == nodule["malignancy_raw"]
    assert nodule["brock_probability"] is None and nodule["malignancy_uncertainty"] is None


def test_the_manifests_calibration_is_applied_and_the_raw_kept(store_copy, hu_patch):
    folder = store_copy / "res_mtnet" / TEST_VERSION
    doc = Manifest.read(folder).model_dump(mode="json")
    Manifest.model_validate({**doc, "calibration": {"temperature": 3.0, "fitted_on": "test"}}).write(folder)
    with make_client(store_copy) as c:
        nodule = post_npy(c, hu_patch).json()["nodules"][0]
    raw = nodule["malignancy_raw"]["malignant"]
    assert nodule["malignancy"]["malignant"] == pytest.approx(
        calibrated_positive(raw, Manifest.read(folder).calibration), abs=2e-6
    )
    assert nodule["malignancy"]["malignant"] != pytest.approx(raw, abs=1e-4)
    assert nodule["malignancy_calibration"] == {"method": "temperature", "temperature": 3.0}


def _brock_from(nodule, patient: PatientFactors) -> float:
    """Brock recomputed from what the answer shows: its longest-diameter estimate is at least 1.1 times the
    Lung-RADS mean diameter."""
    basis, size = nodule["lung_rads"]["basis"], nodule["brock_inputs"]["size_mm"]
    assert size >= round(basis["diameter_mm"] * 1.1, 1) - 0.05
    spiculated = nodule["attributes"]["spiculation"] >= nodule["lung_rads"]["spiculation_threshold"]
    return brock_probability(patient, size, basis["nodule_type"], spiculated)


def test_brock_from_a_clinical_form_field_or_json_member(client, hu_patch):
    patient = PatientFactors(68, True, True, False, 2, True)
    form = post_npy(client, hu_patch, clinical=json.dumps(CLINICAL)).json()["nodules"][0]
    assert form["brock_probability"] == pytest.approx(_brock_from(form, patient), abs=1e-6)
    assert form["brock_inputs"]["upper_lobe"] is True and form["brock_inputs"]["nodule_count"] == 2
    small = hu_patch[10:30, 10:30, 10:30]
    body = {"patch": small.tolist(), "spacing": [1, 1, 1], "clinical": {**CLINICAL, "upper_lobe": [False]}}
    r = client.post("/predict", json=body)
    assert r.status_code == 200, r.text
    nodule = PredictResponse.model_validate(r.json()).nodules[0].model_dump()
    lower = PatientFactors(68, True, True, False, 2, False)
    assert nodule["brock_probability"] == pytest.approx(_brock_from(nodule, lower), abs=1e-6)


@pytest.mark.parametrize(
    ("clinical", "fragment"),
    [
        ({**CLINICAL, "age": 12}, "clinical: age 12 is outside 18-110 years"),
        ({**CLINICAL, "sex": "x"}, 'clinical: sex must be "female" or "male"'),
        ({k: v for k, v in CLINICAL.items() if k != "emphysema"}, "clinical: missing emphysema"),
        ({**CLINICAL, "upper_lobe": [True, False]}, "clinical: upper_lobe has 2 value(s) for 1 nodule centre(s)"),
    ],
)
def test_bad_clinical_inputs_get_a_precise_422(client, hu_patch, clinical, fragment):
    assert_problem(post_npy(client, hu_patch, clinical=json.dumps(clinical)), 422, fragment)
    body = {"patch": hu_patch[:8, :8, :8].tolist(), "spacing": [1, 1, 1], "clinical": clinical}
    assert_problem(client.post("/predict", json=body), 422, fragment)


def test_uncertainty_on_request_runs_every_view_in_one_batch(tiny_store, hu_patch):
    with make_client(tiny_store, max_batch_size=8, workers=1) as c:  # one session: one batch of 8 (two would share)
        plain = post_npy(c, hu_patch).json()["nodules"][0]
        r = c.post("/predict?uncertainty=true", files={"patch": ("p.npy", npy(hu_patch))}, data={"spacing": "1,1,1"})
        assert r.status_code == 200, r.text
        nodule = r.json()["nodules"][0]
        batches = c.get("/metrics").text
    spread = nodule["malignancy_uncertainty"]
    assert spread["views"] == 8 and spread["min"] <= nodule["malignancy"]["malignant"] <= spread["max"]
    assert spread["std"] >= 0 and "flips" in spread["method"]
    assert nodule["malignancy"] == plain["malignancy"]  # the headline value is the unflipped view's
    assert (
        'resmtnet_batch_size_bucket{le="8.0"} 2.0' in batches and 'resmtnet_batch_size_bucket{le="4.0"} 1.0' in batches
    )


@pytest.mark.parametrize(
    ("setting", "query", "views", "warned"),
    [
        ("request", "", None, False),
        ("always", "", 8, False),
        ("always", "?uncertainty=false", None, False),
        ("off", "?uncertainty=true", None, True),
    ],
)
def test_the_uncertainty_setting(tiny_store, hu_patch, setting, query, views, warned):
    with make_client(tiny_store, uncertainty=setting, uncertainty_views=8, max_batch_size=8) as c:
        r = c.post(f"/predict{query}", files={"patch": ("p.npy", npy(hu_patch))}, data={"spacing": "1,1,1"})
    nodule = r.json()["nodules"][0]
    assert (nodule["malignancy_uncertainty"] or {}).get("views") == views
    assert any("RESMTNET_UNCERTAINTY=off" in w for w in nodule["warnings"]) is warned


def test_an_unreadable_uncertainty_parameter_is_a_422(client, hu_patch):
    r = client.post("/predict?uncertainty=maybe", files={"patch": ("p.npy", npy(hu_patch))}, data={"spacing": "1,1,1"})
    assert_problem(r, 422, "uncertainty must be true or false")


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("uncertainity=true", "unknown query parameter 'uncertainity'; /predict takes uncertainty and format"),
        ("Uncertainty=true", "unknown query parameter 'Uncertainty'"),
        ("uncertainty=true&uncertainty=false", "query parameter uncertainty is given 2 times"),
        ("format=sr&format=json", "query parameter format is given 2 times"),
    ],
)
def test_a_misspelt_or_repeated_query_parameter_is_a_422_not_a_default(client, hu_patch, query, fragment):
    r = client.post(f"/predict?{query}", files={"patch": ("p.npy", npy(hu_patch))}, data={"spacing": "1,1,1"})
    assert_problem(r, 422, fragment)


@pytest.fixture(scope="module")
def chest_files(tmp_path_factory):
    phantom = small_chest(0)
    return phantom, write(phantom, tmp_path_factory.mktemp("series"))


def test_a_series_gets_brock_per_nodule_with_upper_lobe_per_centre(client, chest_files):
    phantom, paths = chest_files
    centers = [world_centers(phantom)[0]] * 2
    clinical = {**CLINICAL, "upper_lobe": [True, False]}
    data = {"centers": json.dumps(centers), "clinical": json.dumps(clinical)}
    r = client.post("/predict?uncertainty=true", files=form_files(paths), data=data)
    assert r.status_code == 200, r.text
    upper, lower = PredictResponse.model_validate(r.json()).model_dump()["nodules"]
    assert upper["brock_inputs"]["upper_lobe"] and not lower["brock_inputs"]["upper_lobe"]
    assert upper["brock_probability"] > lower["brock_probability"]
    assert upper["malignancy_uncertainty"]["views"] == 8 and upper["lung_rads"]["category"]
    bad = {"centers": json.dumps(centers), "clinical": json.dumps(CLINICAL)}
    assert_problem(client.post("/predict", files=form_files(paths), data=bad), 422, "upper_lobe must be a list of 2")


@pytest.mark.parametrize("long_axis", [0, 2])  # along z (a vertical section shows it) or along x (the axial one does)
def test_the_default_model_sizes_an_elongated_nodule_in_its_largest_section_and_flags_it(long_axis):
    """A 6 x 6 x 16 mm solid cigar in noisy lung, 11 mm in the section Lung-RADS v2022 measures it in (category 4A).
    Along z its axial cut shows much less, and the largest section restores the category. Along x the diameter head
    under-measures it within the axial plane (a known limit): the answer must then say so and ask for a measurement."""
    spacing = (1.0, 0.7, 0.7)
    rng = np.random.default_rng(11)
    shape = (48, 72, 72)
    hu = lung_background(shape, spacing, rng)
    centre = tuple((n - 1) * s / 2 for n, s in zip(shape, spacing, strict=True))
    semi_axes = [3.0, 3.0, 3.0]
    semi_axes[long_axis] = 8.0
    paint_nodule(hu, spacing, dataclasses.replace(ellipsoid(semi_axes), center_mm=centre))
    hu = scanner(hu, spacing, rng)
    with make_client(DEFAULT_STORE, model_version=DEFAULT_VERSION, intra_op_threads=2) as c:
        r = post_npy(c, hu, spacing=",".join(map(str, spacing)), clinical=json.dumps(CLINICAL))
    assert r.status_code == 200, r.text
    rads = r.json()["nodules"][0]["lung_rads"]
    basis = rads["basis"]
    brock_size = r.json()["nodules"][0]["brock_inputs"]["size_mm"]
    # Brock's longest diameter (16 mm true) reads the long axis in the section the size was taken in: more than
    # the typical 1.1 times its mean diameter there
    assert basis["diameter_mm"] * 1.25 < brock_size <= 16.5
    assert basis["nodule_type"] == "solid" and basis["elongation"] >= ELONGATED
    (flag,) = [n for n in rads["notes"] if "times longer than wide" in n]
    assert "measure the long and short axes by hand" in flag
    if long_axis == 0:
        assert basis["plane"] in ("coronal", "sagittal") and basis["axial_diameter_mm"] < 8.0
        assert 8.0 <= basis["diameter_mm"] < 15.0 and rads["category"] == "4A"
        assert any("would give category 3" in n or "would give category 2" in n for n in rads["notes"])
    else:
        assert basis["plane"] == "axial" and basis["diameter_mm"] == basis["axial_diameter_mm"]
