"""Hostile DICOM found in review: each is refused quickly with its 4xx, never a 500, a hang or unbounded memory."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.sequence import Sequence

from service.dicom.headers import read_headers
from service.errors import MalformedInput, PayloadTooLarge, UnusableInput
from tests.service.dicom.builders import enhanced_ct, rewrite, world_centers, write
from tests.service.dicom.conftest import run
from tests.service.dicom.test_refusals import refused


def _strip_frames(path: Path, frames: int) -> bytes:
    """An Enhanced CT header that declares `frames` frames with shared geometry only and no pixel data."""
    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence
    del ds.PixelData
    ds.NumberOfFrames = frames
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def test_a_huge_frame_count_is_refused_before_frames_are_expanded(phantom, tmp_path):
    data = _strip_frames(enhanced_ct(phantom, tmp_path / "mf.dcm"), 10**12)
    started = time.monotonic()
    refused(PayloadTooLarge, "declares 1000000000000 frames", [data], world_centers(phantom))
    assert time.monotonic() - started < 2


def test_damaged_functional_groups_are_malformed(phantom, tmp_path):
    path = enhanced_ct(phantom, tmp_path / "mf.dcm")
    data = bytearray(path.read_bytes())
    marker = data.find(b"\x00\x52\x29\x92")  # (5200,9229) SharedFunctionalGroupsSequence, little endian
    assert marker > 0
    data[marker + 12 : marker + 40] = b"\xff" * 28  # the sequence's first item: garbage
    with pytest.raises((MalformedInput, UnusableInput)):
        run([bytes(data)], world_centers(phantom))


def _nested(depth: int) -> bytes:
    """A Part 10 file whose first data element is a sequence nested `depth` levels deep (undefined lengths)."""
    meta_syntax = b"1.2.840.10008.1.2.1\0"
    meta = struct.pack("<HH2sH", 0x0002, 0x0010, b"UI", len(meta_syntax)) + meta_syntax
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(meta))
    item, item_end, seq_end = (
        b"\xfe\xff\x00\xe0\xff\xff\xff\xff",
        b"\xfe\xff\x0d\xe0\0\0\0\0",
        b"\xfe\xff\xdd\xe0\0\0\0\0",
    )
    seq = struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
    body = (seq + item) * depth + (item_end + seq_end) * depth
    return b"\0" * 128 + b"DICM" + group_length + meta + body


def test_sequences_nested_thousands_deep_are_malformed(phantom):
    refused(MalformedInput, "series file 1", [_nested(3000)], world_centers(phantom))


def test_an_absurd_slice_position_is_refused(phantom, tmp_path):
    paths = write(phantom, tmp_path)

    def far(ds, k: int) -> None:
        if k == 0:
            ds.ImagePositionPatient = [0, 0, -1e308]

    refused(UnusableInput, "ImagePositionPatient", rewrite(paths, far), world_centers(phantom))


def test_images_larger_than_any_ct_matrix_are_refused(phantom, tmp_path):
    paths = write(phantom, tmp_path)

    def huge(ds, _: int) -> None:
        ds.Rows = ds.Columns = 65535

    refused(UnusableInput, "at most 4096x4096", rewrite(paths, huge), world_centers(phantom))


def test_coinciding_slice_positions_are_refused(phantom, tmp_path):
    paths = write(phantom, tmp_path)

    def same(ds, k: int) -> None:
        ds.ImagePositionPatient = [0, 0, 0 if k % 5 else 1000.0 + k]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()

    with pytest.raises((UnusableInput, MalformedInput)):
        run(rewrite(paths, same), world_centers(phantom))


def test_a_frame_sequence_item_count_is_checked(phantom, tmp_path):
    path = enhanced_ct(phantom, tmp_path / "mf.dcm")
    ds = pydicom.dcmread(path)
    ds.PerFrameFunctionalGroupsSequence = Sequence(list(ds.PerFrameFunctionalGroupsSequence)[:3])
    ds.save_as(path, enforce_file_format=True)
    refused(UnusableInput, "per-frame functional group items", [path.read_bytes()], world_centers(phantom))


def test_pydicom_warnings_that_quote_file_content_are_never_shown(phantom, tmp_path):
    """In a fresh interpreter, as the server runs (pytest would capture warnings itself)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    paths = write(phantom, tmp_path)

    def odd_charset(ds, _: int) -> None:
        ds.SpecificCharacterSet = "SECRET^PATIENT^NAME"

    rewrite(paths, odd_charset)
    script = (
        "import sys, pathlib\n"
        "from service.dicom.headers import read_headers\n"
        "files = [p.read_bytes() for p in sorted(pathlib.Path(sys.argv[1]).iterdir())]\n"
        "import pydicom\n"
        "names = sorted(pathlib.Path(sys.argv[1]).iterdir())[:2]\n"
        "[pydicom.dcmread(n).PatientName for n in names]  # decoding a name meets the odd character set\n"
        "read_headers(files)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "SECRET" not in out.stderr and "SECRET" not in out.stdout


def _peak_mib(action) -> float:
    import tracemalloc

    tracemalloc.start()
    try:
        action()
    except (PayloadTooLarge, UnusableInput, MalformedInput):
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / (1 << 20)


def test_a_ten_thousand_entry_zip_is_refused_from_its_records_in_bounded_memory(phantom):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for n in range(10_000):
            archive.writestr(f"{n}.dcm", b"")
    data = buf.getvalue()
    started = time.monotonic()
    refused(PayloadTooLarge, "entries", [data], world_centers(phantom))
    assert time.monotonic() - started < 2
    assert _peak_mib(lambda: run([data], world_centers(phantom))) < 16


def test_a_zip_bomb_is_refused_in_bounded_memory(phantom):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.dcm", b"\0" * (1 << 30))  # 1 GiB of zeros in about 1 MB
    data = buf.getvalue()
    assert len(data) < 2 << 20
    assert _peak_mib(lambda: run([data], world_centers(phantom))) < 24  # of 1 GiB: stopped after a few MiB inflated


def test_a_damaged_file_meta_element_is_read_past_not_raised(phantom, tmp_path):
    """MediaStorageSOPClassUID with a VR no DICOM has (found by the fuzzer): pydicom converts it lazily and raises
    NotImplementedError on access; the header scan treats it as absent."""
    data = bytearray(write(phantom, tmp_path)[0].read_bytes())
    at = data.find(b"\x02\x00\x02\x00UI")
    data[at + 4 : at + 6] = b"U\x00"
    (header,) = read_headers([bytes(data)])
    assert header.modality == "CT"


def test_a_transfer_syntax_uid_that_is_no_transfer_syntax_is_unusable(phantom, tmp_path):
    """Found by the fuzzer: pydicom raises ValueError when asked whether such a UID is compressed."""
    paths = write(phantom, tmp_path)
    for path in paths:
        data = path.read_bytes()
        path.write_bytes(data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.9\x00", 1))
    refused(UnusableInput, "is not a transfer syntax DICOM defines", paths, world_centers(phantom))
