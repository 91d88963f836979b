"""The reliability diagram beside the model card: predicted P(malignant) against the observed fraction malignant,
before and after calibration, drawn from the bins training/evaluate.py recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOT_FILE = "reliability.png"


def plot_reliability(calibration: dict[str, Any], path: Path) -> Path:
    """Write a PNG: per-bin mean prediction vs fraction positive (marker area ~ count), and the bin counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.2, 6.2), gridspec_kw={"height_ratios": [3, 1]}, sharex=True, constrained_layout=True
    )
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    series = [
        ("reliability_raw", f"raw (ECE {calibration['ece_raw']:.3f})", "tab:red", "o"),
        (
            "reliability_calibrated_cross_fitted",
            f"temperature {calibration['temperature']:.3f}, cross-fitted "
            f"(ECE {calibration['ece_calibrated_cross_fitted']:.3f})",
            "tab:blue",
            "s",
        ),
    ]
    width = 1.0 / calibration["bins"]
    for i, (key, label, color, marker) in enumerate(series):
        rows = calibration[key]
        x = [r["mean_predicted"] for r in rows]
        top.plot(x, [r["fraction_positive"] for r in rows], color=color, marker=marker, linewidth=1, label=label)
        top.scatter(
            x, [r["fraction_positive"] for r in rows], s=[6 * r["count"] for r in rows], color=color, alpha=0.25
        )
        centres = [(r["bin"] + 0.3 + 0.4 * i) * width for r in rows]
        bottom.bar(centres, [r["count"] for r in rows], width=0.4 * width, color=color)
    top.set_ylabel("observed fraction malignant")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_title(f"P(malignant) on {calibration['fitted_on']}", fontsize=9)
    top.legend(loc="upper left", fontsize=7)
    bottom.set_xlabel("predicted P(malignant)")
    bottom.set_ylabel("nodules")
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
