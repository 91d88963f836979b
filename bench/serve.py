"""Benchmark the service against onnxruntime in-process (the ceiling) and against peers, in one run on this machine.

    python -m bench.serve [--contenders service per-request litserve] [--concurrency 1 2 4 8 16 32] [--requests 1500]
    python -m bench.serve --provider cuda    # on a GPU: the same sweep on CUDA, batches up to 64, up to 128 clients

Each contender is a real server process (`python -m service`, `bench.per_request_app`, `bench.litserve_app`) on the
same committed model and the same onnxruntime threads, driven by the lean load generator with the same request (a
resampled .npy upload). The in-process ceiling is measured before and after the servers; the faster counts. For the
service, the server's own view from /metrics (queue time against inference time, mean batch size) is added. Then the
headline figures in paired rounds (bench.rounds): the ceiling, then the service at 16 and at 1 client, --rounds times.
Writes serve-latest.{md,csv,png} and serve-latest-rounds.csv under bench/results/ (serve-latest-cuda* for CUDA).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import platform
import shutil
import subprocess
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
from prometheus_client.parser import text_string_to_metric_families

from bench.inprocess import best, measure, measure_parallel, open_session
from bench.load import multipart_request, run_load
from bench.peer_model import worker_threads
from bench.plot import plot_sweep
from bench.rounds import markdown as rounds_markdown
from bench.rounds import paired_rounds
from bench.servers import REPO, Contender, running
from service.runtime.cpus import available_cpus
from service.runtime.session import CPU, CUDA
from service.runtime.store import resolve
from training.data.phantoms import lung_background, paint_nodule, sample_nodule, scanner
from training.provenance import cpu_model

RESULTS = REPO / "bench" / "results"
CONTENDERS = {
    c.key: c
    for c in (
        Contender("service", "Res-MTNet Serve", "service", "/readyz", has_metrics=True),
        Contender("per-request", "per-request FastAPI", "bench.per_request_app", "/readyz"),
        Contender("litserve", "LitServe", "bench.litserve_app", "/health"),
    )
}

# Per provider: the default largest batch, the default client counts, and the service's batching delay (on CUDA the
# batch size decides throughput, so batches may wait 2 ms for company, as in the CUDA image).
DEFAULTS = {
    "cpu": {"max_batch": 16, "concurrency": [1, 2, 4, 8, 16, 32], "max_delay_ms": "0", "litserve_workers": [1, 2]},
    "cuda": {
        "max_batch": 64,
        "concurrency": [1, 2, 4, 8, 16, 32, 64, 128],
        "max_delay_ms": "2",
        "litserve_workers": [1],
    },
}


def resolve_provider(setting: str, available: list[str]) -> str:
    """The provider to run, cuda or cpu, for the --provider setting; cuda asked for but missing is an error, not a quiet
    CPU run."""
    if setting == "cuda" and CUDA not in available:
        raise SystemExit(
            f"--provider cuda, but onnxruntime offers only {', '.join(available)}: install onnxruntime-gpu"
        )
    return "cuda" if setting in ("auto", "cuda") and CUDA in available else "cpu"


def ceiling_batches(provider: str, max_batch: int) -> list[int]:
    """Batch sizes of the in-process ceiling: 1 and the largest on CPU; on CUDA the sizes between as well."""
    sizes = {1, max_batch} if provider == "cpu" else {1, max_batch, *(b for b in (4, 16) if b < max_batch)}
    return sorted(sizes)


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


def gpu_name() -> str:
    """The GPUs nvidia-smi names, or "no GPU"."""
    if shutil.which("nvidia-smi") is None:
        return "no GPU"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return "no GPU"
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return ", ".join(names) if out.returncode == 0 and names else "no GPU"


def machine() -> str:
    return (
        f"{os.cpu_count()} cores, {cpu_model()}, {gpu_name()}, onnxruntime {ort.__version__}, "
        f"Python {platform.python_version()}"
    )


def measure_ceiling(
    model: Path, threads: int, max_batch: int, size: int, seconds: float, provider: str = "cpu"
) -> list[dict]:
    """onnxruntime in-process on this model: one session with all the threads (the layout a lone request gets) at
    the ceiling's batch sizes, and on CPU, with all cores, as many single-threaded sessions side by side (on CUDA the
    service keeps one session per GPU), unpinned and each on a CPU of its own. With threads 0 the CPU session gets
    one thread per available core, as the service's solo session does: left to choose, onnxruntime pins its own
    threads, and the caller then shares a core with one of them until the kernel moves it (a third slower)."""
    session = open_session(model, threads or (available_cpus() if provider == "cpu" else 0), provider)
    batches = ceiling_batches(provider, max_batch)
    rows = [{"layout": "1 session", **measure(session, b, size, seconds)} for b in batches]
    del session
    cores = os.cpu_count() or 1
    if provider == "cpu" and threads in (0, cores) and cores > 1:
        rows += [
            {
                "layout": f"{cores} sessions x 1 thread" + (", pinned" if pinned else ""),
                **measure_parallel(model, cores, b, size, seconds, pinned),
            }
            for pinned in (False, True)
            for b in sorted({1, max_batch})
        ]
    return rows


def sweep(contender: Contender, env: dict[str, str], request_for, concurrency: list[int], requests: int) -> list[dict]:
    """Throughput and latency percentiles at each concurrency, for one contender's server."""
    rows = []
    with running(contender, env) as server:
        port = server.port
        request = request_for(port)
        for c in concurrency:
            start = scrape(port) if contender.has_metrics else {}
            result = asyncio.run(run_load("127.0.0.1", port, request, c, requests, warmup=max(2 * c, 20)))
            view = server_view(start, scrape(port)) if contender.has_metrics else {}
            rows.append(
                {
                    "contender": contender.title,
                    "concurrency": c,
                    "throughput_rps": result.throughput,
                    "p50_ms": result.percentile_ms(50),
                    "p90_ms": result.percentile_ms(90),
                    "p99_ms": result.percentile_ms(99),
                    "non_200": sum(n for s, n in result.statuses.items() if s != 200),
                    **view,
                }
            )
    return rows


