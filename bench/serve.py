"""Benchmark the service against onnxruntime in-process (the ceiling), in one run on this machine.

    python -m bench.serve [--concurrency 1 2 4 8 16 32] [--requests 400]

Starts the real server (`python -m service`) in its own process, drives it with the lean load generator, and prints
throughput and latency percentiles per concurrency next to the in-process ceiling, plus the server's own view from
/metrics (queue time against inference time, mean batch size). Writes CSV and Markdown under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
from prometheus_client.parser import text_string_to_metric_families

from bench.inprocess import measure, measure_parallel, open_session
from bench.load import multipart_request, run_load
from service.runtime.store import resolve
from training.data.phantoms import lung_background, paint_nodule, sample_nodule, scanner

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def bench_patch(seed: int = 0) -> tuple[bytes, str]:
    """A realistic request: a 40 x 64 x 64 int16 CT region at 1.25 x 0.7 x 0.7 mm with one nodule."""
    rng = np.random.default_rng(seed)
    spacing = (1.25, 0.7, 0.7)
    shape = (40, 64, 64)
    vol = lung_background(shape, spacing, rng)
    center = tuple((n - 1) * s / 2 for n, s in zip(shape, spacing, strict=True))
    paint_nodule(vol, spacing, sample_nodule(rng, center, (8.0, 14.0)))
    hu = np.round(scanner(vol, spacing, rng)).astype(np.int16)
    buf = io.BytesIO()
    np.save(buf, hu)
    return buf.getvalue(), ",".join(str(s) for s in spacing)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, env_extra: dict[str, str]) -> subprocess.Popen:
    env = {
        **os.environ,
        "RESMTNET_HOST": "127.0.0.1",
        "RESMTNET_PORT": str(port),
        "RESMTNET_PROVIDER": "cpu",
        "RESMTNET_LOG_LEVEL": "warning",
        **env_extra,
    }
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as r:
        text = r.read().decode()
    return {
        s.name: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if not s.labels or "le" not in s.labels
    }


def server_view(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("resmtnet_batch_size_count") or 1.0
    patches = delta("resmtnet_queue_wait_seconds_count") or 1.0
    return {
        "mean_batch": delta("resmtnet_batch_size_sum") / batches,
        "queue_ms": delta("resmtnet_queue_wait_seconds_sum") / patches * 1000,
        "inference_ms_per_batch": delta("resmtnet_inference_seconds_sum") / batches * 1000,
        "preprocess_ms": delta("resmtnet_preprocess_seconds_sum") / patches * 1000,
    }


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, onnxruntime {ort.__version__}, Python {platform.python_version()}"


def measure_ceiling(model: Path, threads: int, max_batch: int, size: int, seconds: float) -> list[dict]:
    """onnxruntime in-process on this model: one session with all the threads (the service's default layout) at
    batch 1 and the largest batch, and, with all cores, as many single-threaded sessions side by side."""
    session = open_session(model, threads)
    rows = [{"layout": "1 session", **measure(session, b, size, seconds)} for b in sorted({1, max_batch})]
    del session
    cores = os.cpu_count() or 1
    if threads in (0, cores) and cores > 1:
        rows += [
            {"layout": f"{cores} sessions x 1 thread", **measure_parallel(model, cores, b, size, seconds)}
            for b in sorted({1, max_batch})
        ]
    return rows


def best(rows: list[dict], layout: str | None = None) -> float:
    return max(r["patches_per_s"] for r in rows if layout is None or r["layout"] == layout)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, default=REPO / "model_store")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    p.add_argument("--requests", type=int, default=600)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads for both contenders")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--env", nargs="*", default=[], help="extra RESMTNET_X=Y settings for the server")
    p.add_argument("--ceiling-seconds", type=float, default=5.0, help="duration of each in-process measurement")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for serve-latest.{md,csv}")
    args = p.parse_args(argv)
    entry = resolve(args.store, "res_mtnet")
    size = entry.manifest.preprocessing.patch_size
    # Measured before and after the service, so that drift on a shared machine cannot flatter the ratio:
    # for every layout and batch size the faster of the two measurements counts.
    before = measure_ceiling(entry.onnx_path, args.threads, args.max_batch, size, args.ceiling_seconds)
    npy, spacing = bench_patch()
    port = free_port()
    env = {
        "RESMTNET_MODEL_STORE": str(args.store),
        "RESMTNET_INTRA_OP_THREADS": str(args.threads),
        "RESMTNET_MAX_BATCH_SIZE": str(args.max_batch),
    }
    env.update(dict(kv.split("=", 1) for kv in args.env))
    proc = start_server(port, env)
    rows = []
    try:
        request = multipart_request("127.0.0.1", port, "/predict", npy, spacing)
        for c in args.concurrency:
            start = scrape(port)
            result = asyncio.run(run_load("127.0.0.1", port, request, c, args.requests, warmup=max(2 * c, 20)))
            view = server_view(start, scrape(port))
            rows.append(
                {
                    "concurrency": c,
                    "throughput_rps": result.throughput,
                    "p50_ms": result.percentile_ms(50),
                    "p90_ms": result.percentile_ms(90),
                    "p99_ms": result.percentile_ms(99),
                    "non_200": sum(n for s, n in result.statuses.items() if s != 200),
                    **view,
                }
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    after = measure_ceiling(entry.onnx_path, args.threads, args.max_batch, size, args.ceiling_seconds)
    ceiling = [max(a, b, key=lambda r: r["patches_per_s"]) for a, b in zip(before, after, strict=True)]
    same, overall = best(ceiling, "1 session"), best(ceiling)
    for r in rows:
        r["ratio_same_layout"] = r["throughput_rps"] / same
        r["ratio_best_layout"] = r["throughput_rps"] / overall
    single_ms = min(r["p50_ms"] for r in ceiling if r["layout"] == "1 session" and r["batch"] == 1)
    report(rows, ceiling, single_ms, entry.manifest.version, args.out)


def report(rows: list[dict], ceiling: list[dict], single_ms: float, version: str, out: Path) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    lines = [
        f"# Service vs onnxruntime in-process, res_mtnet {version}, {stamp}",
        "",
        f"Machine: {machine()}",
        "",
        "In-process ceiling, the faster of a measurement before and one after the service's: "
        + "; ".join(
            f"{c['layout']}, batch {c['batch']}: {c['patches_per_s']:.1f} patches/s"
            + (f" (p50 {c['p50_ms']:.2f} ms per call)" if "p50_ms" in c else "")
            for c in ceiling
        ),
        "",
        "Ratios: 'same layout' divides by the best single session with the service's threads (its default layout); "
        "'best layout' by the best of every layout above.",
        "",
        f"Single-patch in-process latency (1 session, all threads, p50): {single_ms:.2f} ms.",
        "",
        "| clients | req/s | ratio, same layout | ratio, best layout | p50 ms | p90 ms | p99 ms "
        "| p50 - in-process single (ms) | mean batch | queue ms | inference ms/batch | preprocess ms | non-200 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['throughput_rps']:.1f} | {r['ratio_same_layout']:.3f} "
            f"| {r['ratio_best_layout']:.3f} | {r['p50_ms']:.2f} "
            f"| {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['p50_ms'] - single_ms:+.2f} | {r['mean_batch']:.2f} "
            f"| {r['queue_ms']:.2f} | {r['inference_ms_per_batch']:.2f} | {r['preprocess_ms']:.2f} | {r['non_200']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve-latest.md").write_text(text)
    with (out / "serve-latest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
