"""Open Inference Protocol (KServe v2) infer bodies over HTTP: JSON tensors and the binary tensor data extension.

A request body is a JSON header, optionally followed by raw tensor bytes (little-endian, row major) when the
`Inference-Header-Content-Length` header gives the JSON's length; each input carried that way says how many bytes
it takes with its `binary_data_size` parameter, in the order the inputs are listed. Responses mirror it: outputs
asked for with `binary_data` (or the request's `binary_data_output`) come after the JSON, which then says its length
in the same header. Only what the model takes and gives is decoded: FP32 tensors.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from service import strict_json
from service.errors import MalformedInput, PayloadTooLarge
from service.runtime.manifest import TensorSpec

HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = {"float32": "FP32"}  # manifest dtype -> protocol datatype
WIRE_DTYPES = {"FP32": np.dtype("<f4")}
UNSUPPORTED_PARAMETERS = ("shared_memory_region", "classification")
GZIP_MAGIC = b"\x1f\x8b"
MAX_GZIP_MEMBERS = 4096
INFLATE_CHUNK = 1 << 16


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded infer request: one array per model input, the outputs to answer with, in order."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput]
    timeout_s: float | None


def datatype(spec: TensorSpec) -> str:
    return DATATYPES[spec.dtype]


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent before any Content-Encoding (gzip or deflate), never more than limit bytes once inflated."""
    coding = (encoding or "identity").strip().lower()
    if coding == "identity":
        return body
    if coding not in ("gzip", "deflate"):
        raise MalformedInput(f"Content-Encoding {short(coding)} is not supported; send gzip, deflate or none")
    view, parts, size, pos = memoryview(body), [], 0, 0
    for _ in range(MAX_GZIP_MEMBERS):  # gzip may hold several members one after another (RFC 1952); deflate one
        inflater = zlib.decompressobj(wbits=31 if coding == "gzip" else 15)
        while not inflater.eof:  # fed in bounded chunks, so that no step copies the rest of the body
            if pos >= len(view):
                raise MalformedInput(f"the {coding} body is truncated")
            chunk = view[pos : pos + INFLATE_CHUNK]
            pos += len(chunk)
            try:
                out = inflater.decompress(chunk, limit + 1 - size)
            except zlib.error as exc:
                raise MalformedInput(f"the {coding} body cannot be decompressed: {exc}") from None
            size += len(out)
            parts.append(out)
            if size > limit:
                raise PayloadTooLarge(f"the decompressed request exceeds the limit of {limit} bytes")
        pos -= len(inflater.unused_data)
        if pos >= len(view):
            return b"".join(parts)
        if coding == "deflate" or bytes(view[pos : pos + 2]) != GZIP_MAGIC:
            if not bytes(view[pos:]).strip(b"\0\r\n\t "):  # padding, as gzip itself tolerates
                return b"".join(parts)
            raise MalformedInput(f"the {coding} body has {len(view) - pos} bytes after its end that are not {coding}")
    raise MalformedInput(f"the gzip body holds more than {MAX_GZIP_MEMBERS} members")


