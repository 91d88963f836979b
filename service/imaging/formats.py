"""Readers for what clients send: .npy patches, JSON patches, spacing and centre fields.

Each reader either returns clean values or raises one of the service's typed errors with a precise message.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from service import strict_json
from service.errors import MalformedInput, PayloadTooLarge, UnusableInput

NPY_MAGIC = b"\x93NUMPY"
MAX_NPY_HEADER = 65536  # numpy itself refuses headers over 10,000 bytes by default
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0
_ALLOWED_KINDS = {"i", "u", "f"}
CT_RANGE_HU = (-4000.0, 60000.0)  # beyond these no CT value in HU lies, whatever the scanner
# A decimal number as text: ASCII digits only (float() would also take "1_0" as 10 and other scripts' digits).
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def read_npy(data: bytes | memoryview, max_voxels: int) -> np.ndarray:
    """A 3-D numeric array from .npy bytes, without copying the data; never unpickles."""
    if len(data) == 0:
        raise MalformedInput("the patch file is empty")
    if bytes(data[:6]) != NPY_MAGIC or len(data) < 10:
        raise MalformedInput("the patch is not a .npy file (it does not start with the NumPy magic string)")
    major = data[6]
    if major == 1:
        header_len, start = int.from_bytes(data[8:10], "little"), 10
    elif major in (2, 3):
        header_len, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise MalformedInput(f"unsupported .npy format version {major}")
    if header_len > MAX_NPY_HEADER:
        raise MalformedInput(f"the .npy header is {header_len} bytes; at most {MAX_NPY_HEADER} are accepted")
    raw_header = bytes(data[start : start + header_len])
    if len(raw_header) < header_len:
        raise MalformedInput("the .npy header is truncated")
    header = _parse_header(raw_header)
    dtype, shape, fortran = header
    if dtype.kind not in _ALLOWED_KINDS or dtype.itemsize > 8:
        raise UnusableInput(
            f"patch dtype {dtype} is not supported; send HU values as integers or floats of at most 8 bytes "
            "(int16 as CT stores them, or float32)"
        )
    if len(shape) != 3:
        raise UnusableInput(f"the patch must be 3-D with axes (z, y, x); got shape {tuple(shape)}")
    count = math.prod(shape)
    if count == 0:
        raise UnusableInput(f"the patch has no voxels (shape {tuple(shape)})")
    if count > max_voxels:
        raise PayloadTooLarge(f"the patch has {count} voxels; the limit is {max_voxels}")
    body = start + header_len
    expected = count * dtype.itemsize
    if len(data) - body < expected:
        raise MalformedInput(f"the .npy data is truncated: {len(data) - body} bytes of {expected} expected")
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=body)
    return flat.reshape(shape, order="F" if fortran else "C")


@lru_cache(maxsize=256)
def _parse_header(raw: bytes) -> tuple[np.dtype, tuple[int, ...], bool]:
    """The header's dtype, shape and order; cached, since clients send the same shapes again and again. Each way
    a header can be wrong gets its own message."""
    try:
        header = ast.literal_eval(raw.decode("latin1"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, OverflowError):
        raise MalformedInput("the .npy header is not the dictionary numpy writes") from None
    if not isinstance(header, dict) or not {"descr", "fortran_order", "shape"} <= set(header):
        raise MalformedInput("the .npy header must name its descr, fortran_order and shape")
    descr, shape, fortran = header["descr"], header["shape"], header["fortran_order"]
    if not isinstance(shape, tuple | list) or not all(type(n) is int for n in shape):
        raise MalformedInput("the .npy header's shape must be whole numbers")
    if any(n < 0 for n in shape):
        raise MalformedInput("the .npy header has a negative dimension")
    if not isinstance(fortran, bool):
        raise MalformedInput("the .npy header's fortran_order must be True or False")
    if not isinstance(descr, str | list):  # numpy would take None as float64
        raise MalformedInput("the .npy header's descr must be a dtype such as '<i2'")
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError, KeyError, MemoryError, RecursionError, OverflowError):
        raise MalformedInput(f"the .npy header's descr {str(descr)[:40]!r} is not a numpy dtype") from None
    return dtype, tuple(shape), fortran


def check_finite(volume: np.ndarray) -> None:
    if volume.dtype.kind == "f":
        finite = np.isfinite(volume)
        if not finite.all():
            bad = int(volume.size - np.count_nonzero(finite))
            raise UnusableInput(f"the patch contains {bad} NaN or infinite values")


MIN_HU_SPREAD = 100.0  # a CT region holding lung, or any tissue with its noise, spans more than this


def check_hounsfield(volume: np.ndarray) -> list[str]:
    """Refuse values that cannot be CT in HU; return warnings for doubtful ones."""
    low, high = float(volume.min()), float(volume.max())
    if high - low < MIN_HU_SPREAD:
        raise UnusableInput(
            f"patch values span {low:g}..{high:g}; expected Hounsfield units (air about -1000, lung about "
            "-850, soft tissue 0..100): send HU, not normalised intensities"
        )
    check_ct_range(low, high, "patch values")
    if low > -500:
        return [
            f"no value below -500 HU (lowest {low:g}): no lung in the patch, or the rescale intercept was not applied"
        ]
    return []


def check_ct_range(low: float, high: float, what: str) -> None:
    """Refuse values that no CT image in HU holds (a wrong rescale, or not HU at all)."""
    if low < CT_RANGE_HU[0] or high > CT_RANGE_HU[1]:
        raise UnusableInput(
            f"{what} span {low:g}..{high:g}, outside any CT range in HU ({CT_RANGE_HU[0]:g}..{CT_RANGE_HU[1]:g})"
        )


def decimal(text: str) -> float:
    """A number written in ASCII decimal notation; ValueError for anything else."""
    text = text.strip()
    if not _DECIMAL.fullmatch(text):
        raise ValueError(text)
    return float(text)


def parse_spacing(value: Any, name: str = "spacing") -> tuple[float, float, float]:
    """Three positive voxel spacings in mm, (z, y, x), from "z,y,x" text or a JSON list."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise UnusableInput(f"{name} is required: the voxel spacing in mm as 'z,y,x', e.g. '1.25,0.7,0.7'")
    items: Sequence[Any]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = strict_json.loads(text)
            except (ValueError, RecursionError):
                raise UnusableInput(f"{name} {text[:40]!r} is not 'z,y,x' numbers") from None
        else:
            items = text.split(",")
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise UnusableInput(f"{name} must be three numbers (z, y, x) in mm")
    if not isinstance(items, list | tuple) or len(items) != 3:
        raise UnusableInput(f"{name} must have three values (z, y, x) in mm")
    out = []
    for axis, item in zip("zyx", items, strict=True):
        try:
            if isinstance(item, bool):
                raise ValueError
            v = decimal(item) if isinstance(item, str) else float(item)
        except (TypeError, ValueError, OverflowError):
            raise UnusableInput(f"{name} along {axis} is not a number: {str(item)[:20]!r}") from None
        if not math.isfinite(v) or v <= 0:
            raise UnusableInput(f"{name} along {axis} must be positive and finite; got {v:g}")
        if v < MIN_SPACING_MM:
            raise UnusableInput(f"{name} along {axis} is {v:g} mm; at least {MIN_SPACING_MM:g} mm is accepted")
        if v > MAX_SPACING_MM:
            raise UnusableInput(f"{name} along {axis} is {v:g} mm; at most {MAX_SPACING_MM:g} mm is accepted")
        out.append(v)
    return out[0], out[1], out[2]


