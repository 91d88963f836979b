"""Real DICOM files for the tests, written with pydicom from the chest phantoms (training.data), and variations of
them as scanners and PACS produce: shuffled, flipped, descending, tilted or sheared, compressed, multi-frame, zipped."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLosslessSV1,
    generate_uid,
)

from training.data.chest import ChestPhantom, render_chest
from training.data.dicom_series import series_uids, write_series

SMALL_SHAPE = (40, 64, 64)
SMALL_SPACING = (1.25, 0.8, 0.8)


def small_chest(seed: int = 0, shape=SMALL_SHAPE, spacing=SMALL_SPACING, n_nodules: int = 1) -> ChestPhantom:
    """A small chest (64 x 64 in-plane) with small nodules: fast to render, write and read."""
    return render_chest(seed, shape=shape, spacing=spacing, n_nodules=n_nodules, diameter_range=(3.0, 5.0))


def write(phantom: ChestPhantom, folder: Path, **kwargs) -> list[Path]:
    return write_series(phantom, folder, **kwargs)


def rewrite(paths: list[Path], change: Callable[[Dataset, int], None]) -> list[Path]:
    """Apply change(dataset, slice index feet to head) to every file of a series, in place."""
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        change(ds, k)
        ds.save_as(path, enforce_file_format=True)
    return paths


def flip_rows(paths: list[Path]) -> list[Path]:
    """Rows stored posterior to anterior: column direction (0, -1, 0), so the normal points to the feet and the
    slices sort head to feet (descending z)."""

    def change(ds: Dataset, _: int) -> None:
        rows = int(ds.Rows)
        spacing = float(ds.PixelSpacing[0])
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, round(y + (rows - 1) * spacing, 4), z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, -1, 0]
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[::-1]).tobytes()

    return rewrite(paths, change)


def tilt(paths: list[Path], mm_per_slice: float) -> list[Path]:
    """Gantry tilt as scanners store it: each slice's origin shifted along y in proportion to its z."""

    def change(ds: Dataset, k: int) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, round(y + k * mm_per_slice, 4), z]

    return rewrite(paths, change)


def shear(paths: list[Path], rows: int, rows_per_slice: int) -> list[Path]:
    """Gantry tilt with the anatomy kept: slice k keeps `rows` rows from row k * rows_per_slice of the written
    phantom, and its origin moves along y by as many rows. Every pixel stays at its true world position, so the
    tilted series shows exactly the phantom the untilted one does (where the crop keeps it)."""

    def change(ds: Dataset, k: int) -> None:
        start = k * rows_per_slice
        pixels = ds.pixel_array[start : start + rows]
        assert len(pixels) == rows, "the phantom has too few rows for this crop"
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, round(y + start * float(ds.PixelSpacing[0]), 4), z]
        ds.Rows = rows
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()

    return rewrite(paths, change)


def jpeg_lossless(paths: list[Path]) -> list[Path]:
    """Re-encode each file as JPEG Lossless SV1 (pydicom cannot encode it; imagecodecs' libjpeg-turbo can)."""
    import imagecodecs

    def change(ds: Dataset, _: int) -> None:
        frame = ds.pixel_array
        stored = frame.view(np.uint16) if frame.dtype == np.int16 else frame
        encoded = imagecodecs.jpeg8_encode(stored, lossless=True, predictor=1, bitspersample=16)
        ds.PixelData = encapsulate([bytes(encoded)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1

    return rewrite(paths, change)


def enhanced_ct(
    phantom: ChestPhantom, path: Path, transfer_syntax: str = ExplicitVRLittleEndian, patient_name: str = "PHANTOM^MF"
) -> Path:
    """The phantom as one Enhanced CT Image Storage file: geometry in shared and per-frame functional groups,
    rescale in the shared Pixel Value Transformation (intercept -1024 over unsigned pixels)."""
    hu = phantom.hu
    n, rows, cols = hu.shape
    sz, sy, sx = phantom.spacing
    ox, oy, oz = phantom.origin_xyz_mm
    uids = series_uids(phantom.seed, series_number=7)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["mf", str(phantom.seed)])
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientName, ds.PatientID, ds.StudyDate = patient_name, "MF0001", "20240102"
    for keyword, uid in uids.items():
        setattr(ds, keyword, uid)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = n
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    measures, orientation, values = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [sy, sx], sz
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    values.RescaleSlope, values.RescaleIntercept, values.RescaleType = 1, -1024, "HU"
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([values])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in range(n):
        position, item = Dataset(), Dataset()
        position.ImagePositionPatient = [ox, oy, round(oz + k * sz, 4)]
        item.PlanePositionSequence = Sequence([position])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    pixels = (hu.astype(np.int32) + 1024).astype(np.uint16)
    if pydicom.uid.UID(transfer_syntax).is_compressed:
        ds.compress(transfer_syntax, pixels, generate_instance_uid=False)
    else:
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def zip_bytes(paths: list[Path], extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            archive.write(path, f"study/series/{path.name}")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buf.getvalue()


def form_files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("series", (p.name, p.read_bytes(), "application/dicom")) for p in paths]


def world_centers(phantom: ChestPhantom) -> list[dict[str, float]]:
    return [{"x": x, "y": y, "z": z} for x, y, z in phantom.nodule_world_xyz]


def rotate(paths: list[Path], degrees_x: float, degrees_z: float) -> list[Path]:
    """An oblique acquisition: the whole stack rotated about the x then the z axis, slices still along the normal."""
    ax, az = np.radians(degrees_x), np.radians(degrees_z)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rotation = rz @ rx
    row, col, normal = rotation[:, 0], rotation[:, 1], rotation[:, 2]
    first = np.array(pydicom.dcmread(paths[0], stop_before_pixels=True).ImagePositionPatient, dtype=float)

    def change(ds: Dataset, k: int) -> None:
        step = float(ds.SpacingBetweenSlices)
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*row, *col)]
        ds.ImagePositionPatient = [round(float(v), 4) for v in first + k * step * normal]

    return rewrite(paths, change)
