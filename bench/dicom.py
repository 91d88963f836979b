"""CT upload benchmark: upload-to-answer through the real server against SimpleITK only reading the same series.

    python -m bench.dicom [--slices 300] [--size 512] [--repeats 7]

A chest phantom of `slices` x `size` x `size` voxels with one nodule is written as an uncompressed DICOM series (one
file per slice). Side by side in one run, alternating: (a) POST /predict to `python -m service` over HTTP with every
file as a multipart `series` part and the nodule's world centre, timed from the first byte sent to the last byte of
the answer (the body is built once beforehand, as a portal holding the files would); (b) SimpleITK's
ImageSeriesReader reading the series folder into a volume (file names by GDCM's series scan, then Execute), from
the page cache. Prints medians and their ratio; writes bench/results/dicom-latest.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import SimpleITK as sitk

from bench.servers import REPO, Contender, running
from training.data.chest import render_chest
from training.data.dicom_series import write_series

RESULTS = REPO / "bench" / "results"
SERVICE = Contender("service", "Res-MTNet Serve", "service", "/readyz", has_metrics=True)


def make_series(folder: Path, slices: int, size: int, seed: int = 0) -> tuple[list[Path], dict[str, float], float]:
    """The series files, the nodule's world centre and its true diameter."""
    phantom = render_chest(
        seed, shape=(slices, size, size), spacing=(1.0, 0.7, 0.7), n_nodules=1, diameter_range=(8.0, 16.0)
    )
    paths = write_series(phantom, folder)
    x, y, z = phantom.nodule_world_xyz[0]
    return paths, {"x": x, "y": y, "z": z}, phantom.nodules[0].diameter_mm


def multipart_body(paths: list[Path], centers: list[dict[str, float]]) -> tuple[bytes, str]:
    """multipart/form-data: `centers`, then one `series` part per file."""
    boundary = uuid.uuid4().hex
    chunks = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="centers"\r\n\r\n{json.dumps(centers)}\r\n'.encode()
    ]
    for n, path in enumerate(paths):
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="series"; filename="{n:04d}.dcm"\r\n'
            "Content-Type: application/dicom\r\n\r\n"
        )
        chunks += [head.encode(), path.read_bytes(), b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def upload(port: int, body: bytes, content_type: str) -> tuple[float, dict]:
    """Seconds from the first byte sent to the whole answer read, and the answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        started = time.perf_counter()
        conn.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"the service answered {response.status}: {payload[:300]!r}")
    return elapsed, json.loads(payload)


def sitk_read(folder: Path) -> tuple[float, tuple[int, ...]]:
    """Seconds for SimpleITK to find the series' files and read them into one volume."""
    started = time.perf_counter()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    return time.perf_counter() - started, image.GetSize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as tmp:
        folder = Path(tmp) / "series"
        t = time.perf_counter()
        paths, center, diameter = make_series(folder, args.slices, args.size)
        series_bytes = sum(p.stat().st_size for p in paths)
        print(f"series: {len(paths)} files, {series_bytes / 1e6:.1f} MB, written in {time.perf_counter() - t:.1f} s")
        body, content_type = multipart_body(paths, [center])
        env = {"RESMTNET_MODEL_STORE": str(REPO / "model_store")}
        ours, theirs, answers = [], [], []
        with running(SERVICE, env) as server:
            upload(server.port, body, content_type)  # warm-up: first request, first decode
            sitk_read(folder)
            for _ in range(args.repeats):
                seconds, answer = upload(server.port, body, content_type)
                ours.append(seconds)
                answers.append(answer)
                seconds, size = sitk_read(folder)
                theirs.append(seconds)
    report(args, len(paths), series_bytes, diameter, ours, theirs, answers, size)


def report(args, files, series_bytes, diameter, ours, theirs, answers, size) -> None:  # noqa: ANN001
    ours_ms, theirs_ms = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
    ratio = ours_ms / theirs_ms
    server_pre = statistics.median(a["timings_ms"]["preprocess"] for a in answers)
    server_total = statistics.median(a["timings_ms"]["total"] for a in answers)
    nodule = answers[-1]["nodules"][0]
    cpu = platform.processor() or platform.machine()
    lines = [
        "# CT upload benchmark",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {_cpus()} cores, {cpu}, Python "
        f"{platform.python_version()}, SimpleITK {sitk.Version.VersionString()}.",
        "",
        f"Series: {files} uncompressed CT files of {args.size} x {args.size} (int16, {series_bytes / 1e6:.1f} MB), "
        f"1.0 x 0.7 x 0.7 mm, one nodule (true diameter {diameter:.1f} mm). {args.repeats} repetitions, alternating, "
        "after one warm-up each; medians.",
        "",
        "| | median ms | min ms | max ms |",
        "| --- | --- | --- | --- |",
        f"| upload to answer: HTTP multipart to `python -m service`, model included | {ours_ms:.0f} | "
        f"{min(ours) * 1000:.0f} | {max(ours) * 1000:.0f} |",
        f"| SimpleITK ImageSeriesReader: read the series into a volume {size} | {theirs_ms:.0f} | "
        f"{min(theirs) * 1000:.0f} | {max(theirs) * 1000:.0f} |",
        "",
        f"Ratio upload-to-answer / SimpleITK read: **{ratio:.2f}** (target: at most 1).",
        "",
        f"Inside the server (median): handler total {server_total:.0f} ms, from the request's start to the answer: "
        f"the body received (about {series_bytes / 1e6:.0f} MB over loopback), the multipart form split, then "
        f"{server_pre:.0f} ms of series preparation (headers of every file, pixel data of the slices around the "
        "nodule, resampling) and the model.",
        f"Answer: diameter {nodule['measurements']['diameter_mm']:.2f} mm, centre voxel "
        f"({nodule['center']['i']:.1f}, {nodule['center']['j']:.1f}, {nodule['center']['k']:.1f}).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dicom-latest.md").write_text(text)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    main()
