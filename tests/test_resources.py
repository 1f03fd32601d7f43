"""Core counting and worker planning: workers x threads never exceed the cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from curator.resources import available_cores, plan_workers


def test_slurm_cpus_per_task_caps_the_count() -> None:
    assert available_cores({"SLURM_CPUS_PER_TASK": "1"}) == 1


def test_cgroup_v2_quota_caps_the_count(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert available_cores({}, cgroup_root=tmp_path) == 1


def test_unlimited_cgroup_falls_back_to_affinity(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cores({}, cgroup_root=tmp_path) == available_cores({}, cgroup_root=tmp_path / "none")


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
