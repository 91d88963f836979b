"""What each file says about its slices, read without pixel data: one SliceHeader per image (per frame for Enhanced
CT multi-frame files, whose geometry lives in the shared and per-frame functional groups).

pydicom's exceptions and values never reach a message: errors name the file by its position and the tag by keyword.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from service.dicom.elements import ElementScan, NotSimple, read_elements
from service.dicom.sources import looks_like_dicom
from service.errors import MalformedInput, PayloadTooLarge, ProblemError, UnusableInput

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.2"
CT_CLASSES = frozenset({CT_IMAGE, ENHANCED_CT_IMAGE, LEGACY_ENHANCED_CT_IMAGE})
DIRECTORY_CLASS = "1.2.840.10008.1.3.10"

SUBJECT_KEY = os.urandom(32)  # keys the subject digest: per process, never stored
# Only these elements are converted; pydicom steps over the rest (the pixel data is never read here).
HEADER_TAGS = [
    Tag(keyword)
    for keyword in (
        "SOPClassUID",
        "SOPInstanceUID",
        "PatientID",
        "StudyInstanceUID",
        "ImageType",
        "Modality",
        "SeriesInstanceUID",
        "SliceThickness",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "NumberOfFrames",
        "Rows",
        "Columns",
        "PixelSpacing",
        "BitsAllocated",
        "BitsStored",
        "PixelRepresentation",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "PixelPaddingValue",
        "PixelPaddingRangeLimit",
        "RescaleIntercept",
        "RescaleSlope",
        "SharedFunctionalGroupsSequence",
        "PerFrameFunctionalGroupsSequence",
    )
]


@dataclass(frozen=True)
class SliceHeader:
    """One image of the upload. UIDs stay inside the service: they are compared, never shown."""

    file: int  # position of its file in the upload
    frame: int | None  # frame index in a multi-frame file, None for a single-frame file
    sop_class: str
    sop_instance: str
    series_uid: str
    modality: str
    localizer: bool
    rows: int | None
    columns: int | None
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns) mm
    orientation: tuple[float, ...] | None  # ImageOrientationPatient: row direction, column direction
    position: tuple[float, float, float] | None  # ImagePositionPatient of the first voxel, LPS mm
    thickness: float | None
    slope: float
    intercept: float
    padding: tuple[int, int] | None  # stored values [low, high] that mark pixels outside the scanned field
    samples_per_pixel: int
    transfer_syntax: str
    bits_allocated: int | None = None
    bits_stored: int | None = None
    pixel_representation: int | None = None
    pixel_offset: int | None = None  # where the pixel data's value starts in the file (fast reader only)
    pixel_length: int | None = None  # its length; None when encapsulated or unknown
    subject: str = ""  # digest of PatientID and StudyInstanceUID: whose study the image is, compared, never shown
    photometric: str = ""  # PhotometricInterpretation, upper case ("" when absent)
    absent: tuple[str, ...] = ()  # which of RESCALE and IDENTIFIERS the image lacks (named in refusals, never valued)


RESCALE = ("RescaleIntercept", "RescaleSlope")  # Type 1 in CT images: absent, their values are not HU
IDENTIFIERS = ("PatientID", "StudyInstanceUID")  # compared through the subject digest; absent (or empty) is noted
MAX_MAGNITUDE = 1e6  # millimetres (positions, spacings) or direction cosines: a kilometre is already absurd


def read_headers(
    files: list[bytes | memoryview],
    scan: ElementScan | None = None,
    max_images: int | None = None,
    check: Callable[[], None] | None = None,
) -> list[SliceHeader]:
    """Every image of every file, in upload order; DICOMDIR files are passed over. The fast element reader serves
    the common case (reusing what `scan` read while sizing multipart parts); pydicom reads the rest (multi-frame,
    big endian, deflate, files without a preamble). More than max_images images (files or frames) is a 413,
    raised before a multi-frame file's frames are expanded. `check` is called before each file (it may raise to
    stop a request given up or past its deadline)."""
    out: list[SliceHeader] = []
    for n, data in enumerate(files):
        if check is not None:
            check()
        if not looks_like_dicom(data):
            raise MalformedInput(
                f"series file {n + 1} is not a DICOM file (no 'DICM' marker, no DICOM element at its start)"
            )
        try:
            found = (scan.get(data) if scan is not None else None) or read_elements(data)
            frames = _int(n, found.values, "NumberOfFrames")
            if frames is not None and frames != 1:
                raise NotSimple("multi-frame")
            sop_class = str(found.values.get("SOPClassUID", "") or "")
            media = str(found.values.get("MediaStorageSOPClassUID", "") or "")
            if DIRECTORY_CLASS in (sop_class, media):
                continue
            common = _common(n, found.values, sop_class, found.transfer_syntax)
            header = _single(n, found.values, common)
            if found.pixel_length is not None:
                assert found.pixel_offset is not None
                _check_complete(n, header, media, found.pixel_offset + found.pixel_length, len(data))
                header = replace(header, pixel_offset=found.pixel_offset, pixel_length=found.pixel_length)
            out.append(_check_complete(n, header, media))
            continue
        except NotSimple:
            pass
        ds = _read(n, data)
        sop_class = str(_value(n, ds, "SOPClassUID") or "")
        media = _media_class(ds)
        if DIRECTORY_CLASS in (sop_class, media):
            continue
        budget = None if max_images is None else max_images - len(out)
        try:
            out.extend(_check_complete(n, h, media) for h in _slices(n, ds, sop_class, budget))
        except ProblemError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged sequence read lazily; its message may quote values
            raise MalformedInput(f"series file {n + 1} has damaged functional groups ({type(exc).__name__})") from None
    return out


def _media_class(ds: Dataset) -> str:
    """MediaStorageSOPClassUID from the file meta; "" when absent or unreadable (elements are converted lazily, so a
    damaged one raises only here)."""
    try:
        meta = getattr(ds, "file_meta", None)
        return str(meta.get("MediaStorageSOPClassUID", "") or "") if meta is not None else ""
    except Exception:  # noqa: BLE001 - a damaged meta element; its message may quote values
        return ""


def _check_complete(n: int, header: SliceHeader, media: str, pixels_end: int = 0, size: int = 0) -> SliceHeader:
    """Refuse a file that ends before its pixel data does, or whose file meta names an object (media, the
    MediaStorageSOPClassUID) of which it holds nothing, neither SOP class nor modality: both cut short."""
    if pixels_end > size:
        raise MalformedInput(
            f"series file {n + 1} is truncated: its pixel data needs {pixels_end} bytes, the file has {size}"
        )
    if media and not header.sop_class and not header.modality:
        raise MalformedInput(
            f"series file {n + 1} holds no image header (no SOP class, no modality) after its file meta: truncated?"
        )
    return header


def _read(n: int, data: bytes | memoryview) -> Dataset:
    try:
        source = io.BytesIO(data if isinstance(data, bytes) else bytes(data))
        return pydicom.dcmread(source, stop_before_pixels=True, specific_tags=HEADER_TAGS, force=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the file's fault; its message may quote values
        raise MalformedInput(f"series file {n + 1} is not a readable DICOM file ({type(exc).__name__})") from None


def _common(n: int, ds: Any, sop_class: str, syntax: str) -> dict[str, Any]:
    """What every image of a file shares."""
    return {
        "file": n,
        "sop_class": sop_class,
        "sop_instance": str(ds.get("SOPInstanceUID", "") or ""),
        "series_uid": str(ds.get("SeriesInstanceUID", "") or ""),
        "modality": str(ds.get("Modality", "") or "").strip().upper(),
        "rows": _int(n, ds, "Rows"),
        "columns": _int(n, ds, "Columns"),
        "padding": _padding(n, ds),
        "samples_per_pixel": _or_default(_int(n, ds, "SamplesPerPixel"), 1),
        "transfer_syntax": syntax,
        "bits_allocated": _int(n, ds, "BitsAllocated"),
        "bits_stored": _int(n, ds, "BitsStored"),
        "pixel_representation": _int(n, ds, "PixelRepresentation"),
        "subject": _subject(ds),
        "photometric": str(ds.get("PhotometricInterpretation", "") or "").strip().upper(),
    }


def _subject(ds: Any) -> str:
    """A keyed digest of the image's PatientID and StudyInstanceUID bytes as stored (either reader's, trailing
    padding stripped; never decoded, so any character set reads alike): images of one series must share it. The
    key is this process's own, so a digest cannot be matched against guessed IDs."""
    parts = [_stored_bytes(ds, keyword).rstrip(b" \0") for keyword in ("PatientID", "StudyInstanceUID")]
    return hmac.new(SUBJECT_KEY, b"\0".join(parts), hashlib.sha256).hexdigest()[:32]


