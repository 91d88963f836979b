import httpx
import numpy as np
import pytest

from service.api.multipart import parse_form
from service.errors import MalformedInput, PayloadTooLarge, UnusableInput

FORM_Q = "multipart/form-data; boundary=q"
NAMED_A = b'--q\r\nContent-Disposition: form-data; name="a"\r\n'


def encoded(files=None, data=None) -> tuple[bytes, str]:
    """A body and Content-Type exactly as httpx (a real client) writes them."""
    request = httpx.Request("POST", "http://x/predict", files=files, data=data)
    return request.read(), request.headers["content-type"]


def test_parts_round_trip_from_a_real_client_byte_for_byte():
    payload = np.arange(5000, dtype=np.int16).tobytes() + b"\r\n--not-the-boundary\r\n"
    body, ctype = encoded(files={"patch": ("p.npy", payload, "application/octet-stream")}, data={"spacing": "1,2,3"})
    parts = {p.name: p for p in parse_form(body, ctype, max_parts=4)}
    assert bytes(parts["patch"].data) == payload
    assert parts["patch"].filename == "p.npy" and parts["patch"].content_type == "application/octet-stream"
    assert parts["spacing"].text() == "1,2,3" and not parts["spacing"].is_file


def test_quoted_boundary_preamble_and_epilogue():
    body = b'preamble\r\n--b:x y\r\nContent-Disposition: form-data; name="a"\r\n\r\nvalue\r\n--b:x y--\r\nepilogue'
    (part,) = parse_form(body, 'multipart/form-data; boundary="b:x y"', max_parts=2)
    assert part.name == "a" and part.text() == "value"


def test_quoted_filename_with_semicolon():
    body = b'--q\r\nContent-Disposition: form-data; name="patch"; filename="a;b.npy"\r\n\r\nxyz\r\n--q--\r\n'
    (part,) = parse_form(body, FORM_Q, max_parts=1)
    assert part.filename == "a;b.npy" and bytes(part.data) == b"xyz"


@pytest.mark.parametrize(
    ("body", "ctype", "fragment"),
    [
        (b"", FORM_Q, "empty"),
        (b"--q\r\nxx", "multipart/form-data", "no boundary"),
        (b"no delimiter here", FORM_Q, "does not contain"),
        (b'--q\r\nContent-Disposition: form-data; name="a"\r\n\r\nunterminated', FORM_Q, "truncated"),
        (b"--q\r\nContent-Disposition: form-data\r\n\r\nv\r\n--q--", FORM_Q, "no Content-Disposition name"),
        (b'--q\r\nContent-Disposition: attachment; name="a"\r\n\r\nv\r\n--q--', FORM_Q, "not form-data"),
        (b"--q\r\n" + b"X" * 9000, FORM_Q, "headers are missing"),
        (b"--qjunk", FORM_Q, "malformed after a boundary"),
        (b"--q\r\nbroken header line\r\n\r\nv\r\n--q--", FORM_Q, "'Name: value'"),
        (b"--b", "multipart/form-data; boundary=" + "b" * 71, "1 to 70"),
        (b'--q\r\nContent-Disposition: form-data; name="a"; name="b"\r\n\r\nv\r\n--q--', FORM_Q, "'name' twice"),
        (NAMED_A + b'content-disposition: form-data; name="b"\r\n\r\nv\r\n--q--', FORM_Q, "two Content-Disposition"),
        (NAMED_A + b"Content-Type: a/b\r\nContent-Type: c/d\r\n\r\nv\r\n--q--", FORM_Q, "two Content-Type headers"),
    ],
)
def test_malformed_bodies_are_refused_precisely(body, ctype, fragment):
    with pytest.raises(MalformedInput, match=fragment):
        parse_form(body, ctype, max_parts=4)


def test_part_count_is_bounded():
    body, ctype = encoded(files={"patch": ("p.npy", b"x")}, data={f"f{i}": "v" for i in range(4)})
    with pytest.raises(PayloadTooLarge, match="more than 4 parts"):
        parse_form(body, ctype, max_parts=4)


def test_text_fields_must_be_utf8():
    body = b'--q\r\nContent-Disposition: form-data; name="spacing"\r\n\r\n\xff\xfe\r\n--q--'
    (part,) = parse_form(body, FORM_Q, max_parts=1)
    with pytest.raises(UnusableInput, match="not UTF-8"):
        part.text()
