"""Phantom DICOM series: HU and geometry round-trip, well-formed CT files, deterministic UIDs, identifying fields."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from training.data.chest import render_chest
from training.data.dicom_series import IDENTIFYING_KEYWORDS, read_series_hu, series_uids, write_series


@pytest.fixture(scope="module")
def phantom():
    return render_chest(7, shape=(24, 96, 96), spacing=(2.5, 2.0, 2.0), n_nodules=2, diameter_range=(6.0, 15.0))


def headers(paths: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"signed": False, "transfer_syntax": ImplicitVRLittleEndian, "feet_first": True, "flip_x": True},
        {"transfer_syntax": RLELossless, "signed": False},
    ],
    ids=["signed-explicit", "unsigned-implicit-feet-first-flipped", "rle"],
)
def test_series_round_trips_hu_and_geometry(phantom, tmp_path, options):
    paths = write_series(phantom, tmp_path, **options)
    assert len(paths) == phantom.hu.shape[0] and all(p.parent == tmp_path for p in paths)
    hu, spacing, origin = read_series_hu(tmp_path)
    assert hu.dtype == np.float32
    np.testing.assert_array_equal(hu, phantom.hu)
    np.testing.assert_allclose(spacing, phantom.spacing, atol=1e-4)
    np.testing.assert_allclose(origin, phantom.origin_xyz_mm, atol=1e-4)
    for ds in headers(paths):
        assert ds.file_meta.TransferSyntaxUID == options.get("transfer_syntax", ExplicitVRLittleEndian)
        assert ds.PixelRepresentation == (0 if options.get("signed") is False else 1)
        assert float(ds.RescaleIntercept) == (-1024 if options.get("signed") is False else 0)


def test_files_are_well_formed_ct_slices(phantom, tmp_path):
    paths = write_series(phantom, tmp_path)
    datasets = headers(paths)  # in slice order, feet to head
    uids = series_uids(phantom.seed)
    sz, sy, sx = phantom.spacing
    for k, ds in enumerate(datasets):
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == CTImageStorage
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Modality == "CT" and ds.SamplesPerPixel == 1 and ds.PhotometricInterpretation == "MONOCHROME2"
        assert (ds.Rows, ds.Columns) == phantom.hu.shape[1:]
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 16, 15)
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == [sy, sx]
        assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == sz
        x, y, z = phantom.origin_xyz_mm
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], [x, y, z + k * sz], atol=1e-4)
        for keyword, uid in uids.items():
            assert ds[keyword].value == uid
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert [ds.InstanceNumber for ds in datasets] == list(range(len(datasets), 0, -1))  # head first: from the top
    assert all(ds.PatientPosition == "HFS" for ds in datasets)


def test_feet_first_counts_instances_from_the_feet(phantom, tmp_path):
    datasets = headers(write_series(phantom, tmp_path, feet_first=True, flip_x=True))
    assert [ds.InstanceNumber for ds in datasets] == list(range(1, len(datasets) + 1))
    assert all(ds.PatientPosition == "FFS" for ds in datasets)
    assert [float(v) for v in datasets[0].ImageOrientationPatient] == [-1, 0, 0, 0, 1, 0]


def test_file_names_do_not_give_the_slice_order(phantom, tmp_path):
    paths = write_series(phantom, tmp_path)
    z_by_name = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in sorted(paths)]
    assert z_by_name != sorted(z_by_name) and z_by_name != sorted(z_by_name, reverse=True)


def test_uids_and_names_are_deterministic_by_seed(phantom, tmp_path):
    first = write_series(phantom, tmp_path / "a")
    again = write_series(phantom, tmp_path / "b")
    other = write_series(render_chest(8, shape=(4, 64, 64), spacing=(2.5, 3.0, 3.0), n_nodules=0), tmp_path / "c")
    assert [p.name for p in first] == [p.name for p in again]
    assert [ds.SOPInstanceUID for ds in headers(first)] == [ds.SOPInstanceUID for ds in headers(again)]
    assert headers(first)[0].StudyInstanceUID != headers(other)[0].StudyInstanceUID
    assert write_series(phantom, tmp_path / "d", series_number=2)[0].name != first[0].name


def test_identifying_fields_are_present(phantom, tmp_path):
    paths = write_series(phantom, tmp_path, patient_name="DOE^JANE", patient_id="MRN-0042", accession_number="A9")
    for ds in headers(paths):
        for keyword in IDENTIFYING_KEYWORDS:
            assert keyword in ds and str(ds[keyword].value), keyword
        assert (str(ds.PatientName), ds.PatientID, ds.AccessionNumber) == ("DOE^JANE", "MRN-0042", "A9")
        assert ds.PatientBirthDate == "19580317" and ds.StudyDate == "20240102"
        assert ds.InstitutionName == "PHANTOM GENERAL HOSPITAL"


def test_the_readme_demo_series_command_writes_a_series_and_prints_its_centres(tmp_path):
    """`python -m training.data.dicom_series series --zip scan.zip`, as the README's CT upload examples use it."""
    import json
    import subprocess
    import sys
    import zipfile

    from tests.conftest import REPO

    command = ["-m", "training.data.dicom_series", str(tmp_path / "series"), "--zip", str(tmp_path / "s.zip")]
    done = subprocess.run(
        [sys.executable, *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    centers = json.loads(done.stdout)
    assert centers == [{"x": 61.4, "y": 10.8, "z": -47.3}, {"x": -61.5, "y": 43.5, "z": -95.3}]  # the README's
    files = sorted((tmp_path / "series").iterdir())
    assert len(files) == 80 and len(zipfile.ZipFile(tmp_path / "s.zip").namelist()) == 80
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert (first.Rows, first.Columns) == (512, 512)
