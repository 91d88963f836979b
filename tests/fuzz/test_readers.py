"""Property-based fuzzing of the readers that see client bytes: mutated valid inputs may only ever raise the
service's typed errors (which become 4xx answers), never any other exception."""

import io
import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.multipart import parse_form
from service.errors import ProblemError
from service.imaging.formats import (
    check_finite,
    check_hounsfield,
    parse_spacing,
    parse_voxel_center,
    read_json_patch,
    read_npy,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


VALID_NPY = _npy(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 900)
VALID_JSON = json.dumps({"patch": (np.zeros((3, 3, 3)) - 500).tolist(), "spacing": [1, 1, 1]}).encode()
VALID_FORM = (
    b'--b\r\nContent-Disposition: form-data; name="spacing"\r\n\r\n1,1,1\r\n'
    b'--b\r\nContent-Disposition: form-data; name="patch"; filename="p.npy"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n" + VALID_NPY + b"\r\n--b--\r\n"
)


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """The original with a few random byte flips, insertions, deletions or a truncation."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def _read_patch_like_the_service(data: bytes) -> None:
    volume = read_npy(data, max_voxels=1 << 20)
    check_finite(volume)
    check_hounsfield(volume)


@FUZZ
@given(mutated(VALID_NPY))
def test_npy_reader_raises_only_typed_errors(data):
    try:
        _read_patch_like_the_service(data)
    except ProblemError:
        pass


@FUZZ
@given(st.binary(max_size=512))
def test_npy_reader_on_arbitrary_bytes(data):
    try:
        _read_patch_like_the_service(b"\x93NUMPY" + data)
    except ProblemError:
        pass


@FUZZ
@given(mutated(VALID_JSON))
def test_json_reader_raises_only_typed_errors(data):
    try:
        volume, spacing, center = read_json_patch(data)
        parse_spacing(spacing)
        parse_voxel_center(center, volume.shape)
        check_finite(volume)
    except ProblemError:
        pass


@FUZZ
@given(st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                    max_leaves=20))  # fmt: skip
def test_spacing_and_center_parsers_take_any_json_value(value):
    for parse in (lambda: parse_spacing(value), lambda: parse_voxel_center(value, (8, 8, 8))):
        try:
            parse()
        except ProblemError:
            pass


@FUZZ
@given(mutated(VALID_FORM))
def test_multipart_parser_raises_only_typed_errors(data):
    try:
        for part in parse_form(data, "multipart/form-data; boundary=b", max_parts=8):
            if not part.is_file:
                part.text()
    except ProblemError:
        pass
