"""What a trained model came from, for its manifest: code, machine, held-out patients, and the args that applied."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def git_commit(repo: Path = REPO) -> str | None:
    """HEAD's hash, with "-dirty" when tracked files differ from it; None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Where training ran: float rounding, and so the trained weights, depend on the CPU's kernels and the threads."""
    import torch  # here, not at the top: the benchmark's GPU environment, which has no torch, reads cpu_model

    return {
        "git_commit": git_commit(),
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def patients_digest(patient_ids: np.ndarray) -> dict[str, Any]:
    """How many distinct patients, and the sha256 of their sorted ids, one per line."""
    ids = sorted({str(p) for p in patient_ids})
    return {"count": len(ids), "sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}


def applied_args(args: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The command line as it applied: where an option names a network setting, the network's value. Options that
    did not reach the network (a checkpoint's config wins on resume, and --dropout was ignored before 0b1b6cd) are
    listed under "args_not_applied" with the value given."""
    applied = {k: config.get(k, v) for k, v in args.items()}
    ignored = {k: v for k, v in args.items() if k in config and config[k] != v}
    return {"args": applied, **({"args_not_applied": ignored} if ignored else {})}
