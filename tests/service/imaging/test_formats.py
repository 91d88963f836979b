import io
import json
import re

import numpy as np
import pytest

from service.errors import MalformedInput, PayloadTooLarge, UnusableInput
from service.imaging.formats import (
    check_finite,
    check_hounsfield,
    parse_spacing,
    parse_voxel_center,
    read_json_patch,
    read_npy,
)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize(
    "dtype", [np.int16, np.int32, np.float32, np.float64, np.uint16, np.float16, np.int8, np.int64, np.uint32]
)
def test_read_npy_accepts_numeric_volumes(dtype):
    a = np.arange(24, dtype=dtype).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_npy(npy_bytes(a), 1000), a)


def test_read_npy_keeps_fortran_order_values():
    a = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    np.testing.assert_array_equal(read_npy(npy_bytes(a), 1000), a)


def test_read_npy_rejects_empty_garbage_and_truncated_files():
    with pytest.raises(MalformedInput, match="empty"):
        read_npy(b"", 10)
    with pytest.raises(MalformedInput, match="not a .npy"):
        read_npy(b"hello world, not an array", 10)
    data = npy_bytes(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(MalformedInput, match="truncated"):
        read_npy(data[:-10], 1000)
    with pytest.raises(MalformedInput, match="header"):
        read_npy(data[:20], 1000)


def test_read_npy_rejects_wrong_dimensions_and_dtypes():
    with pytest.raises(UnusableInput, match="3-D"):
        read_npy(npy_bytes(np.zeros((4, 4), np.float32)), 1000)
    with pytest.raises(UnusableInput, match="complex"):
        read_npy(npy_bytes(np.zeros((2, 2, 2), np.complex64)), 1000)
    with pytest.raises(UnusableInput, match="bool"):
        read_npy(npy_bytes(np.zeros((2, 2, 2), bool)), 1000)


def test_read_npy_never_unpickles_object_arrays():
    with pytest.raises((UnusableInput, MalformedInput)):
        read_npy(npy_bytes(np.array([[[object()]]], dtype=object)), 1000)


def test_read_npy_refuses_too_many_voxels_from_the_header_alone():
    header_only = npy_bytes(np.zeros((10, 10, 10), np.int16))[:128]
    with pytest.raises(PayloadTooLarge, match="1000 voxels"):
        read_npy(header_only, 999)


def test_non_finite_values_are_counted():
    a = np.zeros((2, 2, 2), np.float32)
    a[0, 0, 0], a[1, 1, 1] = np.nan, np.inf
    with pytest.raises(UnusableInput, match="2 NaN or infinite"):
        check_finite(a)


def test_hounsfield_check_refuses_normalised_intensities_and_warns_on_missing_air():
    with pytest.raises(UnusableInput, match="Hounsfield"):
        check_hounsfield(np.random.default_rng(0).random((4, 4, 4)))
    assert check_hounsfield(np.array([0.0, 1000.0])) != []
    assert check_hounsfield(np.array([-900.0, 40.0])) == []


@pytest.mark.parametrize("text", ["1.25,0.7,0.7", " 1.25 , 0.7, 0.7 ", "[1.25, 0.7, 0.7]"])
def test_parse_spacing_accepts_text_and_json(text):
    assert parse_spacing(text) == (1.25, 0.7, 0.7)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "required"),
        ("", "required"),
        ("1,1", "three values"),
        ("1,0,1", "along y must be positive"),
        ("1,-2,1", "along y must be positive"),
        ("1,1,abc", "along x is not a number"),
        ("nan,1,1", "along z is not a number"),
        ("1_0,1,1", "along z is not a number"),  # float() would read 10
        ("\uff11,1,1", "along z is not a number"),  # a fullwidth digit
        (["inf", 1, 1], "along z is not a number"),
        ([float("inf"), 1, 1], "along z must be positive and finite"),
        ("1,1,50", "at most"),
        ([True, 1, 1], "along z is not a number"),
    ],
)
def test_parse_spacing_rejects_bad_values_precisely(value, message):
    with pytest.raises(UnusableInput, match=message):
        parse_spacing(value)


def test_voxel_center_defaults_to_the_middle_and_checks_bounds():
    assert parse_voxel_center(None, (10, 20, 30)) == (4.5, 9.5, 14.5)
    assert parse_voxel_center('{"i": 1, "j": 2, "k": 3}', (10, 20, 30)) == (3.0, 2.0, 1.0)
    with pytest.raises(UnusableInput, match="center.k"):
        parse_voxel_center({"i": 1, "j": 2, "k": 30}, (10, 20, 30))
    with pytest.raises(UnusableInput, match="exactly"):
        parse_voxel_center({"x": 1}, (10, 20, 30))