def _stored_bytes(ds: Any, keyword: str) -> bytes:
    """An element's value bytes as the file stores them: the fast reader keeps them so; from pydicom, the raw
    element read before any conversion ("" when absent)."""
    if isinstance(ds, dict):  # the fast reader's values: these two are kept as bytes
        return ds.get(keyword, b"")
    try:
        element = ds.get_item(keyword)
    except KeyError:
        return b""
    if element is None:
        return b""
    value = element.value
    if isinstance(value, bytes):
        return value
    return b"" if value is None else str(value).encode("utf-8", "surrogateescape")


def _slices(n: int, ds: Dataset, sop_class: str, budget: int | None = None) -> list[SliceHeader]:
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    common = _common(n, ds, sop_class, syntax)
    frames = _int(n, ds, "NumberOfFrames")
    if frames is not None and budget is not None and frames > budget:
        raise PayloadTooLarge(f"series file {n + 1} declares {frames} frames; the upload may hold {budget} more images")
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if frames is None or (frames == 1 and shared is None and per_frame is None):
        return [_single(n, ds, common)]
    if frames < 1:
        raise UnusableInput(f"series file {n + 1} has NumberOfFrames {frames}")
    if sop_class == CT_IMAGE and frames > 1:  # the classic CT Image has no multi-frame module
        raise UnusableInput(
            f"series file {n + 1} is a CT Image, one frame per file, but declares NumberOfFrames {frames}"
        )
    if per_frame is not None and len(per_frame) != frames:
        raise UnusableInput(
            f"series file {n + 1} has {frames} frames but {len(per_frame)} per-frame functional group items"
        )
    return [_frame(n, ds, common, f, shared, per_frame[f] if per_frame is not None else None) for f in range(frames)]


