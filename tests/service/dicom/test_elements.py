"""The fast element reader gives exactly what pydicom gives, and hands every file it cannot read to pydicom."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from service.dicom import headers
from service.dicom.elements import NotSimple, read_elements
from service.dicom.pixels import SliceReader
from tests.service.dicom.builders import rewrite, write


def by_pydicom(data: bytes) -> list[headers.SliceHeader]:
    ds = headers._read(0, data)
    return headers._slices(0, ds, str(ds.get("SOPClassUID", "")))


def fast(data: bytes) -> headers.SliceHeader:
    (header,) = headers.read_headers([data])
    return header


def same(a: headers.SliceHeader, b: headers.SliceHeader) -> None:
    assert replace(a, pixel_offset=None, pixel_length=None) == b


def with_sequences(ds: Dataset, _: int) -> None:
    """A private tag, an undefined-length sequence with undefined-length items, and an empty sequence, before the
    elements the reader wants (Referenced Image Sequence sits in group 0008)."""
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.3"
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    inner = Dataset()
    inner.CodeValue = "X"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([item, item])
    ds.ReferencedImageSequence.is_undefined_length = True
    for each in ds.ReferencedImageSequence:
        each.is_undefined_length_sequence_item = True
    ds.SourceImageSequence = Sequence([])
    ds.add_new(0x00091010, "LO", "private")
    ds.add_new("PixelPaddingValue", "SS" if ds.PixelRepresentation else "US", -2000 if ds.PixelRepresentation else 5)


def with_non_ascii_id(ds: Dataset, _: int) -> None:
    """A PatientID in UTF-8, padded: the fast reader keeps its bytes (no decoding, no hand-over to pydicom)."""
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientID = "Müller-7 "


@pytest.mark.parametrize(
    "variant", ["explicit", "implicit", "unsigned", "sequences", "rle", "jpeg2000", "non-ascii-id"]
)
def test_fast_reader_matches_pydicom(variant, phantom, tmp_path):
    kwargs = {
        "implicit": {"transfer_syntax": ImplicitVRLittleEndian},
        "unsigned": {"signed": False},
        "rle": {"transfer_syntax": RLELossless},
        "jpeg2000": {"transfer_syntax": JPEG2000Lossless},
    }.get(variant, {})
    paths = write(phantom, tmp_path, **kwargs)[:3]
    if variant == "sequences":
        rewrite(paths, with_sequences)
    if variant == "non-ascii-id":
        rewrite(paths, with_non_ascii_id)
    for path in paths:
        data = path.read_bytes()
        read_elements(data)  # not handed over to pydicom
        header = fast(data)
        (expected,) = by_pydicom(data)
        same(header, expected)
        if variant in ("rle", "jpeg2000"):
            assert header.pixel_length is None
        else:
            assert header.pixel_offset is not None
    if variant == "sequences":
        assert header.padding == ((-2000, -2000))


def test_files_it_cannot_read_go_to_pydicom(phantom, tmp_path):
    (big,) = write(phantom, tmp_path / "big", transfer_syntax=ExplicitVRBigEndian)[:1]
    with pytest.raises(NotSimple):
        read_elements(big.read_bytes())
    (expected,) = by_pydicom(big.read_bytes())
    assert fast(big.read_bytes()) == expected
    bare = pydicom.dcmread(write(phantom, tmp_path / "bare")[0])
    with pytest.raises(NotSimple):
        read_elements(b"\0" * 200)
    assert bare.Modality == "CT"


@pytest.mark.parametrize(("signed", "bits"), [(True, 16), (True, 12), (False, 12), (False, 16)])
def test_native_pixels_match_pydicom(phantom, tmp_path, signed, bits):
    (path,) = write(phantom, tmp_path, signed=signed)[5:6]

    def change(ds, _):
        pixels = ds.pixel_array.copy()
        if bits == 12 and not signed:
            pixels[0, :4] |= 0xF000  # garbage above BitsStored: masked
        ds.PixelData = pixels.tobytes()
        ds.BitsStored, ds.HighBit = bits, bits - 1

    rewrite([path], change)
    data = path.read_bytes()
    header = fast(data)
    assert header.pixel_offset is not None
    region, _ = SliceReader([data], [header], -1000.0).region((0, 1), (0, header.rows), (0, header.columns))
    expected = pydicom.dcmread(path).pixel_array * float(header.slope) + float(header.intercept)
    np.testing.assert_array_equal(region[0], expected.astype(np.float32))


def test_multipart_parts_are_sized_from_their_elements_and_checked(series_paths):
    """The hint is taken only where the boundary follows; a file with bytes after its pixel data (trailing padding)
    is found by searching, and both are read once by the header scan."""
    from service.api.multipart import parse_form
    from service.dicom.elements import ElementScan

    files = [series_paths[0].read_bytes(), series_paths[1].read_bytes() + b"\xfc\xff\xfc\xffOB\0\0\4\0\0\0abcd"]
    boundary = "b0undary"
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="series"; filename="{n}"\r\n\r\n'.encode()
            + f
            + b"\r\n"
            for n, f in enumerate(files)
        )
        + f"--{boundary}--\r\n".encode()
    )
    scan = ElementScan()
    parts = parse_form(body, f"multipart/form-data; boundary={boundary}", 10, length_hint=scan.length)
    assert [bytes(p.data) for p in parts] == files
    assert all(scan.get(p.data) is not None for p in parts)
    assert headers.read_headers([p.data for p in parts], scan) == headers.read_headers(files)