def finite_number(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else (booleans, text, NaN, integers too big for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def parse_voxel_center(value: Any, shape: Sequence[int]) -> tuple[float, float, float]:
    """Optional patch centre {"i": column, "j": row, "k": slice} -> (z, y, x) indices; default the middle."""
    if value is None or value == "":
        return tuple((n - 1) / 2.0 for n in shape)  # type: ignore[return-value]
    if isinstance(value, str):
        try:
            value = strict_json.loads(value)
        except strict_json.DuplicateMember as exc:
            raise UnusableInput(f"center: {exc}") from None
        except (ValueError, RecursionError):
            raise UnusableInput('center must be JSON like {"i": 31, "j": 31, "k": 15}') from None
    if not isinstance(value, dict) or set(value) != {"i", "j", "k"}:
        raise UnusableInput('center must be an object with exactly "i" (column), "j" (row) and "k" (slice)')
    zyx = []
    for key, n in zip("kji", shape, strict=True):
        v = finite_number(value[key])
        if v is None:
            raise UnusableInput(f"center.{key} must be a finite number")
        if not -0.5 <= v <= n - 0.5:
            raise UnusableInput(f"center.{key} = {v:g} is outside the patch (0..{n - 1})")
        zyx.append(v)
    return zyx[0], zyx[1], zyx[2]


JSON_MEMBERS = ("patch", "spacing", "center", "clinical")


def read_json_patch(body: bytes) -> tuple[np.ndarray, Any, Any]:
    """(patch array, spacing value, center value) from {"patch": [[[...]]], "spacing": [z, y, x]}."""
    patch, spacing, center, _ = read_json_request(body)
    return patch, spacing, center


def read_json_request(body: bytes) -> tuple[np.ndarray, Any, Any, Any]:
    """(patch array, spacing, center, clinical) values from the JSON body; clinical is checked by service.clinical."""
    if not body:
        raise MalformedInput("the request body is empty")
    try:
        doc = strict_json.loads(body)
    except strict_json.DuplicateMember as exc:  # valid JSON (RFC 8259), but which value would be meant?
        raise MalformedInput(f"the JSON body gives a member twice: {exc}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers too long to convert
        raise MalformedInput(f"the body is not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise MalformedInput("the JSON body is nested too deeply") from None
    if not isinstance(doc, dict):
        raise UnusableInput('the JSON body must be an object like {"patch": [[[...]]], "spacing": [z, y, x]}')
    unknown = set(doc) - set(JSON_MEMBERS)
    if unknown:
        raise UnusableInput(f"unknown fields: {', '.join(sorted(unknown))[:200]}")
    if "patch" not in doc:
        raise UnusableInput('"patch" is required: a 3-D array of HU values, axes (z, y, x)')
    return _json_patch(doc["patch"]), doc.get("spacing"), doc.get("center"), doc.get("clinical")


def _json_patch(value: Any) -> np.ndarray:
    """The JSON "patch" member as float32, refused unless every value is a number within the CT range."""
    try:
        patch = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise UnusableInput('"patch" must be a regular 3-D array of numbers (every row the same length)') from None
    if patch.ndim != 3:
        raise UnusableInput(f"the patch must be 3-D with axes (z, y, x); got {patch.ndim} dimension(s)")
    if patch.size == 0:
        raise UnusableInput(f"the patch has no voxels (shape {patch.shape})")
    if patch.dtype.kind not in "iuf" or any(bool in map(type, row) for plane in value for row in plane):
        raise UnusableInput(f'"patch" values must all be numbers (HU); it holds {_not_a_number(value)}')
    if patch.dtype.kind == "f" and not np.isfinite(patch).all():
        bad = int(patch.size - np.count_nonzero(np.isfinite(patch)))
        raise UnusableInput(f"the patch contains {bad} values beyond any finite number (NaN, Infinity, 1e400)")
    check_ct_range(float(patch.min()), float(patch.max()), "patch values")
    return patch.astype(np.float32)


def _not_a_number(value: list) -> str:
    """What the first value of a regular 3-D list that is not a number is, in words (no value quoted)."""
    for item in (item for plane in value for row in plane for item in row):
        if item is None:
            return "null"
        if isinstance(item, bool):
            return "true or false"
        if isinstance(item, str):
            return "text"
        if isinstance(item, int) and not CT_RANGE_HU[0] <= item <= CT_RANGE_HU[1]:
            return "an integer too large for any HU value"
        if not isinstance(item, int | float):
            return "an object" if isinstance(item, dict) else "an array"
    return "values that are not numbers"
