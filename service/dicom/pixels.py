"""Pixel data of the few slices a patch needs, decoded on demand (one frame at a time for multi-frame files),
rescaled to HU (RescaleSlope and RescaleIntercept of each slice or frame), padding pixels set to the fill value.

Compressed transfer syntaxes are decoded by pydicom's plugins, installed with the service: GDCM (JPEG Lossless),
pyjpegls (JPEG-LS), pylibjpeg-openjpeg (JPEG 2000), pylibjpeg-rle or pydicom (RLE).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import UID

from service.dicom.codestreams import fragment_sizes
from service.dicom.elements import BIG_ENDIAN, EXPLICIT_LE, IMPLICIT_LE
from service.dicom.headers import SliceHeader
from service.dicom.sources import MAX_DECODED_BYTES
from service.errors import PayloadTooLarge, UnusableInput

NATIVE_LITTLE_ENDIAN = (EXPLICIT_LE, IMPLICIT_LE)


class SliceReader:
    """HU regions of a sorted series, decoding each slice at most once per request."""

    def __init__(
        self,
        files: list[bytes | memoryview],
        slices: list[SliceHeader],
        fill_hu: float,
        before_decode: Callable[[], None] | None = None,
        max_decoded_bytes: int = MAX_DECODED_BYTES,
    ) -> None:
        self._files = files
        self._max_decoded_bytes = max_decoded_bytes
        self.decoded_bytes = 0  # bytes of pixels held that pydicom decoded (not read in place)
        self._before_decode = before_decode  # called before each slice is decoded; may raise to stop the request
        self._slices = slices
        self._fill = np.float32(fill_hu)
        self._datasets: dict[int, Dataset] = {}
        self._decoded: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self.decoded_slices = 0

    def region(self, k: tuple[int, int], j: tuple[int, int], i: tuple[int, int]) -> tuple[np.ndarray, bool]:
        """HU (float32) of slices k[0]:k[1], rows j[0]:j[1], columns i[0]:i[1], and whether any padding pixel
        (outside the scanner's field of view) lies in it."""
        out = np.empty((k[1] - k[0], j[1] - j[0], i[1] - i[0]), dtype=np.float32)
        padded = False
        for n in range(k[0], k[1]):
            raw, mask = self._slice(n)
            h = self._slices[n]
            crop = raw[j[0] : j[1], i[0] : i[1]]
            with np.errstate(over="ignore", invalid="ignore"):  # a wild rescale: refused by the caller's HU check
                np.multiply(crop, np.float32(h.slope), out=out[n - k[0]], casting="unsafe")
                out[n - k[0]] += np.float32(h.intercept)
            if mask is not None:
                hit = mask[j[0] : j[1], i[0] : i[1]]
                if hit.any():
                    out[n - k[0]][hit] = self._fill
                    padded = True
        return out, padded

    def _slice(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Stored values of sorted slice n and its padding mask (None when it has no padding)."""
        if n not in self._decoded:
            if self._before_decode is not None:
                self._before_decode()
            h = self._slices[n]
            raw = _native(h, self._files[h.file])
            if raw is None:
                self._reserve(h)
                raw = self._decode(h)
            if raw.shape != (h.rows, h.columns):
                raise UnusableInput(
                    f"series file {h.file + 1}: its pixel data is {'x'.join(map(str, raw.shape))}, not the "
                    f"{h.rows}x{h.columns} its header declares"
                )
            mask = None
            if h.padding is not None:
                mask = (raw >= h.padding[0]) & (raw <= h.padding[1])
                mask = mask if mask.any() else None
            self._decoded[n] = (raw, mask)
            self.decoded_slices += 1
        return self._decoded[n]

    def _reserve(self, h: SliceHeader) -> None:
        """Count a slice about to be decoded against the request's budget, before its pixels are allocated."""
        self.decoded_bytes += (h.rows or 0) * (h.columns or 0) * max((h.bits_allocated or 16) // 8, 1)
        if self.decoded_bytes > self._max_decoded_bytes:
            raise PayloadTooLarge(
                f"one nodule needs more than {self._max_decoded_bytes / 2**20:g} MiB of pixels decoded from "
                f"{h.rows}x{h.columns} slices that are not plain 16-bit little endian (compressed, big endian, 8-bit "
                "or without file meta); send the series at a coarser spacing, or as uncompressed 16-bit"
            )

    def release(self) -> None:
        """Drop the slices decoded so far (the next nodule decodes what it needs again): the budget bounds what
        one nodule holds at a time, not the whole request."""
        self._decoded.clear()
        self.decoded_bytes = 0

    def _decode(self, h: SliceHeader) -> np.ndarray:
        """Pixels pydicom decodes (compressed, big endian, or otherwise not readable in place)."""
        syntax = UID(h.transfer_syntax) if h.transfer_syntax else None
        if syntax is not None and not syntax.is_transfer_syntax:
            raise UnusableInput(
                f"series file {h.file + 1}: its TransferSyntaxUID is not a transfer syntax DICOM defines; send "
                "uncompressed, JPEG Lossless, JPEG-LS, JPEG 2000 or RLE Lossless"
            )
        if syntax is not None and syntax.is_compressed:
            decoder = _decoder(syntax)
            if decoder is None or not decoder.is_available:
                raise UnusableInput(
                    f"series file {h.file + 1}: pixel data in transfer syntax {syntax.name!r} cannot be decoded by "
                    "this installation; send uncompressed, JPEG Lossless, JPEG-LS, JPEG 2000 or RLE Lossless"
                )
        ds = self._dataset(h.file, h)
        for keyword, meaning in (("PixelData", "no pixel data"), ("BitsAllocated", "no BitsAllocated")):
            if keyword not in ds:
                raise UnusableInput(f"series file {h.file + 1} has {meaning}: its pixels cannot be read")
        _check_native_length(ds, h)
        try:
            return pixel_array(ds, index=h.frame) if h.frame is not None else pixel_array(ds)
        except UnusableInput:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt pixel data; pydicom's message is not passed on
            raise UnusableInput(
                f"series file {h.file + 1}: its pixel data cannot be decoded ({type(exc).__name__})"
            ) from None

    def _dataset(self, n: int, h: SliceHeader) -> Dataset:
        """The whole file as a dataset, read once (for a multi-frame file, each frame is decoded from it alone);
        compressed frames must declare the size the header does before any is decoded."""
        if n not in self._datasets:
            data = self._files[n]
            ds = pydicom.dcmread(io.BytesIO(data if isinstance(data, bytes) else bytes(data)), force=True)
            _name_the_encoding(ds)
            _check_stream_sizes(ds, h)
            self._datasets[n] = ds
        return self._datasets[n]


def _check_stream_sizes(ds: Dataset, h: SliceHeader) -> None:
    """Refuse compressed pixel data whose codestreams declare another size than Rows x Columns: a decoder would
    allocate what the stream says, and the image would not be the one the header describes."""
    pixel_data = ds.get("PixelData")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if not isinstance(pixel_data, bytes) or syntax is None or not UID(syntax).is_encapsulated:
        return
    for rows, columns in fragment_sizes(pixel_data):
        if (rows, columns) != (h.rows, h.columns):
            raise UnusableInput(
                f"series file {h.file + 1}: its compressed pixel data is {rows}x{columns}, not the "
                f"{h.rows}x{h.columns} its header declares"
            )


def _check_native_length(ds: Dataset, h: SliceHeader) -> None:
    """Refuse uncompressed pixel data shorter than its header declares (Rows x Columns x BitsAllocated, times the
    frames), naming both sizes."""
    pixel_data = ds.get("PixelData")
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if not isinstance(pixel_data, bytes) or syntax is None or UID(syntax).is_encapsulated:
        return
    try:
        frames = max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        frames = 1
    need = ((h.rows or 0) * (h.columns or 0) * h.samples_per_pixel * (h.bits_allocated or 0) * frames + 7) // 8
    if len(pixel_data) < need:
        times = f" x {frames} frames" if frames > 1 else ""
        raise UnusableInput(
            f"series file {h.file + 1}: its pixel data holds {len(pixel_data)} bytes; the {h.rows}x{h.columns} "
            f"pixels of {h.bits_allocated} bits{times} its header declares need {need}"
        )


def _name_the_encoding(ds: Dataset) -> None:
    """A file without file meta (a bare dataset, which pydicom reads) names no transfer syntax, and pydicom's pixel
    decoding needs one: the encoding the dataset was read in is its (uncompressed) transfer syntax."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if little is None:
        return
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(IMPLICIT_LE if implicit else (EXPLICIT_LE if little else BIG_ENDIAN))


def _native(h: SliceHeader, data: bytes | memoryview) -> np.ndarray | None:
    """Uncompressed little-endian 16-bit pixels straight from the file, without a copy or a second parse (the fast
    element reader found where they lie); bits above BitsStored masked, or sign-extended, as pydicom does. None
    when pydicom has to decode."""
    if h.pixel_offset is None or h.pixel_length is None or h.transfer_syntax not in NATIVE_LITTLE_ENDIAN:
        return None
    if h.bits_allocated != 16 or h.samples_per_pixel != 1 or not h.rows or not h.columns:
        return None
    count, bits = h.rows * h.columns, h.bits_stored or 16
    if h.pixel_length < 2 * count or h.pixel_offset + 2 * count > len(data) or not 1 <= bits <= 16:
        return None
    signed = h.pixel_representation == 1
    raw = np.frombuffer(data, dtype="<i2" if signed else "<u2", count=count, offset=h.pixel_offset)
    raw = raw.reshape(h.rows, h.columns)
    if bits == 16:
        return raw
    if signed:
        shift = np.int16(16 - bits)
        return (raw << shift) >> shift
    return raw & np.uint16((1 << bits) - 1)


def _decoder(syntax: UID):  # type: ignore[no-untyped-def]
    try:
        return get_decoder(syntax)
    except NotImplementedError:  # no decoder for this transfer syntax at all
        return None
