"""Soak: a long mixed load on the real service; every answer must be a deliberate one (no 5xx), and resident memory
must stay flat once warm.

    python -m bench.soak [--minutes 10] [--requests N] [--concurrency 8]

The mix, taken in turn by every client: .npy patches of several shapes and spacings, a JSON patch, a CT upload
(a small DICOM series written with pydicom), and bad inputs (garbage .npy, NaN values, wrong content type, missing
spacing). Prints counts by status, the 5xx count, and resident memory after warm-up and at the end (also written to
bench/results/soak-latest.md). Not part of make test: it runs for minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from bench.load import Connection, multipart_request
from bench.serve import RESULTS, bench_patch
from bench.servers import REPO, Contender, resident_mb, running

SERVICE = Contender("service", "Res-MTNet Serve", "service", "/readyz", has_metrics=True)


def _post(host: str, port: int, content_type: str, body: bytes) -> bytes:
    head = f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _form(host: str, port: int, fields: list[tuple[str, str | None, bytes]]) -> bytes:
    """multipart/form-data with (name, filename or None, content) parts."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, filename, content in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return _post(host, port, f"multipart/form-data; boundary={boundary}", body)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def ct_upload(host: str, port: int) -> bytes:
    """A small chest phantom as a DICOM series (one file per slice) with the world centre of its first nodule."""
    from training.data.chest import render_chest
    from training.data.dicom_series import write_series

    phantom = render_chest(seed=7, shape=(60, 96, 96), spacing=(1.5, 0.8, 0.8), n_nodules=1)
    with tempfile.TemporaryDirectory() as folder:
        files = write_series(phantom, Path(folder))
        fields: list[tuple[str, str | None, bytes]] = [("series", p.name, p.read_bytes()) for p in files]
    x, y, z = phantom.nodule_world_xyz[0]
    fields.append(("centers", None, json.dumps([{"x": x, "y": y, "z": z}]).encode()))
    return _form(host, port, fields)


def request_mix(host: str, port: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    npy, spacing = bench_patch()
    mix = [multipart_request(host, port, "/predict", npy, spacing)]
    for seed, shape, sp in ((1, (24, 48, 48), "2.0,0.9,0.9"), (2, (64, 64, 64), "1,1,1")):
        npy_other, _ = bench_patch(seed)
        vol = np.load(io.BytesIO(npy_other))
        mix.append(multipart_request(host, port, "/predict", _npy(np.resize(vol, shape)), sp))
    small = np.round(rng.normal(-700, 200, (16, 16, 16))).tolist()
    mix.append(_post(host, port, "application/json", json.dumps({"patch": small, "spacing": [2, 2, 2]}).encode()))
    try:
        mix.append(ct_upload(host, port))
    except (ImportError, TypeError, AttributeError) as exc:  # the phantom tools changed: say so, keep soaking
        print(f"no CT upload in the mix: {exc}")
    nan = np.full((8, 8, 8), np.nan, np.float32)
    mix += [
        _form(host, port, [("patch", "p.npy", b"\x93NUMPY garbage"), ("spacing", None, b"1,1,1")]),
        _form(host, port, [("patch", "p.npy", _npy(nan)), ("spacing", None, b"1,1,1")]),
        _post(host, port, "text/plain", b"hello"),
        _form(host, port, [("patch", "p.npy", npy)]),
    ]
    return mix


async def soak(port: int, mix: list[bytes], concurrency: int, until: float, max_requests: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    sent = 0

    async def client(offset: int) -> None:
        nonlocal sent
        conn = await Connection.open("127.0.0.1", port)
        i = offset
        while time.monotonic() < until and sent < max_requests:
            sent += 1
            i += 1
            try:
                status, _ = await conn.send(mix[i % len(mix)])
            except (asyncio.IncompleteReadError, ConnectionError):
                status = 0  # the server closed the connection: counted, then reconnect
                conn.close()
                conn = await Connection.open("127.0.0.1", port)
            statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return statuses


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--requests", type=int, default=10**9, help="stop after this many requests, if sooner")
    p.add_argument("--warmup", type=int, default=500, help="requests before the first memory reading")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--sample-s", type=float, default=30.0, help="seconds between resident-memory readings")
    p.add_argument("--store", type=Path, default=REPO / "model_store")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    with running(SERVICE, {"RESMTNET_MODEL_STORE": str(args.store)}) as server:
        mix = request_mix("127.0.0.1", server.port)
        warm = asyncio.run(soak(server.port, mix, args.concurrency, time.monotonic() + 600, args.warmup))
        start_mb = resident_mb(server.pid)
        samples, statuses = [start_mb], {}
        started = time.monotonic()
        until = started + args.minutes * 60
        while time.monotonic() < until and sum(statuses.values()) < args.requests:  # a memory reading each interval
            left = args.requests - sum(statuses.values())
            segment_end = min(until, time.monotonic() + args.sample_s)
            for status, n in asyncio.run(soak(server.port, mix, args.concurrency, segment_end, left)).items():
                statuses[status] = statuses.get(status, 0) + n
            samples.append(resident_mb(server.pid))
        elapsed = time.monotonic() - started
        end_mb = samples[-1]
    total = sum(statuses.values())
    errors = sum(n for s, n in statuses.items() if s >= 500 or s == 0)
    lines = [
        "# Soak",
        "",
        f"{total} requests in {elapsed / 60:.1f} min at {args.concurrency} clients after {sum(warm.values())} "
        f"warm-up requests; mix of {len(mix)} kinds (patches, JSON, CT upload, bad inputs).",
        "",
        "Status counts: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())) + " (0 = connection closed)",
        "",
        f"5xx or dropped connections: {errors}",
        "",
        f"Resident memory: {start_mb:.1f} MiB after warm-up, {end_mb:.1f} MiB at the end "
        f"({(end_mb / start_mb - 1) * 100:+.1f}%); over the second half of the run "
        f"{(end_mb / samples[len(samples) // 2] - 1) * 100:+.1f}% (a leak keeps climbing, a warming allocator levels "
        "off).",
        "",
        f"Resident memory every {args.sample_s:g} s (MiB): " + ", ".join(f"{m:.1f}" for m in samples),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak-latest.md").write_text(text)
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