def litserve(timeout: float, workers: int) -> Contender:
    """LitServe with this batch timeout (seconds) and this many inference workers."""
    env = {"LITSERVE_BATCH_TIMEOUT": str(timeout), "LITSERVE_WORKERS": str(workers)}
    return Contender(**{**CONTENDERS["litserve"].__dict__, "env": env})


def tune_litserve(
    env: dict[str, str], request_for, timeouts: list[float], workers: list[int], requests: int
) -> tuple[float, int]:
    """LitServe's batch timeout and worker count that give it the most throughput at 16 clients (its fair tuning)."""
    best_rps, best_setting = -1.0, (timeouts[0], workers[0])
    for setting in ((t, w) for w in workers for t in timeouts):
        (row,) = sweep(litserve(*setting), env, request_for, [16], requests)
        if row["throughput_rps"] > best_rps:
            best_rps, best_setting = row["throughput_rps"], setting
    return best_setting


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, default=REPO / "model_store")
    p.add_argument("--contenders", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS))
    p.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="cpu", help="auto: CUDA where available")
    p.add_argument("--concurrency", type=int, nargs="+", help="clients (default 1 to 32; on CUDA to 128)")
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads for every contender")
    p.add_argument("--max-batch", type=int, help="largest batch (default 16; on CUDA 64)")
    p.add_argument("--litserve-timeouts", type=float, nargs="+", default=[0.0, 0.002, 0.005])
    p.add_argument("--litserve-workers", type=int, nargs="+", help="inference workers tried (default 1 and 2 on CPU)")
    p.add_argument("--env", nargs="*", default=[], help="extra RESMTNET_X=Y settings for the service")
    p.add_argument("--ceiling-seconds", type=float, default=5.0, help="duration of each in-process measurement")
    p.add_argument("--rounds", type=int, default=5, help="paired rounds of the ceiling and the service (0: none)")
    p.add_argument("--round-requests", type=int, default=1500, help="requests per client count in each round")
    p.add_argument("--round-ceiling-seconds", type=float, default=2.0, help="each in-process measurement in a round")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for serve-latest.{md,csv,png}")
    args = p.parse_args(argv)
    provider = resolve_provider(args.provider, ort.get_available_providers())
    defaults = DEFAULTS[provider]
    max_batch = args.max_batch or defaults["max_batch"]
    concurrency = args.concurrency or defaults["concurrency"]
    stem = "serve-latest" if provider == "cpu" else f"serve-latest-{provider}"
    entry = resolve(args.store, "res_mtnet")
    size = entry.manifest.preprocessing.patch_size
    # Measured before and after the servers, so that drift on a shared machine cannot flatter the ratios:
    # for every layout and batch size the faster of the two measurements counts.
    before = measure_ceiling(entry.onnx_path, args.threads, max_batch, size, args.ceiling_seconds, provider)
    npy, spacing = bench_patch()
    env = {
        "RESMTNET_MODEL_STORE": str(args.store),
        "RESMTNET_INTRA_OP_THREADS": str(args.threads),
        "RESMTNET_MAX_BATCH_SIZE": str(max_batch),
        "RESMTNET_PROVIDER": provider,
    }
    service_env = {"RESMTNET_MAX_DELAY_MS": defaults["max_delay_ms"]}

    def request_for(port: int) -> bytes:
        return multipart_request("127.0.0.1", port, "/predict", npy, spacing)

    rows: list[dict] = []
    notes = [
        f"Provider: {CUDA if provider == 'cuda' else CPU} in every contender and in the ceiling; the service's "
        f"batching delay {service_env['RESMTNET_MAX_DELAY_MS']} ms, largest batch {max_batch}."
    ]
    service_env |= dict(kv.split("=", 1) for kv in args.env)
    for key in args.contenders:
        contender = CONTENDERS[key]
        extra = service_env if key == "service" else {}
        if key == "litserve":
            workers = args.litserve_workers or defaults["litserve_workers"]
            timeout, chosen = tune_litserve(env, request_for, args.litserve_timeouts, workers, args.requests)
            contender = litserve(timeout, chosen)
            notes.append(
                f"LitServe: max_batch_size {max_batch}, fast_queue, {chosen} inference worker(s) each with "
                f"{worker_threads(args.threads, chosen)} onnxruntime thread(s), batch_timeout {timeout:g} s (the best "
                f"at 16 clients of batch timeouts {', '.join(f'{t:g}' for t in args.litserve_timeouts)} s and "
                f"{' or '.join(str(w) for w in workers)} workers)."
            )
        rows += sweep(contender, {**env, **extra}, request_for, concurrency, args.requests)
    after = measure_ceiling(entry.onnx_path, args.threads, max_batch, size, args.ceiling_seconds, provider)
    ceiling = [max(a, b, key=lambda r: r["patches_per_s"]) for a, b in zip(before, after, strict=True)]
    same, overall = best(ceiling, "1 session"), best(ceiling)
    for r in rows:
        r["ratio_one_session"] = r["throughput_rps"] / same
        r["ratio_best_layout"] = r["throughput_rps"] / overall
    single_ms = min(r["p50_ms"] for r in ceiling if r["layout"] == "1 session" and r["batch"] == 1)
    headline: list[dict] = []
    if "service" in args.contenders and args.rounds > 0:
        with running(CONTENDERS["service"], {**env, **service_env}) as server:
            headline = paired_rounds(
                args.rounds,
                lambda: measure_ceiling(
                    entry.onnx_path, args.threads, max_batch, size, args.round_ceiling_seconds, provider
                ),
                server.port,
                request_for(server.port),
                args.round_requests,
            )
    report(rows, ceiling, single_ms, entry.manifest.version, notes, args.out, stem)
    if headline:
        write_rounds(headline, args.round_requests, args.round_ceiling_seconds, args.out, stem)
    plot_sweep(
        rows,
        {"in-process, 1 session": same, "in-process, best layout": overall},
        f"res_mtnet {entry.manifest.version}, {provider}, on {machine()}",
        args.out / f"{stem}.png",
    )


