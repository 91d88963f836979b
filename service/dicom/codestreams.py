"""The image size a compressed frame's own codestream declares (JPEG, JPEG-LS, JPEG 2000), read from its first
bytes before any decoding. Decoders size their output from the codestream, not from the DICOM header, so a few
kilobytes declaring 65535 x 65535 would allocate gigabytes behind a header that says 64 x 64."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from pydicom.encaps import generate_fragments

ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000), little endian: the Basic Offset Table's item, then each fragment's
SOI, J2K_SIZ = b"\xff\xd8", b"\xff\x4f\xff\x51"  # JPEG start of image; JPEG 2000 start of codestream + SIZ
# Start-of-frame markers: JPEG's SOF0-SOF15 (less DHT, JPG and DAC, which share the range) and JPEG-LS's SOF55.
SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
SCAN_BYTES = 1 << 16  # the frame header comes before the first scan; markers beyond this are not looked for


def fragment_sizes(pixel_data: bytes) -> Iterator[tuple[int, int]]:
    """(rows, columns) declared by each fragment of encapsulated pixel data that starts a codestream."""
    if pixel_data[:4] != ITEM or len(pixel_data) < 8:
        return
    (offsets_length,) = struct.unpack_from("<I", pixel_data, 4)
    for fragment in generate_fragments(pixel_data[8 + offsets_length :]):
        size = declared_size(fragment)
        if size is not None:
            yield size


def declared_size(fragment: bytes) -> tuple[int, int] | None:
    """(rows, columns) from a JPEG or JPEG-LS frame header or a JPEG 2000 SIZ segment; None when the fragment
    starts no codestream (a continuation) or names no size within SCAN_BYTES."""
    if fragment.startswith(SOI):
        return _jpeg_size(fragment[:SCAN_BYTES])
    at = fragment.find(J2K_SIZ, 0, 4096)  # a raw codestream, or one inside a JP2 file's boxes
    if at >= 0 and len(fragment) >= at + 28:
        width, height, x_offset, y_offset = struct.unpack_from(">IIII", fragment, at + 8)
        return height - y_offset, width - x_offset
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in SOF:
            height, width = struct.unpack_from(">HH", data, at + 5)
            return height, width
        (length,) = struct.unpack_from(">H", data, at + 2)
        at += 2 + length
    return None
