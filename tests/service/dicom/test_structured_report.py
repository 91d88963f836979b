"""A CT upload answered as a DICOM Comprehensive 3D SR (TID 1500): read back with pydicom and highdicom, every
value equal to the JSON answer, checked by dcmtk's dsrdump, and nothing of the patient in any log."""

from __future__ import annotations

import io
import json
import logging
import shutil
import subprocess
from collections.abc import Iterator

import highdicom as hd
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from service.dicom.structured_report import (
    LUNG_RADS_SIZE,
    NOTE,
    READERS_MALIGNANT,
    SCHEME,
    SOLID_DIAMETER,
    reader_notes,
)
from tests.service.api.conftest import make_client
from tests.service.dicom.builders import form_files, rewrite, small_chest, world_centers, write

DICOM = "application/dicom"
PATIENT = {"patient_name": "DOE^JANE^QX7", "patient_id": "PID-7731-QX7", "birth_date": "19010203"}


@pytest.fixture(scope="module")
def client(tiny_store) -> Iterator[TestClient]:
    with make_client(tiny_store, max_batch_size=8) as c:
        yield c


@pytest.fixture(scope="module")
def upload(tmp_path_factory):
    phantom = small_chest(5, n_nodules=2)
    paths = write(phantom, tmp_path_factory.mktemp("sr"), **PATIENT)
    centers = world_centers(phantom)
    clinical = {
        "age": 66,
        "sex": "male",
        "family_history": False,
        "emphysema": True,
        "nodule_count": len(centers),
        "upper_lobe": [True] * len(centers),
    }
    return paths, {"centers": json.dumps(centers), "clinical": json.dumps(clinical)}


@pytest.fixture(scope="module")
def answers(client, upload, tmp_path_factory):
    """The same upload answered as JSON and as an SR (the model is deterministic)."""
    paths, data = upload
    as_json = client.post("/predict", files=form_files(paths), data=data)
    as_sr = client.post("/predict", files=form_files(paths), data=data, headers={"Accept": DICOM})
    assert as_json.status_code == 200 and as_sr.status_code == 200, as_sr.text
    path = tmp_path_factory.mktemp("out") / "sr.dcm"
    path.write_bytes(as_sr.content)
    return as_json.json(), as_sr, path


def _groups(sr: hd.sr.Comprehensive3DSR) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    return sr.content.get_volumetric_roi_measurement_groups()


def _value(group, name, method: str | None = None) -> float:
    found = [m for m in group.get_measurements(name=name) if method is None or m.method.value == method]
    assert len(found) == 1, (name, method)
    return float(found[0].value)


def _code(group, name: str) -> str:
    (found,) = [e for e in group.get_qualitative_evaluations() if e.name.meaning == name]
    return found.value.value


def _notes(group) -> list[str]:
    """The group's notes for the reader, in order."""
    items = group[0].ContentSequence
    return [
        i.TextValue for i in items if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeValue == NOTE.value
    ]


def test_the_sr_carries_every_nodule_as_the_json_answer_does(answers, upload):
    body, response, path = answers
    assert response.headers["content-type"] == DICOM
    ds = pydicom.dcmread(path)
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ds.PreliminaryFlag == "PRELIMINARY" and ds.VerificationFlag == "UNVERIFIED"
    groups = _groups(sr)
    assert len(groups) == len(body["nodules"]) == 2
    for group, nodule in zip(groups, body["nodules"], strict=True):
        assert group.finding_type == codes.SCT.Nodule
        diameter = group.get_measurements(name=codes.SCT.Diameter)[0]
        assert diameter.unit == codes.UCUM.Millimeter and diameter.derivation == codes.SCT.Mean
        assert _value(group, codes.SCT.Diameter) == pytest.approx(nodule["measurements"]["diameter_mm"], abs=1e-6)
        assert _value(group, codes.SCT.Volume) == pytest.approx(nodule["measurements"]["volume_mm3"], abs=1e-6)
        solid_code = Code(SOLID_DIAMETER.value, SCHEME, SOLID_DIAMETER.meaning)
        types = nodule["nodule_type"]
        if max(types, key=types.get) == "part_solid":
            assert _value(group, solid_code) == pytest.approx(nodule["measurements"]["solid_diameter_mm"], abs=1e-6)
        else:  # a solid nodule's solid component is the nodule, a ground-glass one has none
            assert group.get_measurements(name=solid_code) == []
        size = _value(group, Code(LUNG_RADS_SIZE.value, SCHEME, LUNG_RADS_SIZE.meaning))
        assert size == pytest.approx(nodule["lung_rads"]["basis"]["diameter_mm"], abs=1e-6)
        readers = Code(READERS_MALIGNANT.value, SCHEME, READERS_MALIGNANT.meaning)
        p_model = _value(group, readers, "calibrated")
        assert p_model == pytest.approx(nodule["malignancy"]["malignant"], abs=1e-6)
        (p_brock,) = [float(m.value) for m in group.get_measurements(name=codes.DCM.ProbabilityOfCancer)]
        assert p_brock == pytest.approx(nodule["brock_probability"], abs=1e-6)
        category = nodule["lung_rads"]["category"]
        assert _code(group, "Lung-RADS v2022 category") == f"lung_rads_{category}"
        assert _code(group, "Nodule type") == max(types, key=types.get)
        assert _notes(group) == reader_notes(nodule)
        assert _notes(group)[0] == body["notice"] and _notes(group)[1].startswith(f"Lung-RADS {category}")
        (point,) = group.roi.graphic_data if group.roi.graphic_data.ndim == 2 else [group.roi.graphic_data]
        assert [float(v) for v in point] == pytest.approx([nodule["center"][k] for k in "xyz"], abs=1e-3)


