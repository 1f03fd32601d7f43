"""Core counting and worker planning: workers x threads never exceed the cores."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import dask.system
import pytest

from curator.resources import available_cores, plan_workers


def test_slurm_cpus_per_task_caps_the_count() -> None:
    assert available_cores({"SLURM_CPUS_PER_TASK": "1"}) == 1


@pytest.mark.parametrize("value", ["100000", "0", "", "two"])
def test_slurm_never_raises_the_count_and_odd_values_are_ignored(value: str) -> None:
    assert available_cores({"SLURM_CPUS_PER_TASK": value}) == dask.system.cpu_count()


def test_without_slurm_the_count_is_dasks() -> None:
    assert available_cores({}) == dask.system.cpu_count()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity (Linux)")
def test_a_real_affinity_change_is_followed() -> None:
    """A process pinned to one CPU after start-up counts one core (as `taskset` or SLURM's binding do)."""
    code = (
        "import os; from curator.resources import available_cores; "
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); print(available_cores({}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "1"


def test_the_quota_of_a_nested_cgroup_v2_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dask reads cpu.max of this process's own cgroup (/proc/self/cgroup), not only the root's."""
    files = {
        "/proc/self/cgroup": "0::/slurm/uid_1000/job_42/step_0\n",
        "/sys/fs/cgroup/slurm/uid_1000/job_42/step_0/cpu.max": "100000 100000\n",
    }

    def fake_open(path: str, *args: object, **kwargs: object) -> io.StringIO:
        if path in files:
            return io.StringIO(files[path])
        raise FileNotFoundError(path)

    monkeypatch.setattr(dask.system, "LINUX", True)
    monkeypatch.setattr(dask.system, "open", fake_open, raising=False)
    assert available_cores({}) == 1
    files["/sys/fs/cgroup/slurm/uid_1000/job_42/step_0/cpu.max"] = "max 100000\n"  # no quota
    assert available_cores({}) == min(len(os.sched_getaffinity(0)), os.cpu_count() or 1)


@pytest.mark.parametrize(
    ("cores", "workers", "threads", "expected"),
    [
        (2, None, None, (1, 2)),
        (16, None, None, (4, 4)),
        (16, 8, None, (8, 2)),
        (16, None, 1, (16, 1)),
        (3, 2, None, (2, 1)),
    ],
)
def test_plan_workers(
    cores: int, workers: int | None, threads: int | None, expected: tuple[int, int]
) -> None:
    n, t = plan_workers(cores, workers, threads)
    assert (n, t) == expected
    assert n * t <= cores
