"""How many CPUs this process may really use: its affinity mask, capped by a cgroup CPU quota.

A container limited to 2 CPUs on a 64-core node still sees 64 cores in its affinity mask; planning sessions and
threads from that would oversubscribe the quota and get the process throttled (Kubernetes `resources.limits.cpu`,
`docker run --cpus`). The quota is read from cgroup v2 (`cpu.max`) or v1 (`cpu.cfs_quota_us` / `cpu.cfs_period_us`)
for this process's cgroup and every parent, and the tightest one wins. A fractional quota rounds down, at least 1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (all CPUs where the platform has no masks)."""
    return len(affinity_mask()) or os.cpu_count() or 1


def affinity_mask() -> list[int]:
    """The CPUs this process may run on, in order (empty where the platform has no masks: nothing can be pinned)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def pin_this_thread(cpu: int) -> bool:
    """Run the calling thread on `cpu` only; False where that is not possible (the thread then runs anywhere)."""
    try:
        os.sched_setaffinity(0, {cpu})  # 0: on Linux, the calling thread
    except (AttributeError, OSError, ValueError):
        return False
    return True


def available_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """Affinity CPUs, capped by the tightest cgroup CPU quota above this process (floor, at least 1)."""
    cpus = affinity_cpus()
    quota = cgroup_cpu_quota(root, proc_cgroup)
    return cpus if quota is None else max(1, min(cpus, math.floor(quota)))


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup or its parents; None when unlimited or unknown."""
    quotas = [q for q in (*_v2_quotas(root, proc_cgroup), *_v1_quotas(root, proc_cgroup)) if q is not None]
    return min(quotas) if quotas else None


def _own_paths(proc_cgroup: Path) -> dict[str, str]:
    """This process's cgroup path per hierarchy: "" for the v2 unified one, each controller's name for v1."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return {}
    paths: dict[str, str] = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _with_parents(base: Path, relative: str) -> list[Path]:
    """base/relative and each parent up to base. Inside a container's cgroup namespace the own path is "/" and
    the namespace's root already is the container's cgroup."""
    here = base / relative.strip("/")
    chain = [here]
    while here != base and base in here.parents:
        here = here.parent
        chain.append(here)
    return chain


def _v2_quotas(root: Path, proc_cgroup: Path) -> list[float | None]:
    own = _own_paths(proc_cgroup).get("", "/")
    return [_read_v2(d / "cpu.max") for d in _with_parents(root, own)] + [_read_v2(root / "cpu.max")]


def _v1_quotas(root: Path, proc_cgroup: Path) -> list[float | None]:
    own = _own_paths(proc_cgroup).get("cpu", "/")
    out: list[float | None] = []
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        base = root / mount
        out += [_read_v1(d) for d in _with_parents(base, own)] + [_read_v1(base)]
    return out


def _read_v2(path: Path) -> float | None:
    """cpu.max: "<quota> <period>" in microseconds, or "max <period>" for no limit."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return _ratio(quota, period)


def _read_v1(directory: Path) -> float | None:
    """cpu.cfs_quota_us (-1 for no limit) over cpu.cfs_period_us."""
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:  # "max"
        return None
    return q / p if q > 0 and p > 0 else None
