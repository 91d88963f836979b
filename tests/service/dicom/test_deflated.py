"""Deflated Explicit VR Little Endian files: inflated once, in bounded steps, against the upload's byte limit and the
zip path's compression ratio (pydicom alone would inflate a whole dataset in one call, whatever its size)."""

from __future__ import annotations

import dataclasses
import io
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, generate_uid

from service.errors import MalformedInput, PayloadTooLarge
from tests.service.dicom.builders import world_centers
from tests.service.dicom.conftest import LIMITS, run


def deflated(paths: list[Path], folder: Path) -> list[bytes]:
    """The series' files written again in the Deflated Explicit VR Little Endian transfer syntax."""
    out = []
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        target = folder / f"{k}.dcm"
        ds.save_as(target, enforce_file_format=True)
        out.append(target.read_bytes())
    return out


def bomb(inflated_mib: int) -> bytes:
    """One CT header, then a private OB element of inflated_mib MiB of zeros: a few hundred KiB deflated."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, generate_uid(), "CT"
    ds.Rows, ds.Columns, ds.BitsAllocated = 64, 64, 16
    body = io.BytesIO()
    pydicom.dcmwrite(body, ds, implicit_vr=False, little_endian=True)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [packer.compress(body.getvalue() + struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, inflated_mib << 20))]
    zeros = bytes(1 << 20)
    parts += [packer.compress(zeros) for _ in range(inflated_mib)]
    parts.append(packer.flush())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = io.BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(head, meta, enforce_standard=True)
    return head.getvalue() + b"".join(parts)


def test_a_deflated_series_gives_the_same_cube_inflated_once_in_steps(
    phantom, series_paths, base, tmp_path, monkeypatch
):
    """zlib.decompress (pydicom's one-call inflation) is never reached: the header scan and the pixel stage both
    read the file inflated in steps."""
    files = deflated(series_paths, tmp_path)

    def whole(*args, **kwargs):
        raise AssertionError("a deflated dataset was inflated in one call")

    monkeypatch.setattr(zlib, "decompress", whole)
    prepared = run(files, world_centers(phantom))
    np.testing.assert_array_equal(prepared.nodules[0].cube, base.nodules[0].cube)


def test_a_deflate_bomb_is_refused_at_the_compression_ratio_in_bounded_memory(phantom):
    data = bomb(64)
    assert len(data) < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge) as caught:
            run([data], world_centers(phantom))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "series file 1 (Deflated Explicit VR Little Endian) inflates more than 200 times" in caught.value.detail
    assert peak < 16 << 20  # of 64 MiB: stopped a few MiB in


@pytest.mark.parametrize(
    "element, why",
    [
        (
            struct.pack("<HH2sHI", 0x0002, 0x0200, b"SQ", 0, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0),
            "undefined",
        ),
        (struct.pack("<HH2sHI", 0x0002, 0x0200, b"OB", 0, 1 << 30), "past the end of the file"),
    ],
    ids=["undefined-length", "past-the-end"],
)
def test_a_deflate_bomb_behind_a_file_meta_group_that_cannot_be_walked_is_refused_in_bounded_memory(
    phantom, element, why
):
    """pydicom reads an undefined-length sequence in the file meta group, and would then inflate the whole dataset
    in one call: such a group is refused before anything inflates or reads the file."""
    data = bomb(64)
    head = data.index(b"\x02\x00\x10\x00UI")  # TransferSyntaxUID: the crafted element goes after it
    length = struct.unpack_from("<H", data, head + 6)[0]
    cut = head + 8 + length
    tracemalloc.start()
    try:
        with pytest.raises(MalformedInput) as caught:
            run([data[:cut] + element + data[cut:]], world_centers(phantom))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "series file 1: its file meta group cannot be read" in caught.value.detail and why in caught.value.detail
    assert peak < 16 << 20


def test_inflated_bytes_count_against_the_uploads_byte_limit(phantom, series_paths, tmp_path):
    files = deflated(series_paths, tmp_path)
    limits = dataclasses.replace(LIMITS, max_bytes=sum(map(len, files)) + 1000)
    with pytest.raises(PayloadTooLarge) as caught:
        run(files, world_centers(phantom), limits=limits)
    assert f"inflates past the {limits.max_bytes} bytes of DICOM data an upload may hold" in caught.value.detail


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda data: data[: len(data) // 2], "series file 3 (Deflated Explicit VR Little Endian) is truncated"),
        (lambda data: data[:400] + b"\xff" * 64 + data[464:], "is damaged: its dataset is not a valid deflate stream"),
    ],
)
def test_a_truncated_or_damaged_deflated_file_is_named(phantom, series_paths, tmp_path, damage, fragment):
    files = deflated(series_paths, tmp_path)
    files[2] = damage(files[2])
    with pytest.raises(MalformedInput) as caught:
        run(files, world_centers(phantom))
    assert fragment in caught.value.detail, caught.value.detail
