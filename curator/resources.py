"""How many cores this process may really use (affinity, cgroup quota, SLURM), not os.cpu_count()."""

from __future__ import annotations

import os

from dask.system import cpu_count


def available_cores(environ: dict[str, str] | None = None) -> int:
    """Dask's count (CPU affinity and the cgroup v1/v2 quota of this process's own, possibly nested,
    cgroup), capped by SLURM_CPUS_PER_TASK when it is set; at least 1."""
    environ = os.environ if environ is None else environ
    cores = cpu_count()  # recomputed on every call: an affinity set since start-up counts
    slurm = environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cores = min(cores, int(slurm))
    return max(1, cores)


def plan_workers(cores: int, n_workers: int | None, torch_threads: int | None) -> tuple[int, int]:
    """Split cores into (workers, torch threads each) so that workers x threads <= cores."""
    if n_workers is None and torch_threads is None:
        torch_threads = min(cores, 4)
    if n_workers is None:
        n_workers = max(1, cores // max(1, torch_threads or 1))
    if torch_threads is None:
        torch_threads = max(1, cores // n_workers)
    return n_workers, torch_threads
