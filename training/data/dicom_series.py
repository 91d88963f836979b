"""A ChestPhantom as a DICOM CT series, one CT Image Storage file per slice, and a reader back to HU for tests.

UIDs are deterministic from the phantom's seed and the series number. File names are random-looking, so a reader
has to order the slices by geometry. Identifying patient and study fields are filled in (IDENTIFYING_KEYWORDS) so
that tests can check they never leak out of the service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from training.data.chest import HU_RANGE, ChestPhantom

IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "InstitutionName",
    "InstitutionAddress", "ReferringPhysicianName", "OperatorsName", "StationName", "StudyDate", "StudyTime",
    "StudyID",
)  # fmt: skip


def series_uids(seed: int, series_number: int = 1) -> dict[str, UID]:
    """Study, series and frame-of-reference UIDs of a phantom, deterministic by seed."""
    base = ["resmtnet-chest-phantom", str(seed)]
    return {
        "StudyInstanceUID": generate_uid(entropy_srcs=[*base, "study"]),
        "SeriesInstanceUID": generate_uid(entropy_srcs=[*base, "series", str(series_number)]),
        "FrameOfReferenceUID": generate_uid(entropy_srcs=[*base, "frame"]),
    }


def write_series(
    phantom: ChestPhantom,
    folder: Path,
    *,
    patient_name: str = "PHANTOM^TEST",
    patient_id: str | None = None,
    birth_date: str = "19580317",
    accession_number: str | None = None,
    institution: str = "PHANTOM GENERAL HOSPITAL",
    study_date: str = "20240102",
    series_number: int = 1,
    feet_first: bool = False,
    flip_x: bool = False,
    signed: bool = True,
    transfer_syntax: str = ExplicitVRLittleEndian,
    suffix: str = ".dcm",
    extra: dict[str, Any] | None = None,
) -> list[Path]:
    """Write one file per slice into folder; returns the paths in slice order (feet to head).

    feet_first: PatientPosition FFS and instance numbers counted from the feet (head-first counts from the head).
    flip_x: columns stored right to left with ImageOrientationPatient [-1, 0, 0, 0, 1, 0], as feet-first
    scanners often do. signed: int16 pixels with intercept 0; otherwise uint16 with intercept -1024.
    extra: further elements by keyword, set last (they may override the defaults).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    transfer_syntax = UID(transfer_syntax)
    hu = phantom.hu[:, :, ::-1] if flip_x else phantom.hu
    if not signed and int(hu.min()) < HU_RANGE[0]:
        raise ValueError("HU below -1024 cannot be stored unsigned with intercept -1024")
    pixels = hu.astype(np.int16) if signed else (hu.astype(np.int32) - HU_RANGE[0]).astype(np.uint16)
    n_slices, rows, cols = hu.shape
    sz, sy, sx = phantom.spacing
    ox, oy, oz = phantom.origin_xyz_mm
    first_x = ox + (cols - 1) * sx if flip_x else ox
    uids = series_uids(phantom.seed, series_number)
    entropy = ["resmtnet-chest-phantom", str(phantom.seed), "sop", str(series_number)]
    rng = np.random.default_rng([phantom.seed, series_number])
    keys = np.asarray(rng.choice(2**60, size=n_slices, replace=False))
    names = [f"{int(v):016x}{suffix}" for v in keys]
    paths = []
    for k in range(n_slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[*entropy, str(k)])
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101500"
        ds.AccessionNumber = accession_number or f"ACC{phantom.seed:07d}"
        ds.Modality = "CT"
        ds.Manufacturer = "Res-MTNet phantom"
        ds.InstitutionName = institution
        ds.InstitutionAddress = "1 Phantom Road, Nowhere"
        ds.ReferringPhysicianName = "REFERRER^ROSE"
        ds.StationName = "PHANTOM-CT1"
        ds.OperatorsName = "OPERATOR^OTTO"
        ds.PatientName = patient_name
        ds.PatientID = patient_id or f"PH{phantom.seed:08d}"
        ds.PatientBirthDate = birth_date
        ds.PatientSex = "O"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = _ds(sz)
        ds.SpacingBetweenSlices = _ds(sz)
        ds.KVP = "120"
        ds.PatientPosition = "FFS" if feet_first else "HFS"
        for keyword, uid in uids.items():
            setattr(ds, keyword, uid)
        ds.StudyID = f"S{phantom.seed}"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1 if feet_first else n_slices - k
        ds.ImagePositionPatient = [_ds(first_x), _ds(oy), _ds(oz + k * sz)]
        ds.ImageOrientationPatient = [-1 if flip_x else 1, 0, 0, 0, 1, 0]
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(oz + k * sz)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [_ds(sy), _ds(sx)]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if signed else 0
        ds.WindowCenter, ds.WindowWidth = -600, 1500
        ds.RescaleIntercept = 0 if signed else HU_RANGE[0]
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        for keyword, value in (extra or {}).items():
            setattr(ds, keyword, value)
        _set_pixels(ds, np.ascontiguousarray(pixels[k]), transfer_syntax)
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _ds(value: float) -> float:
    """A decimal string value short enough for DICOM's 16 characters."""
    return round(float(value), 4)