def _single(n: int, ds: Any, common: dict[str, Any]) -> SliceHeader:
    slope, intercept, unset = _rescale(n, ds)
    return SliceHeader(
        frame=None,
        localizer=_is_localizer(ds.get("ImageType")),
        pixel_spacing=_floats(n, ds, "PixelSpacing", 2),  # type: ignore[arg-type]
        orientation=_floats(n, ds, "ImageOrientationPatient", 6),
        position=_floats(n, ds, "ImagePositionPatient", 3),  # type: ignore[arg-type]
        thickness=_thickness(n, ds),
        slope=slope,
        intercept=intercept,
        absent=_unnamed(ds) + unset,
        **common,
    )


def _frame(n: int, ds: Dataset, common: dict[str, Any], f: int, shared: Any, item: Any) -> SliceHeader:
    """One frame of an Enhanced CT file: each macro from the frame's own functional groups, else the shared ones,
    else (Legacy Converted files) the top level."""

    def macro(sequence: str) -> Dataset | None:
        for groups in (item, shared):
            found = _first(groups, sequence) if groups is not None else None
            if found is not None:
                return found
        return None

    position, orientation = macro("PlanePositionSequence"), macro("PlaneOrientationSequence")
    measures, values = macro("PixelMeasuresSequence"), macro("PixelValueTransformationSequence")
    frame_type = macro("CTImageFrameTypeSequence")
    slope, intercept, unset = _rescale(n, values or ds)
    return SliceHeader(
        frame=f,
        localizer=_is_localizer((frame_type or ds).get("FrameType", None) or ds.get("ImageType")),
        pixel_spacing=_floats(n, measures or ds, "PixelSpacing", 2),  # type: ignore[arg-type]
        orientation=_floats(n, orientation or ds, "ImageOrientationPatient", 6),
        position=_floats(n, position or ds, "ImagePositionPatient", 3),  # type: ignore[arg-type]
        thickness=_thickness(n, measures or ds),
        slope=slope,
        intercept=intercept,
        absent=_unnamed(ds) + unset,
        **common,
    )


