"""The DICOM files of an upload: several multipart files, or one .zip read in memory with its limits enforced while
it decompresses (the zip's own size fields are never trusted).

Files are identified by their position in the upload only: file and entry names can carry patient names.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass, field

from service.errors import MalformedInput, PayloadTooLarge, UnusableInput

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
DICM_OFFSET = 128
MAX_COMPRESSION_RATIO = 200  # CT slices deflate 2 to 5 times; only a bomb needs more
_INFLATE_CHUNK = 64 << 10
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_CENTRAL = b"PK\x01\x02"
_EOCD64 = b"PK\x06\x06"


MAX_DECODED_BYTES = 1 << 30  # pixels pydicom decodes for one nodule, held at once


@dataclass(frozen=True)
class SeriesLimits:
    """What one upload may hold: files (or frames), bytes of DICOM data (a zip's uncompressed content included),
    zip entries, nodule centres; and what reading it may take: voxels read around one nodule, bytes of pixels one
    nodule holds decoded by pydicom (a few kilobytes of JPEG-LS can stand for gigabytes of pixels)."""

    max_files: int
    max_bytes: int
    max_zip_entries: int
    max_nodules: int
    max_region_voxels: int
    max_decoded_bytes: int = MAX_DECODED_BYTES


@dataclass
class Upload:
    """The DICOM files, in upload order, and how many zip entries were passed over as not DICOM."""

    files: list[bytes | memoryview]
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


def is_zip(data: bytes | memoryview) -> bool:
    return bytes(data[:4]) in ZIP_MAGIC


def collect(parts: list[memoryview], limits: SeriesLimits) -> Upload:
    """The files of the `series` parts: one .zip, or one or more DICOM files (never both)."""
    if not parts:
        raise UnusableInput("the form has no 'series' file: send DICOM files or one .zip as 'series'")
    zips = sum(is_zip(p) for p in parts)
    if zips and len(parts) > 1:
        raise UnusableInput("send either one .zip or DICOM files as 'series', not several zips or a mix")
    if zips:
        return unzip(parts[0], limits)
    if len(parts) > limits.max_files:
        raise PayloadTooLarge(f"the upload has {len(parts)} files; at most {limits.max_files} are accepted")
    total = sum(len(p) for p in parts)
    if total > limits.max_bytes:
        raise PayloadTooLarge(f"the series files hold {total} bytes; at most {limits.max_bytes} are accepted")
    for n, part in enumerate(parts):
        if len(part) == 0:
            raise MalformedInput(f"series file {n + 1} is empty")
    return Upload(list(parts))


def unzip(data: bytes | memoryview, limits: SeriesLimits) -> Upload:
    """DICOM files out of a zip, entries counted from its central directory and bytes counted while inflating."""
    count_entries(data, limits.max_zip_entries)
    files: list[bytes | memoryview] = []
    skipped, total = 0, 0
    try:
        with zipfile.ZipFile(ViewReader(data)) as archive:
            for info in archive.infolist():
                name = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
                if info.is_dir() or not name or name.upper() == "DICOMDIR":
                    continue
                if info.flag_bits & 0x1:
                    raise UnusableInput("the .zip is encrypted; send it without a password")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    # bzip2 and LZMA entries inflate a whole block per read, past any chunked limit
                    raise UnusableInput("the .zip uses a compression method other than deflate or none; use deflate")
                content, total = _inflate(archive, info, total, limits.max_bytes)
                if not looks_like_dicom(content):
                    skipped += 1
                    continue
                if len(files) >= limits.max_files:
                    raise PayloadTooLarge(f"the .zip holds more than {limits.max_files} DICOM files")
                files.append(content)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, struct.error, OSError) as exc:
        raise MalformedInput(f"the .zip is damaged or truncated ({type(exc).__name__})") from None
    except NotImplementedError:
        raise UnusableInput("the .zip uses a compression method that is not supported; use deflate") from None
    if not files:
        raise UnusableInput(f"the .zip holds no DICOM file ({skipped} other entries)")
    notes = [f"{skipped} file(s) in the .zip are not DICOM and were ignored"] if skipped else []
    return Upload(files, skipped, notes)


def _inflate(archive: zipfile.ZipFile, info: zipfile.ZipInfo, total: int, max_bytes: int) -> tuple[bytes, int]:
    """One entry's content, read in chunks so that the byte limit holds whatever its header claims."""
    chunks, inflated = [], 0
    with archive.open(info) as stream:
        while chunk := stream.read(_INFLATE_CHUNK):
            total += len(chunk)
            inflated += len(chunk)
            if total > max_bytes:
                raise PayloadTooLarge(f"the .zip's content exceeds {max_bytes} bytes uncompressed")
            # compressed bytes zipfile has read so far: small reads make it fetch compressed input in small steps
            consumed = info.compress_size - getattr(stream, "_compress_left", 0)
            if inflated > MAX_COMPRESSION_RATIO * max(consumed, 1) + _INFLATE_CHUNK:
                raise PayloadTooLarge(
                    f"a .zip entry inflates more than {MAX_COMPRESSION_RATIO} times its compressed size (a zip bomb?)"
                )
            chunks.append(chunk)
    return b"".join(chunks), total


def count_entries(data: bytes | memoryview, limit: int) -> int:
    """Entries in the zip's central directory, counted record by record (not from the count it declares);
    413 past limit, before any of them is parsed by zipfile."""
    view = memoryview(data)
    tail_start = max(0, len(view) - 22 - 65535)
    found = bytes(view[tail_start:]).rfind(_EOCD)
    eocd = tail_start + found
    if found < 0 or eocd + 22 > len(view):
        raise MalformedInput("the .zip is damaged or truncated (no end of central directory)")
    size_cd = struct.unpack_from("<I", view, eocd + 12)[0]
    end = eocd
    locator = eocd - 20
    if locator >= 0 and view[locator : locator + 4] == _EOCD64_LOCATOR:
        record = locator - 56
        if record < 0 or view[record : record + 4] != _EOCD64:
            raise MalformedInput("the .zip is damaged or truncated (zip64 record)")
        size_cd, end = struct.unpack_from("<Q", view, record + 40)[0], record
    pos = end - size_cd
    if pos < 0:
        raise MalformedInput("the .zip is damaged or truncated (central directory)")
    count = 0
    while pos < end:
        if pos + 46 > end or view[pos : pos + 4] != _CENTRAL:
            raise MalformedInput("the .zip is damaged or truncated (central directory record)")
        count += 1
        if count > limit:
            raise PayloadTooLarge(f"the .zip has more than {limit} entries")
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", view, pos + 28)
        pos += 46 + name_len + extra_len + comment_len
    return count


class ViewReader(io.RawIOBase):
    """A read-only, seekable file over a memoryview: zipfile reads the upload where it lies, without a copy."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(base + offset, 0)
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        target = memoryview(buffer).cast("B")
        chunk = self._view[self._pos : self._pos + len(target)]
        target[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def looks_like_dicom(data: bytes | memoryview) -> bool:
    """A Part 10 file (preamble and 'DICM'), or a bare dataset starting with a group 0002 or 0008 element."""
    if bytes(data[DICM_OFFSET : DICM_OFFSET + 4]) == b"DICM":
        return True
    return bytes(data[:2]) in (b"\x02\x00", b"\x08\x00") and len(data) > 8
