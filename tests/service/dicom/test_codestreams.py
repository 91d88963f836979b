import struct

import jpeg_ls
import numpy as np
from pydicom.encaps import encapsulate

from service.dicom.codestreams import declared_size, fragment_sizes


def test_a_jpeg_ls_stream_declares_its_own_size():
    stream = bytes(jpeg_ls.encode_array(np.zeros((300, 200), np.uint16)))
    assert declared_size(stream) == (300, 200)
    assert list(fragment_sizes(encapsulate([stream, stream]))) == [(300, 200), (300, 200)]


def test_a_jpeg_2000_siz_segment_gives_the_size_less_its_offsets():
    siz = b"\xff\x4f\xff\x51" + struct.pack(">HHIIII", 41, 0, 5000, 7000, 1000, 2000)
    assert declared_size(siz + b"\0" * 40) == (5000, 4000)


def test_fragments_that_start_no_codestream_declare_nothing():
    assert declared_size(b"\x00" * 64) is None  # an RLE segment header, or a continuation
    assert declared_size(b"\xff\xd8\xff\xe0\x00\x04ab") is None  # cut short before its frame header
    assert list(fragment_sizes(b"not encapsulated")) == []
