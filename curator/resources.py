"""How many cores this process may really use (affinity, cgroup quota, SLURM), not os.cpu_count()."""

from __future__ import annotations

import math
import os
from pathlib import Path


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPU quota in cores from cgroup v2 (cpu.max) or v1 (cfs_quota/cfs_period), if one is set."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def available_cores(environ: dict[str, str] | None = None, cgroup_root: Path | None = None) -> int:
    """The smallest of CPU affinity, the cgroup quota and SLURM_CPUS_PER_TASK; at least 1."""
    environ = os.environ if environ is None else environ
    counts: list[float] = []
    try:
        counts.append(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        counts.append(os.cpu_count() or 1)
    quota = _cgroup_quota(cgroup_root) if cgroup_root else _cgroup_quota()
    if quota:
        counts.append(quota)
    slurm = environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        counts.append(int(slurm))
    return max(1, math.floor(min(counts)))


def plan_workers(cores: int, n_workers: int | None, torch_threads: int | None) -> tuple[int, int]:
    """Split cores into (workers, torch threads each) so that workers x threads <= cores."""
    if n_workers is None and torch_threads is None:
        torch_threads = min(cores, 4)
    if n_workers is None:
        n_workers = max(1, cores // max(1, torch_threads or 1))
    if torch_threads is None:
        torch_threads = max(1, cores // n_workers)
    return n_workers, torch_threads