def test_json_patch_reader():
    body = json.dumps({"patch": [[[1, 2], [3, 4]]], "spacing": [1, 1, 1]}).encode()
    patch, spacing, center = read_json_patch(body)
    assert patch.shape == (1, 2, 2) and spacing == [1, 1, 1] and center is None
    with pytest.raises(MalformedInput, match="empty"):
        read_json_patch(b"")
    with pytest.raises(MalformedInput, match="not valid JSON"):
        read_json_patch(b"{nope")
    with pytest.raises(UnusableInput, match="regular 3-D"):
        read_json_patch(json.dumps({"patch": [[[1, 2], [3]]], "spacing": [1, 1, 1]}).encode())
    with pytest.raises(UnusableInput, match="2 dimension"):
        read_json_patch(json.dumps({"patch": [[1, 2]], "spacing": [1, 1, 1]}).encode())
    with pytest.raises(UnusableInput, match="unknown fields"):
        read_json_patch(json.dumps({"patch": [[[1]]], "extra": 1}).encode())


NPY_MAGIC_V2 = b"\x93NUMPY\x02\x00"


def test_read_npy_refuses_huge_headers_before_parsing_them():
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1), }" + b" " * 200_000 + b"\n"
    data = NPY_MAGIC_V2 + len(header).to_bytes(4, "little") + header + b"\0\0\0\0"
    with pytest.raises(MalformedInput, match="header is"):
        read_npy(data, 1000)


@pytest.mark.parametrize("value", ["1e-200,1,1", "0.001,1,1", "[" * 100_000, "9" * 5000 + ",1,1", [10**400, 1, 1]])
def test_absurd_spacings_are_refused_not_crashed_on(value):
    with pytest.raises(UnusableInput):
        parse_spacing(value)


def test_absurd_json_numbers_and_nesting_are_refused():
    with pytest.raises(MalformedInput):
        read_json_patch(b'{"patch": ' + b"9" * 5000 + b"}")
    with pytest.raises(UnusableInput):
        read_json_patch(b'{"patch": [[[' + b"9" * 400 + b']]], "spacing": [1, 1, 1]}')
    with pytest.raises(UnusableInput):
        parse_voxel_center({"i": 10**400, "j": 1, "k": 1}, (4, 4, 4))
    with pytest.raises(UnusableInput):
        parse_voxel_center("[" * 100_000, (4, 4, 4))


def _npy_with_header(header: str) -> bytes:
    raw = header.encode("latin1")
    raw += b" " * (63 - len(raw) - 10) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(raw).to_bytes(2, "little") + raw + b"\0" * 64


@pytest.mark.parametrize(
    "header",
    [
        "{'descr': '<i2', 'fortran_order': False, 'shape': (1e400, 1, 1), }",  # int(inf) used to escape as a 500
        "{'descr': '<i2', 'fortran_order': False, 'shape': (2.5, 2, 2), }",
        "{'descr': '<i2', 'fortran_order': False, 'shape': (True, 2, 2), }",
        "{'descr': None, 'fortran_order': False, 'shape': (2, 2, 2), }",  # numpy would take None as float64
        "{'descr': '<i2', 'fortran_order': 'no', 'shape': (2, 2, 2), }",
    ],
)
def test_npy_headers_with_odd_values_are_malformed_input(header):
    with pytest.raises(MalformedInput, match="header"):
        read_npy(_npy_with_header(header), 10_000)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("{'descr': 'zz9', 'fortran_order': False, 'shape': (2, 2, 2), }", "descr 'zz9' is not a numpy dtype"),
        ("{'descr': '<i2', 'shape': (2, 2, 2), }", "must name its descr, fortran_order and shape"),
        ("{'descr': '<i2', 'fortran_order': False, 'shape': 8, }", "shape must be whole numbers"),
        ("{'descr': '<i2', 'fortran_order': 1, 'shape': (2, 2, 2), }", "fortran_order must be True or False"),
        ("[1, 2, 3]", "must name its descr"),
        ("{'descr': '<i2', 'fortran_order': False, 'shape': (2, 2, 2)", "not the dictionary numpy writes"),
    ],
)
def test_each_way_an_npy_header_is_wrong_is_named_not_an_exception_name(header, message):
    with pytest.raises(MalformedInput, match=re.escape(message)):
        read_npy(_npy_with_header(header), 10_000)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("[[[1e39, -1000]]]", r"span -1000..1e\+39, outside any CT range"),
        ("[[[1e400, -1000]]]", "1 values beyond any finite number"),
        ("[[[null, -1000]]]", "holds null"),
        ('[[["-1000", -1000]]]', "holds text"),
        ("[[[true, -1000]]]", "holds true or false"),
        ("[[[-1000, false]]]", "holds true or false"),
        ("[[[" + "9" * 60 + ", -1000]]]", "an integer too large"),
        ("[[[{}, -1000]]]", "an object"),
    ],
)
def test_json_patch_values_that_are_not_hu_numbers_are_named(patch, message):
    body = ('{"patch": ' + patch + ', "spacing": [1, 1, 1]}').encode()
    with pytest.raises(UnusableInput, match=message):
        read_json_patch(body)