def write_rounds(headline: list[dict], requests: int, ceiling_seconds: float, out: Path, stem: str) -> None:
    """Append the paired rounds' section to the report and write its rows as {stem}-rounds.csv."""
    text = "\n".join(rounds_markdown(headline, requests, ceiling_seconds))
    print(text)
    with (out / f"{stem}.md").open("a") as f:
        f.write("\n" + text)
    with (out / f"{stem}-rounds.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(headline[0]))
        writer.writeheader()
        writer.writerows(headline)


def report(
    rows: list[dict],
    ceiling: list[dict],
    single_ms: float,
    version: str,
    notes: list[str],
    out: Path,
    stem: str = "serve-latest",
) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    lines = [
        f"# Service vs onnxruntime in-process and peers, res_mtnet {version}, {stamp}",
        "",
        f"Machine: {machine()}",
        "",
        "In-process ceiling, the faster of a measurement before and one after the servers: "
        + "; ".join(
            f"{c['layout']}, batch {c['batch']}: {c['patches_per_s']:.1f} patches/s"
            + (f" (p50 {c['p50_ms']:.2f} ms per call)" if "p50_ms" in c else "")
            for c in ceiling
        ),
        "",
        "Ratios: '1 session' divides by one in-process session with all the threads (the layout a lone request "
        "gets); 'best layout' by the best of every layout above"
        + (
            " (the service runs single-threaded sessions side by side under load, RESMTNET_SOLO_SESSION, each"
            " pinned to a CPU of its own where it owns its CPUs, RESMTNET_PIN_SESSIONS)."
            if len({c["layout"] for c in ceiling}) > 1
            else " (one session here, as the service keeps one per GPU: both ratios are the same)."
        ),
        "",
        f"Single-patch in-process latency (1 session, all threads, p50): {single_ms:.2f} ms.",
        "",
        *notes,
        "",
    ]
    for title in dict.fromkeys(r["contender"] for r in rows):
        mine = [r for r in rows if r["contender"] == title]
        has_view = "mean_batch" in mine[0]
        lines += [
            f"## {title}",
            "",
            "| clients | req/s | ratio, 1 session | ratio, best layout | p50 ms | p90 ms | p99 ms "
            "| p50 - in-process single (ms) | non-200 |"
            + (" mean batch | queue ms | inference ms/batch | preprocess ms |" if has_view else ""),
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
            + (" --- | --- | --- | --- |" if has_view else ""),
        ]
        for r in mine:
            line = (
                f"| {r['concurrency']} | {r['throughput_rps']:.1f} | {r['ratio_one_session']:.3f} "
                f"| {r['ratio_best_layout']:.3f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} "
                f"| {r['p50_ms'] - single_ms:+.2f} | {r['non_200']} |"
            )
            if has_view:
                line += (
                    f" {r['mean_batch']:.2f} | {r['queue_ms']:.2f} | {r['inference_ms_per_batch']:.2f} "
                    f"| {r['preprocess_ms']:.2f} |"
                )
            lines.append(line)
        lines.append("")
    text = "\n".join(lines)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with (out / f"{stem}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
