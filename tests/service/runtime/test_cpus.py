"""CPU quotas: a container's CPU limit caps the cores the worker plan shares out."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import Settings
from service.runtime import cpus
from service.runtime.cpus import affinity_cpus, available_cpus, cgroup_cpu_quota
from service.state import WorkerPlan, worker_plan


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def v2(tmp_path: Path) -> tuple[Path, Path]:
    """A unified (v2) hierarchy: the process in /kubepods/pod1/c1, the pod's limit on its parent."""
    root = tmp_path / "cgroup"
    _write(root / "cpu.max", "max 100000\n")
    _write(root / "kubepods" / "cpu.max", "max 100000\n")
    _write(root / "kubepods" / "pod1" / "cpu.max", "250000 100000\n")
    _write(root / "kubepods" / "pod1" / "c1" / "cpu.max", "max 100000\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/kubepods/pod1/c1\n")
    return root, proc


def test_a_v2_quota_on_a_parent_cgroup_applies(v2):
    root, proc = v2
    assert cgroup_cpu_quota(root, proc) == pytest.approx(2.5)
    assert available_cpus(root, proc) == min(affinity_cpus(), 2)


def test_the_tightest_quota_wins(v2):
    root, proc = v2
    _write(root / "kubepods" / "pod1" / "c1" / "cpu.max", "150000 100000\n")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(1.5)
    assert available_cpus(root, proc) == 1


def test_inside_a_cgroup_namespace_the_root_holds_the_containers_quota(tmp_path):
    root = tmp_path / "cgroup"
    _write(root / "cpu.max", "100000 100000\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/\n")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(1.0)


def test_a_v1_quota_is_read_from_the_cpu_controller(tmp_path):
    root = tmp_path / "cgroup"
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "300000\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    assert cgroup_cpu_quota(root, proc) == pytest.approx(3.0)


@pytest.mark.parametrize("text", ["max 100000\n", "-1 100000\n", "garbage\n", ""])
def test_no_limit_or_an_unreadable_file_leaves_the_affinity(tmp_path, text):
    root = tmp_path / "cgroup"
    _write(root / "cpu.max", text)
    _write(root / "cpu" / "cpu.cfs_quota_us", text)
    _write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/\n")
    assert cgroup_cpu_quota(root, proc) is None
    assert available_cpus(root, proc) == affinity_cpus()


def test_no_cgroup_filesystem_at_all(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "absent", tmp_path / "absent_proc") is None


def test_a_quota_below_one_cpu_still_gets_one(tmp_path):
    root = tmp_path / "cgroup"
    _write(root / "cpu.max", "50000 100000\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/\n")
    assert available_cpus(root, proc) == 1


def test_the_worker_plan_follows_the_quota(monkeypatch):
    """On a 64-core node limited to 2 CPUs: planned for 2 cores, not 16 sessions of 4 threads."""
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 64)
    monkeypatch.setattr("service.state.affinity_mask", lambda: list(range(64)))
    monkeypatch.setattr(cpus, "cgroup_cpu_quota", lambda *a, **k: 2.0)
    assert worker_plan(Settings(), "CPUExecutionProvider") == WorkerPlan((1, 1), 2)  # and no CPU pinned: shared
    monkeypatch.setattr(cpus, "cgroup_cpu_quota", lambda *a, **k: None)
    assert worker_plan(Settings(), "CPUExecutionProvider") == WorkerPlan((4,) * 16, 64)