def _first(ds: Any, keyword: str) -> Dataset | None:
    sequence = ds.get(keyword) if ds is not None else None
    if sequence is None or len(sequence) == 0:
        return None
    return sequence[0]


def _is_localizer(image_type: Any) -> bool:
    values = [image_type] if isinstance(image_type, str) else list(image_type or [])
    return any(str(v).strip().upper() == "LOCALIZER" for v in values)


def _value(n: int, ds: Any, keyword: str) -> Any:
    try:
        element = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a value pydicom cannot convert
        raise UnusableInput(f"series file {n + 1}: {keyword} cannot be read") from None
    if element is None or element == "" or (hasattr(element, "__len__") and len(element) == 0):
        return None
    return element


def _float(n: int, ds: Any, keyword: str) -> float | None:
    value = _value(n, ds, keyword)
    if value is None:
        return None
    if not isinstance(value, str | bytes | int | float):  # several values where DICOM gives one
        if len(value) > 1:
            raise UnusableInput(f"series file {n + 1}: {keyword} holds {len(value)} values; it has one")
        value = value[0] if len(value) else None
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UnusableInput(f"series file {n + 1}: {keyword} is not a number") from None
    if not math.isfinite(out):
        raise UnusableInput(f"series file {n + 1}: {keyword} is not finite")
    return out


def _or_default(value: int | None, default: int) -> int:
    """The value when the element is present (0 included, for the series to refuse), else the default."""
    return default if value is None else value


def _thickness(n: int, ds: Any) -> float | None:
    """SliceThickness, which only informs: None when absent, NaN when it is not one number (several values, text,
    not finite), which the series leaves out with a warning instead of refusing the upload."""
    try:
        return _float(n, ds, "SliceThickness")
    except UnusableInput:
        return math.nan


def _rescale(n: int, ds: Any) -> tuple[float, float, tuple[str, ...]]:
    """RescaleSlope and RescaleIntercept, 1 and 0 where absent, and which are absent (the series refuses those: a
    CT image without them does not say how its values become HU). CT stores HU with a positive slope, so zero or
    negative is refused."""
    slope, intercept = _float(n, ds, "RescaleSlope"), _float(n, ds, "RescaleIntercept")
    absent = tuple(k for k, v in zip(RESCALE, (intercept, slope), strict=True) if v is None)
    if slope is not None and slope <= 0:
        raise UnusableInput(f"series file {n + 1}: RescaleSlope {slope:g} is not positive; CT values need one above 0")
    return (1.0 if slope is None else slope), (0.0 if intercept is None else intercept), absent


def _unnamed(ds: Any) -> tuple[str, ...]:
    """Which IDENTIFIERS the image lacks (absent or empty): a series whose images differ in them is refused, and
    this lets the refusal say that one is missing rather than that two patients are mixed."""
    return tuple(k for k in IDENTIFIERS if not _stored_bytes(ds, k).rstrip(b" \0"))


def _floats(n: int, ds: Any, keyword: str, count: int) -> tuple[float, ...] | None:
    value = _value(n, ds, keyword)
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in (value if not isinstance(value, str | bytes) else [value]))
    except (TypeError, ValueError):
        raise UnusableInput(f"series file {n + 1}: {keyword} is not numeric") from None
    if len(out) != count or not all(math.isfinite(v) and abs(v) <= MAX_MAGNITUDE for v in out):
        raise UnusableInput(f"series file {n + 1}: {keyword} must be {count} numbers of at most {MAX_MAGNITUDE:g}")
    return out


def _int(n: int, ds: Any, keyword: str) -> int | None:
    value = _value(n, ds, keyword)
    if value is None:
        return None
    if isinstance(value, list):
        value = value[0]
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UnusableInput(f"series file {n + 1}: {keyword} is not an integer") from None


def _padding(n: int, ds: Any) -> tuple[int, int] | None:
    """PixelPaddingValue (and PixelPaddingRangeLimit) as stored values, low <= high."""
    value = _int(n, ds, "PixelPaddingValue")
    if value is None:
        return None
    limit = _int(n, ds, "PixelPaddingRangeLimit")
    low, high = (value, value) if limit is None else (min(value, limit), max(value, limit))
    return low, high
