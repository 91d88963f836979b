"""PNG of a sweep: throughput and p50/p90/p99 latency against concurrency, one line per contender."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_sweep(rows: list[dict], ceilings: dict[str, float], title: str, out: Path) -> None:
    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(12, 4.5))
    contenders = list(dict.fromkeys(r["contender"] for r in rows))
    for name in contenders:
        mine = [r for r in rows if r["contender"] == name]
        x = [r["concurrency"] for r in mine]
        (line,) = ax_t.plot(x, [r["throughput_rps"] for r in mine], marker="o", label=name)
        for q, style in (("p50_ms", "-"), ("p90_ms", "--"), ("p99_ms", ":")):
            ax_l.plot(x, [r[q] for r in mine], style, color=line.get_color(), label=f"{name} {q[:3]}")
    for label, value in ceilings.items():
        ax_t.axhline(value, color="grey", linestyle="--", linewidth=1)
        ax_t.annotate(label, (1, value), textcoords="offset points", xytext=(2, 3), fontsize=8, color="grey")
    for ax in (ax_t, ax_l):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.grid(alpha=0.3)
    ax_t.set_ylabel("requests per second")
    ax_t.set_ylim(bottom=0)
    ax_l.set_ylabel("latency (ms)")
    ax_l.set_yscale("log")
    ax_t.legend(fontsize=8)
    ax_l.legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
