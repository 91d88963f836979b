"""Files in the Deflated Explicit VR Little Endian transfer syntax, inflated once, in bounded steps, before anything
reads them: pydicom would inflate the whole dataset in one call, whatever its size (a few MiB can stand for
gigabytes). The inflated bytes count against the upload's DICOM byte limit and the zip path's compression ratio;
the file is then rewritten as Explicit VR Little Endian, which the header scan and the pixel stage both read.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

from service.dicom.elements import DEFLATED_EXPLICIT_LE, EXPLICIT_LE, LONG_VRS, UnreadableMeta, file_meta
from service.dicom.sources import MAX_COMPRESSION_RATIO
from service.errors import MalformedInput, PayloadTooLarge

STEP = 64 << 10  # compressed bytes fed, and inflated bytes taken, per step
_SYNTAX_TAG = (0x0002, 0x0010)


def inflate_deflated(
    files: list[bytes | memoryview], max_bytes: int, check: Callable[[], None] | None = None
) -> list[bytes | memoryview]:
    """The upload's files, each deflated one replaced by its inflated twin; `check` is called before each one is
    inflated. 413 once the upload's bytes, inflated ones included, pass max_bytes, or a file inflates more than
    MAX_COMPRESSION_RATIO times its compressed size; 400 for a damaged or truncated deflate stream."""
    total = sum(len(f) for f in files)
    out = list(files)
    for n, data in enumerate(files):
        try:
            meta = file_meta(data)
        except UnreadableMeta as exc:
            raise MalformedInput(f"series file {n + 1}: its file meta group cannot be read: {exc}") from None
        if meta is None or meta[2] != DEFLATED_EXPLICIT_LE:
            continue
        if check is not None:
            check()
        start, end, _ = meta
        header = _explicit_meta(memoryview(data)[start:end])
        budget = max_bytes - (total - len(data))  # what this file may take, inflated
        inflated = _inflate(n, memoryview(data)[end:], header, budget, max_bytes)
        total += len(inflated) - len(data)
        out[n] = memoryview(inflated)
    return out


def _inflate(n: int, deflated: memoryview, header: bytes, budget: int, max_bytes: int) -> bytearray:
    """header followed by the inflated dataset, taken STEP bytes at a time; 413 past budget bytes in all."""
    name = f"series file {n + 1} (Deflated Explicit VR Little Endian)"
    stream = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray(header)
    fed, pending = 0, b""  # compressed bytes fed so far; those zlib has not taken yet
    try:
        while not stream.eof:
            if not pending and fed < len(deflated):
                pending = bytes(deflated[fed : fed + STEP])
                fed += len(pending)
            piece = stream.decompress(pending, STEP)
            pending = stream.unconsumed_tail
            if not piece and not pending and fed >= len(deflated):
                break
            out += piece
            if len(out) > budget:
                raise PayloadTooLarge(
                    f"{name} inflates past the {max_bytes} bytes of DICOM data an upload may hold "
                    "(RESMTNET_DICOM_MAX_BYTES)"
                )
            size = len(out) - len(header)
            if size > MAX_COMPRESSION_RATIO * max(fed - len(pending), 1) + STEP:
                raise PayloadTooLarge(
                    f"{name} inflates more than {MAX_COMPRESSION_RATIO} times its compressed size (a decompression "
                    "bomb?)"
                )
    except zlib.error:
        raise MalformedInput(f"{name} is damaged: its dataset is not a valid deflate stream") from None
    if not stream.eof:
        raise MalformedInput(f"{name} is truncated: its deflated dataset ends before its deflate stream does")
    return out


def _explicit_meta(meta: memoryview) -> bytes:
    """Preamble, 'DICM' and the file meta group, its TransferSyntaxUID now Explicit VR Little Endian and its group
    length recomputed."""
    elements, pos = [], 0
    while pos < len(meta):
        group, element, vr, length = struct.unpack_from("<HH2sH", meta, pos)
        value_at = pos + 8
        if vr in LONG_VRS:
            length, value_at = struct.unpack_from("<I", meta, pos + 8)[0], pos + 12
        if (group, element) == _SYNTAX_TAG:
            elements.append(struct.pack("<HH2sH", group, element, vr, 20) + EXPLICIT_LE.encode() + b"\0")
        elif element != 0x0000:  # the group length, written again below
            elements.append(bytes(meta[pos : value_at + length]))
        pos = value_at + length
    body = b"".join(elements)
    return b"\0" * 128 + b"DICM" + struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body