def _set_pixels(ds: Dataset, frame: np.ndarray, transfer_syntax: UID) -> None:
    if transfer_syntax.is_compressed:
        ds.compress(transfer_syntax, frame, generate_instance_uid=False)
    elif transfer_syntax.is_little_endian:
        ds.PixelData = frame.tobytes()
    else:
        ds.PixelData = frame.byteswap().tobytes()


def read_series_hu(folder: Path) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float]]:
    """Read an axial, axis-aligned series back: HU (z, y, x) float32 with slices feet to head, rows anterior to
    posterior and columns right to left, spacing (z, y, x) mm and the LPS (x, y, z) of voxel (0, 0, 0)."""
    datasets = [pydicom.dcmread(p) for p in sorted(Path(folder).iterdir()) if p.is_file()]
    orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    row, col = orientation[:3], orientation[3:]
    if not (np.allclose(np.abs(row), [1, 0, 0]) and np.allclose(np.abs(col), [0, 1, 0])):
        raise ValueError(f"not an axis-aligned axial series: {orientation.tolist()}")
    normal = np.cross(row, col)
    datasets.sort(key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal)))
    if normal[2] < 0:
        datasets.reverse()
    slices = [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets]
    hu = np.stack(slices).astype(np.float32)
    positions = np.array([ds.ImagePositionPatient for ds in datasets], dtype=float)
    sy, sx = (float(v) for v in datasets[0].PixelSpacing)
    sz = float(np.median(np.diff(positions[:, 2]))) if len(datasets) > 1 else float(datasets[0].SliceThickness)
    if row[0] < 0:
        hu = hu[:, :, ::-1]
    if col[1] < 0:
        hu = hu[:, ::-1, :]
    rows, cols = hu.shape[1:]
    origin = positions[0] + np.minimum(0.0, (cols - 1) * sx * row) + np.minimum(0.0, (rows - 1) * sy * col)
    x, y, z = (float(v) for v in origin)
    return np.ascontiguousarray(hu), (sz, sy, sx), (x, y, z)


def demo(folder: Path, seed: int, nodules: int, archive: Path | None = None) -> list[dict[str, float]]:
    """A synthetic 80-slice 512 x 512 chest CT (1.25 x 0.7 x 0.7 mm) written to folder, optionally zipped too; the
    nodules' world centres (LPS mm) as the service's `centers` takes them."""
    from training.data.chest import render_chest

    phantom = render_chest(seed, shape=(80, 512, 512), spacing=(1.25, 0.7, 0.7), n_nodules=nodules,
                           diameter_range=(6.0, 20.0))  # fmt: skip
    paths = write_series(phantom, folder)
    if archive is not None:
        import zipfile

        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
            for path in paths:
                out.write(path, path.name)
    return [{"x": round(x, 1), "y": round(y, 1), "z": round(z, 1)} for x, y, z in phantom.nodule_world_xyz]


def main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Write a synthetic chest CT series to try the CT upload with.")
    parser.add_argument("folder", type=Path, help="where the DICOM files go (created)")
    parser.add_argument("--zip", type=Path, default=None, help="also write them as one .zip here")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodules", type=int, default=2)
    args = parser.parse_args()
    if args.folder.exists() and any(args.folder.iterdir()):
        parser.error(f"{args.folder} is not empty: an upload of it would hold two series")
    centers = demo(args.folder, args.seed, args.nodules, args.zip)
    print(json.dumps(centers))  # the `centers` field of an upload


if __name__ == "__main__":
    main()