def test_the_sr_references_the_source_series_copies_the_patient_and_names_the_model(answers, upload, tiny_store):
    _, _, path = answers
    paths, _ = upload
    source = pydicom.dcmread(paths[0], stop_before_pixels=True)
    ds = pydicom.dcmread(path)
    assert (ds.PatientName, ds.PatientID, ds.PatientBirthDate) == (
        source.PatientName,
        source.PatientID,
        source.PatientBirthDate,
    )
    assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.SeriesInstanceUID != source.SeriesInstanceUID
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == source.SeriesInstanceUID
    assert len(evidence.ReferencedSOPSequence) == len(paths)
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    observer = sr.content.get_observer_contexts(observer_type=codes.DCM.Device)[0]
    assert observer.observer_identifying_attributes.name == "res_mtnet"
    schemes = [item.CodingSchemeDesignator for item in ds.CodingSchemeIdentificationSequence]
    assert SCHEME in schemes


def test_dsrdump_reads_the_sr_without_warnings_or_errors(answers):
    _, _, path = answers
    if shutil.which("dsrdump") is None:
        pytest.skip("dcmtk's dsrdump is not installed (make dcmtk installs it)")
    done = subprocess.run(["dsrdump", "--log-level", "warn", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    assert "Imaging Measurement Report" in done.stdout and "Lung-RADS" in done.stdout


def test_a_patch_that_only_takes_an_sr_gets_406_and_one_that_also_takes_json_gets_json(client, hu_patch):
    from tests.service.api.conftest import npy

    files = {"patch": ("p.npy", npy(hu_patch))}
    refused = client.post("/predict", files=files, data={"spacing": "1,1,1"}, headers={"Accept": DICOM})
    assert refused.status_code == 406 and "CT series uploads only" in refused.json()["detail"]
    both = client.post(
        "/predict", files=files, data={"spacing": "1,1,1"}, headers={"Accept": f"{DICOM}, application/json;q=0.5"}
    )
    assert both.status_code == 200 and both.headers["content-type"] == "application/json"


def test_format_parameter_chooses_the_answer_over_the_accept_header(client, upload):
    paths, data = upload
    as_sr = client.post("/predict?format=sr", files=form_files(paths), data=data)
    assert as_sr.status_code == 200 and as_sr.headers["content-type"] == DICOM
    assert pydicom.dcmread(io.BytesIO(as_sr.content)).Modality == "SR"
    as_json = client.post("/predict?format=JSON", files=form_files(paths), data=data, headers={"Accept": DICOM})
    assert as_json.status_code == 200 and as_json.headers["content-type"] == "application/json"
    assert len(as_json.json()["nodules"]) == len(json.loads(data["centers"]))


@pytest.mark.parametrize("query", ["format=xml", "format=dicom"])
def test_an_unknown_format_is_refused_with_the_choices(client, upload, query):
    paths, data = upload
    r = client.post(f"/predict?{query}", files=form_files(paths), data=data)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "format must be json or sr" in r.json()["detail"]


def test_format_sr_for_a_patch_is_refused_and_format_json_answers(client, hu_patch):
    from tests.service.api.conftest import npy

    files = {"patch": ("p.npy", npy(hu_patch))}
    refused = client.post("/predict?format=sr", files=files, data={"spacing": "1,1,1"})
    assert refused.status_code == 422 and "CT series uploads only" in refused.json()["detail"]
    answered = client.post("/predict?format=json", files=files, data={"spacing": "1,1,1"}, headers={"Accept": DICOM})
    assert answered.status_code == 200 and answered.json()["nodules"]


def test_nothing_of_the_patient_is_logged_while_the_sr_is_built(client, upload, caplog):
    paths, data = upload
    header = pydicom.dcmread(paths[0], stop_before_pixels=True)
    secrets = [*PATIENT.values(), header.StudyInstanceUID, header.SeriesInstanceUID, header.SOPInstanceUID]
    caplog.set_level(logging.DEBUG)
    r = client.post("/predict", files=form_files(paths), data=data, headers={"Accept": DICOM})
    assert r.status_code == 200
    logged = caplog.text + "\n".join(f"{rec.getMessage()} {rec.args}" for rec in caplog.records)
    for secret in secrets:
        assert secret not in logged, secret


def test_the_sr_carries_what_dicom_requires_of_the_patient_and_nothing_of_the_scanner(client, tmp_path):
    left_out = {  # the scanner and institution (where and when), and what the patient and study modules allow
        "Manufacturer": "QXMAKER",
        "ManufacturerModelName": "QXMODEL",
        "SoftwareVersions": "QXSOFT",
        "DeviceSerialNumber": "QXSERIAL",
        "InstitutionName": "QX General Hospital",
        "InstitutionAddress": "1 QX Street",
        "InstitutionalDepartmentName": "QX Radiology",
        "StationName": "QXSTATION",
        "AcquisitionDate": "19990909",
        "PatientComments": "QXCOMMENT",
        "EthnicGroup": "QXETHNIC",
        "PatientAge": "077Y",
        "PatientWeight": "77.7",
        "AdditionalPatientHistory": "QXHISTORY",
        "StudyDescription": "QXSTUDYDESC",
        "ClinicalTrialSubjectID": "QXTRIALSUBJECT",
    }
    kept = {"IssuerOfPatientID": "QXISSUER", "PatientIdentityRemoved": "NO"}

    def mark(ds: pydicom.Dataset, _: int) -> None:
        for keyword, value in {**left_out, **kept}.items():
            setattr(ds, keyword, value)
        other = pydicom.Dataset()
        other.PatientID, other.IssuerOfPatientID = "QXOTHERID", "QXOTHERISSUER"
        ds.OtherPatientIDsSequence = [other]

    phantom = small_chest(7, n_nodules=1)
    paths = rewrite(write(phantom, tmp_path, **PATIENT), mark)
    r = client.post(
        "/predict",
        files=form_files(paths),
        data={"centers": json.dumps(world_centers(phantom))},
        headers={"Accept": DICOM},
    )
    assert r.status_code == 200, r.text
    ds = pydicom.dcmread(io.BytesIO(r.content))
    text = "\n".join(str(element.value) for element in ds.iterall())
    for value in [*left_out.values(), "QXOTHERID", "QXOTHERISSUER"]:
        assert value not in text, value
    assert "OtherPatientIDsSequence" not in ds
    assert ds.PatientName == PATIENT["patient_name"] and ds.PatientID == PATIENT["patient_id"]
    assert ds.PatientBirthDate == PATIENT["birth_date"]
    assert all(ds.get(keyword) == value for keyword, value in kept.items())
    assert ds.Manufacturer == "Res-MTNet Serve"  # the report's own equipment


def test_a_name_that_does_not_decode_in_its_character_set_gets_no_altered_sr(client, tmp_path):
    def undecodable(ds: pydicom.Dataset, _: int) -> None:
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.add_new(0x00100010, "PN", b"QXBAD\xff\xfe^QXGIVEN")  # not UTF-8

    phantom = small_chest(7, n_nodules=1)
    paths = rewrite(write(phantom, tmp_path, **PATIENT), undecodable)
    data = {"centers": json.dumps(world_centers(phantom))}
    r = client.post("/predict", files=form_files(paths), data=data, headers={"Accept": DICOM})
    assert r.status_code == 422 and "PatientName does not decode in its declared character set" in r.json()["detail"]
    assert "QXBAD" not in r.text
    assert client.post("/predict", files=form_files(paths), data=data).status_code == 200  # JSON still answers


def test_a_part_solid_nodule_carries_its_solid_component_and_others_none():
    from service.dicom.structured_report import _measurements

    algorithm = hd.sr.AlgorithmIdentification(name="res_mtnet", version="test")
    solid_code = Code(SOLID_DIAMETER.value, SCHEME, SOLID_DIAMETER.meaning)
    measured = {"diameter_mm": 12.0, "volume_mm3": 900.0, "solid_diameter_mm": 5.5}
    for kind, carried in (("part_solid", [5.5]), ("solid", []), ("ground_glass", [])):
        types = {"solid": 0.1, "part_solid": 0.1, "ground_glass": 0.1, kind: 0.8}
        nodule = {"measurements": measured, "nodule_type": types, "malignancy": {"malignant": 0.3}}
        values = [m.value for m in _measurements(nodule, algorithm) if m.name == solid_code]
        assert values == carried, kind
