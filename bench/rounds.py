"""Paired rounds: the headline figures measured as alternating pairs, so that a shared machine's drift hits both sides.

Each round measures the in-process ceiling (every layout), then the running service at the headline client counts;
every ratio and latency difference is taken within its round, and the report gives their medians over the rounds.
A sweep measures the ceiling once before and once after minutes of servers; a neighbour that takes the CPU for a
minute moves one side of its ratios only. Here it moves one round, and the median shrugs it off.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable

from bench.inprocess import best
from bench.load import run_load

HEADLINE_CLIENTS = (16, 1)

# Each headline figure: its column, its title, and the target it is held to (the issue that sets it).
FIGURES = (
    ("ratio_one_session_16", "throughput at 16 clients / in-process, 1 session", ">= 0.85"),
    ("ratio_best_layout_16", "throughput at 16 clients / in-process, best layout", ">= 0.90"),
    ("p50_over_single_ms_1", "p50 at 1 client - in-process single-patch p50 (ms)", "<= 3 (and <= 5)"),
    ("p99_ms_16", "p99 at 16 clients (ms)", "<= the peer's"),
    ("rps_16", "requests/s at 16 clients", ""),
)


def paired_rounds(
    rounds: int,
    measure_ceiling: Callable[[], list[dict]],
    port: int,
    request: bytes,
    requests: int,
) -> list[dict]:
    """`rounds` rounds of the ceiling then the service (already running on `port`) at 16 and at 1 client."""
    rows = []
    for n in range(1, rounds + 1):
        ceiling = measure_ceiling()
        one_session, best_layout = best(ceiling, "1 session"), best(ceiling)
        single_ms = min(c["p50_ms"] for c in ceiling if c["layout"] == "1 session" and c["batch"] == 1)
        row = {"round": n, "ceiling_one_session": one_session, "ceiling_best_layout": best_layout}
        row["single_ms"] = single_ms
        for clients in HEADLINE_CLIENTS:
            result = asyncio.run(run_load("127.0.0.1", port, request, clients, requests, warmup=max(2 * clients, 20)))
            row[f"rps_{clients}"] = result.throughput
            row[f"p50_ms_{clients}"] = result.percentile_ms(50)
            row[f"p99_ms_{clients}"] = result.percentile_ms(99)
            row[f"non_200_{clients}"] = sum(k for s, k in result.statuses.items() if s != 200)
        row["ratio_one_session_16"] = row["rps_16"] / one_session
        row["ratio_best_layout_16"] = row["rps_16"] / best_layout
        row["p50_over_single_ms_1"] = row["p50_ms_1"] - single_ms
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict[str, tuple[float, float, float]]:
    """Median, minimum and maximum over the rounds of each headline figure."""
    out = {}
    for key, _, _ in FIGURES:
        values = [r[key] for r in rows]
        out[key] = (statistics.median(values), min(values), max(values))
    return out


def markdown(rows: list[dict], requests: int, ceiling_seconds: float) -> list[str]:
    """The report's section: the medians with their targets, then every round."""
    stats = summary(rows)
    lines = [
        f"## Headline: the service in {len(rows)} paired rounds",
        "",
        f"Each round: the in-process ceiling (every layout above, {ceiling_seconds:g} s each), then the service, "
        f"already running, at 16 clients and at 1 client ({requests} requests each after a warm-up). Each ratio and "
        "difference is taken within its round; medians over the rounds, which a neighbour's burst on this shared "
        "machine moves less than the sweep's.",
        "",
        "| figure | median | min | max | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, title, target in FIGURES:
        median, low, high = stats[key]
        digits = 3 if key.startswith("ratio") else 2
        lines.append(f"| {title} | {median:.{digits}f} | {low:.{digits}f} | {high:.{digits}f} | {target} |")
    lines += [
        "",
        "| round | ceiling, 1 session | ceiling, best layout | in-process single ms | req/s at 16 | ratio, 1 session "
        "| ratio, best layout | p99 ms at 16 | p50 ms at 1 | p50 - single (ms) | non-200 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['round']} | {r['ceiling_one_session']:.1f} | {r['ceiling_best_layout']:.1f} | {r['single_ms']:.2f} "
            f"| {r['rps_16']:.1f} | {r['ratio_one_session_16']:.3f} | {r['ratio_best_layout_16']:.3f} "
            f"| {r['p99_ms_16']:.2f} | {r['p50_ms_1']:.2f} | {r['p50_over_single_ms_1']:+.2f} "
            f"| {r['non_200_16'] + r['non_200_1']} |"
        )
    return [*lines, ""]
