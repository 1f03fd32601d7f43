"""Sweeps: the sweep summary callback, the SLURM launcher's defaults, and a real submitit sweep."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from curator.callbacks import SweepSummary
from curator.config import register_configs
from tests.conftest import DOCS, sweep_zero_shot

ROOT = Path(__file__).resolve().parent.parent
MARKER = "hf_curatorTestMarker0123456789"  # a fake token: it must never land in a file
needs_submitit = pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="needs hydra-submitit-launcher (the slurm extra)",
)


def make_job(sweep: Path, num: int, overrides: list[str], summary: dict | None) -> None:
    """A job folder as Hydra and pipeline.run leave it."""
    hydra_dir = sweep / str(num) / ".hydra"
    hydra_dir.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), hydra_dir / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"job": {"num": num}}}), hydra_dir / "hydra.yaml")
    if summary is not None:
        (sweep / str(num) / "summary.json").write_text(json.dumps(summary))


def test_sweep_summary_lists_every_job_and_prints_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sweep = tmp_path / "multirun" / "day" / "time"
    counts = {"read": 6, "written": 4, "filtered": 2, "quarantined": 0, "seconds": 1.5}
    for num in (0, 1, 10):  # job 10 sorts after job 1 by number, not by name
        make_job(sweep, num, [f"classifier=c{num}"], {**counts, "docs_per_second": 4.0, "output_path": "o"})
    make_job(sweep, 2, ["classifier=broken"], None)  # failed: no summary.json
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    listed = json.loads((sweep / "sweep_summary.json").read_text())
    assert [j["job"] for j in listed["jobs"]] == [0, 1, 2, 10]
    assert [j["status"] for j in listed["jobs"]] == ["done", "done", "no summary", "done"]
    assert listed["jobs_total"] == 4 and listed["jobs_done"] == 3 and listed["read"] == 18
    assert listed["jobs"][0]["overrides"] == ["classifier=c0"] and listed["jobs"][0]["written"] == 4
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("Sweep: 3/4 job(s) done in")
    assert table[1].split() == [
        "job",
        "status",
        "read",
        "written",
        "filtered",
        "quarantined",
        "docs/s",
        "overrides",
    ]
    assert table[4].split() == ["2", "no", "summary", "-", "-", "-", "-", "-", "classifier=broken"]


def test_every_config_registers_the_sweep_summary_callback() -> None:
    register_configs()
    with initialize_config_module(config_module="curator.conf", version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True)
    assert cfg.hydra.callbacks.sweep_summary._target_ == "curator.callbacks.SweepSummary"


@needs_submitit
def test_slurm_launcher_defaults_are_overridable_and_its_sbatch_file_holds_no_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    register_configs()
    with initialize_config_module(config_module="curator.conf", version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.gpus_per_node=1",
            ],
            return_hydra_config=True,
        )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["timeout_min"], launcher["cpus_per_task"], launcher["mem_gb"]) == (240, 16, 64)
    # The sbatch file submitit writes from these parameters, mapped as the plugin's launch() maps them.
    monkeypatch.setenv("HF_TOKEN", MARKER)
    (tmp_path / "srun").write_text("#!/bin/sh\n")  # submitit checks that srun exists (no SLURM here)
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=str(tmp_path / "submitit"), cluster="slurm")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    params = {
        k: v for k, v in launcher.items() if k not in ("_target_", "submitit_folder", "max_num_timeout")
    }
    executor.update_parameters(
        **{k if k in base else f"slurm_{k}": v for k, v in {**params, "name": "j"}.items()}
    )
    sbatch = executor._executor._make_submission_file_text("python -m submitit.core._submit x", "u")
    for line in ("--time=240", "--cpus-per-task=16", "--mem=64GB", "--gpus-per-node=1", "--partition=gpu"):
        assert f"#SBATCH {line}" in sbatch.splitlines(), line
    assert MARKER not in sbatch


@pytest.mark.slow
@needs_submitit
def test_submitit_sweep_gives_each_job_its_folder_and_summary_and_pickles_no_token(
    docs_dir: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "HF_TOKEN": MARKER, "HF_HUB_OFFLINE": "1"}
    # submitit's LocalExecutor: one process per job, as on SLURM
    result, _ = sweep_zero_shot(tmp_path, docs_dir, "hydra/launcher=local", timeout=600, env=env)
    (sweep,) = (tmp_path / "multirun").glob("*/*")
    for num in (0, 1):
        assert json.loads((sweep / str(num) / "summary.json").read_text())["read"] == len(DOCS)
    listed = json.loads((sweep / "sweep_summary.json").read_text())
    assert [(j["job"], j["status"]) for j in listed["jobs"]] == [(0, "done"), (1, "done")]
    assert [j["overrides"][0] for j in listed["jobs"]] == [
        "classifier=zero_shot_domain",
        "classifier=zero_shot_topic",
    ]
    assert "Sweep: 2/2 job(s) done" in result.stdout
    pickles = list(sweep.glob(".submitit/**/*.pkl"))
    assert len(pickles) >= 2  # what submitit shipped to each job, and its result
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        assert MARKER.encode() not in path.read_bytes(), path