def is_count(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts characters such as '²' that int() refuses."""
    return text.isascii() and text.isdigit()


def split_body(body: bytes, header_length: str | None) -> tuple[bytes | memoryview, memoryview]:
    """(JSON header, binary section) of a request body."""
    view = memoryview(body)
    if header_length is None:
        return body, view[len(body) :]
    text = header_length.strip()
    if not is_count(text) or not 0 < int(text) <= len(body):
        raise MalformedInput(
            f"{HEADER_LENGTH} must be the JSON header's length in bytes, 1 to {len(body)}; got {short(header_length)}"
        )
    n = int(text)
    return view[:n], view[n:]


def _load_json(header: bytes | memoryview) -> dict[str, Any]:
    try:
        document = strict_json.loads(bytes(header))
    except strict_json.DuplicateMember as exc:  # valid JSON (RFC 8259), but which value would be meant?
        raise MalformedInput(f"the inference request gives a member twice: {exc}") from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise MalformedInput(f"the inference request is not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(document, dict):
        raise MalformedInput("the inference request must be a JSON object with an 'inputs' list")
    return document


REQUEST_MEMBERS = ("id", "parameters", "inputs", "outputs")
INPUT_MEMBERS = ("name", "shape", "datatype", "parameters", "data")
OUTPUT_MEMBERS = ("name", "parameters")


def _known_members(item: dict[str, Any], members: tuple[str, ...], where: str) -> None:
    """Refuse a member the protocol does not define (a misspelt 'ouputs' would otherwise ask for every output)."""
    unknown = [key for key in item if key not in members]
    if unknown:
        raise MalformedInput(f"{where}: unknown member {short(unknown[0])}; the protocol's are {list(members)}")


def _parameters(item: dict[str, Any], where: str) -> dict[str, Any]:
    params = item.get("parameters", {})
    if not isinstance(params, dict):
        raise MalformedInput(f"{where}: 'parameters' must be an object")
    for name in UNSUPPORTED_PARAMETERS:
        if name in params:
            raise MalformedInput(f"{where}: the {name!r} parameter is not supported by this server")
    return params


def _shape(value: Any, spec: TensorSpec, max_batch: int) -> list[int]:
    """The request's shape, checked against the model's (-1: the batch axis, 1 to max_batch)."""
    expected = spec.shape
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise MalformedInput(f"input {spec.name!r}: 'shape' must be a list of integers; the model takes {expected}")
    if len(value) != len(expected) or any(e != -1 and d != e for d, e in zip(value, expected, strict=False)):
        raise MalformedInput(f"input {spec.name!r} has shape {short(value)}; the model takes {expected}")
    for d, e in zip(value, expected, strict=True):
        if e == -1 and not 1 <= d <= max_batch:
            raise MalformedInput(f"input {spec.name!r}: batch size {d} is outside 1 to {max_batch} (max_batch_size)")
    return value


def _json_data(data: Any, spec: TensorSpec, shape: list[int], count: int) -> np.ndarray:
    """Numbers given flat or nested (row major); booleans, strings and ragged lists are refused."""
    if not isinstance(data, list):
        raise MalformedInput(f"input {spec.name!r}: 'data' must be a list of numbers")
    if len(data) not in (count, shape[0]):  # neither flat nor nested by the shape: refuse before converting
        raise MalformedInput(f"input {spec.name!r}: 'data' has {len(data)} items; shape {shape} needs {count} values")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise MalformedInput(f"input {spec.name!r}: 'data' is ragged or holds values that are not numbers") from None
    if array.dtype.kind not in "iuf" or _holds_bool(data, array.ndim):
        raise MalformedInput(f"input {spec.name!r}: 'data' must hold numbers only (FP32), no true or false")
    if array.size != count:
        raise MalformedInput(f"input {spec.name!r} has {array.size} values; shape {shape} needs {count}")
    if array.ndim > 1 and list(array.shape) != shape:
        raise MalformedInput(
            f"input {spec.name!r}: 'data' is nested as {list(array.shape)}; send it as {shape} or flat"
        )
    with np.errstate(over="ignore"):  # out-of-range values become inf, which the caller refuses
        return array.astype(WIRE_DTYPES["FP32"]).reshape(shape)


def _holds_bool(data: list, depth: int) -> bool:
    """Whether a regular nested list `depth` deep holds a boolean (numpy would read true as 1)."""
    if depth <= 1:
        return bool in map(type, data)
    return any(_holds_bool(item, depth - 1) for item in data)


def _input(item: Any, spec: TensorSpec, binary: memoryview, offset: int, max_batch: int) -> tuple[np.ndarray, int]:
    """One input tensor and the binary offset after it."""
    where = f"input {spec.name!r}"
    _known_members(item, INPUT_MEMBERS, where)
    wanted = datatype(spec)
    if item.get("datatype") != wanted:
        raise MalformedInput(f"{where} has datatype {short(item.get('datatype'))}; the model takes {wanted}")
    shape = _shape(item.get("shape"), spec, max_batch)
    count = math.prod(shape)
    params = _parameters(item, where)
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise MalformedInput(f"{where} has neither 'data' nor a 'binary_data_size' parameter")
        return _json_data(item["data"], spec, shape, count), offset
    if "data" in item:
        raise MalformedInput(f"{where} has both 'data' and a 'binary_data_size' parameter; send one")
    dtype = WIRE_DTYPES[wanted]
    if not isinstance(size, int) or isinstance(size, bool) or size != count * dtype.itemsize:
        raise MalformedInput(
            f"{where}: binary_data_size is {short(size)}; shape {shape} of {wanted} needs {count * dtype.itemsize}"
        )
    if offset + size > len(binary):
        raise MalformedInput(
            f"{where}: the binary section holds {len(binary) - offset} more bytes; binary_data_size says {size}"
        )
    array = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)
    return array, offset + size


def _outputs(document: dict[str, Any], specs: list[TensorSpec]) -> list[RequestedOutput]:
    """The outputs asked for (all, in the model's order, when none are named) and whether each goes binary."""
    params = _parameters(document, "the request")
    default_binary = params.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise MalformedInput("the request's 'binary_data_output' parameter must be true or false")
    asked = document.get("outputs")
    if asked is None:
        return [RequestedOutput(s.name, default_binary) for s in specs]
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise MalformedInput("'outputs' must be a list of objects with a 'name'")
    known = [s.name for s in specs]
    chosen: list[RequestedOutput] = []
    for item in asked:
        name = item.get("name")
        if name not in known:
            raise MalformedInput(f"unknown output {short(name)}; the model gives {known}")
        if any(o.name == name for o in chosen):
            raise MalformedInput(f"output {name!r} is asked for more than once")
        _known_members(item, OUTPUT_MEMBERS, f"output {name!r}")
        binary = _parameters(item, f"output {name!r}").get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise MalformedInput(f"output {name!r}: 'binary_data' must be true or false")
        chosen.append(RequestedOutput(name, binary))
    return chosen


MAX_TIMEOUT_US = 24 * 3600 * 10**6  # longer than any deadline the service keeps


def _timeout_s(document: dict[str, Any]) -> float | None:
    """The request's own `timeout` parameter (microseconds, as Triton's clients send it); 0 or absent: none."""
    value = _parameters(document, "the request").get("timeout", 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedInput("the request's 'timeout' parameter must be a whole number of microseconds")
    return min(value, MAX_TIMEOUT_US) / 1e6 if value else None


def parse_infer_request(
    body: bytes, header_length: str | None, inputs: list[TensorSpec], outputs: list[TensorSpec], max_batch: int
) -> InferRequest:
    """Decode and check an infer body against the model's tensors: names, datatypes, shapes, element counts and
    binary sizes. Every mismatch is a MalformedInput (400) that names the tensor."""
    header, binary = split_body(body, header_length)
    document = _load_json(header)
    _known_members(document, REQUEST_MEMBERS, "the request")
    items = document.get("inputs")
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise MalformedInput("'inputs' must be a list of tensor objects")
    specs = {s.name: s for s in inputs}
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for item in items:
        name = item.get("name")
        if not isinstance(name, str) or name not in specs:
            raise MalformedInput(f"unknown input {short(name)}; the model takes {list(specs)}")
        if name in arrays:
            raise MalformedInput(f"input {name!r} is given more than once")
        arrays[name], offset = _input(item, specs[name], binary, offset, max_batch)
    missing = [n for n in specs if n not in arrays]
    if missing:
        raise MalformedInput(f"missing input {missing[0]!r}; the model takes {list(specs)}")
    if offset != len(binary):
        raise MalformedInput(
            f"the binary section holds {len(binary)} bytes; the inputs' binary_data_size add up to {offset}"
        )
    batches = {a.shape[0] for a in arrays.values()}
    if len(batches) > 1:
        raise MalformedInput(f"the inputs have different batch sizes {sorted(batches)}")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise MalformedInput("the request's 'id' must be a string, as the reply echoes it")
    return InferRequest(
        id=request_id,
        inputs=arrays,
        outputs=_outputs(document, outputs),
        timeout_s=_timeout_s(document),
    )


def encode_infer_response(
    header: dict[str, Any], outputs: list[tuple[RequestedOutput, np.ndarray]]
) -> tuple[bytes, dict[str, str]]:
    """The response body (JSON, then the binary outputs' bytes) and the headers that describe it."""
    tensors, blobs = [], []
    for requested, array in outputs:
        wire = np.ascontiguousarray(array, dtype=WIRE_DTYPES["FP32"])
        tensor: dict[str, Any] = {"name": requested.name, "datatype": "FP32", "shape": list(wire.shape)}
        if requested.binary:
            blobs.append(wire.tobytes())
            tensor["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            tensor["data"] = wire.ravel().tolist()
        tensors.append(tensor)
    text = json.dumps({**header, "outputs": tensors}, separators=(",", ":")).encode()
    if not blobs:
        return text, {"content-type": "application/json"}
    return text + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(text))}
