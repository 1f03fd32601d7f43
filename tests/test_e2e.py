"""`python run.py` in a subprocess, as a user runs it: real LocalCluster, real model, real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import DOCS, sweep_zero_shot

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_run_py_classifies_filters_and_reports(docs_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            f"dataset.path={docs_dir}",
            "dataset.name=tiny",
            "filter.keep=[Sports,Food_and_Drink,Pets_and_Animals]",
            "filter.write_filtered=true",
            "output.format=parquet",
            "cluster.n_workers=2",
            "cluster.torch_threads=1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [out] = (tmp_path / "outputs" / "data" / "tiny").glob("zero_shot_domain-*")
    kept = pd.concat(pd.read_parquet(p) for p in sorted(out.glob("*.parquet")))
    dropped = pd.concat(pd.read_parquet(p) for p in sorted((out / "_filtered").glob("*.parquet")))
    assert sorted(p.name for p in out.glob("*.parquet")) == ["a.parquet", "b.parquet", "c.parquet"]
    assert sorted(kept["domain_pred"]) == ["Food_and_Drink", "Pets_and_Animals", "Sports"]
    assert (kept["domain_pred"] == kept["gold"]).all() and len(kept) + len(dropped) == len(DOCS)
    assert list(kept.columns) == ["id", "gold", "text", "domain_pred", "domain_score"]
    assert f"Documents read {len(DOCS)}, written 3, filtered 3, quarantined 0" in result.stdout
    assert f"Output: {out}" in result.stdout and "docs/s" in result.stdout
    run_dirs = [p for p in (tmp_path / "outputs").glob("*/*") if (p / ".hydra").is_dir()]
    assert len(run_dirs) == 1 and (run_dirs[0] / "summary.json").exists()
    assert (run_dirs[0] / "classify.log").exists()


@pytest.mark.slow
def test_console_script_is_the_same_app(tmp_path: Path) -> None:
    script = shutil.which("curator", path=str(Path(sys.executable).parent))
    assert script, "the `curator` console script is not installed next to this Python"
    shown = subprocess.run([script, "--cfg", "job"], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert "zero_shot_domain:" in shown.stdout and "text_field: text" in shown.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("filter.keep=[Sport]", "its labels are: ['Adult'"),
        ("dataset.text_field=body", "Text field 'body' is not in"),
        ("dataset.path=/no/such/folder", "'/no/such/folder' does not exist"),
        ("classifier.zero_shot_domain.model=./no/model", "Model path './no/model' does not exist"),
        ("classifier=domain", "Model 'nvidia/domain-classifier' is not available here"),
        ("classifier=aegis", "Gated models need a token in the HF_TOKEN environment variable"),
        ("cluster=local_cuda", "cluster=local_cuda needs `dask_cuda`"),
        ("dataset.backend=cudf", "dataset.backend=cudf needs `cudf`"),
    ],
)
def test_usual_mistakes_exit_2_with_a_message_and_no_traceback(
    override: str, expected: str, docs_dir: Path, tmp_path: Path
) -> None:
    returncode, output = run_offline(tmp_path, f"dataset.path={docs_dir}", "cluster=sync", override)
    assert returncode == 2, output[-2000:]
    assert expected in output and "Traceback" not in output


def run_offline(cwd: Path, *args: str, timeout: int = 120) -> tuple[int, str]:
    """`python run.py ARGS` with no Hub and an empty model cache: its exit status and its output."""
    offline = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(cwd / "empty-hf-home")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=offline,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("classifier=domian", "Available options"),
        ("filter=saef", "Available options"),
        ("cluster.n_wrkers=2", "n_wrkers"),
    ],
)
def test_unknown_option_or_key_lists_the_valid_ones(override: str, expected: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), override],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2 and expected in output and "Traceback" not in output  # as the run's checks
    if "Available options" in expected:
        assert ("domain" if "classifier" in override else "safe") in output.split("Available options")[1]


# run.py in this process with pipeline.run failing as a bug would (no UserError)
FAILING_RUN = f"""
import runpy, sys
from curator import pipeline
def broken(cfg, run_dir=None):
    raise RuntimeError("an unexpected failure")
pipeline.run = broken
sys.argv = ["run.py", *sys.argv[1:]]
runpy.run_path({str(ROOT / "run.py")!r}, run_name="__main__")
"""


def test_an_unexpected_failure_is_logged_without_echoing_the_overrides(tmp_path: Path) -> None:
    """Hydra prints a failed job's overrides, and with them any credential given on the command line."""
    secret = "+dataset.storage_options.secret=s3cr3tLEAK0123"
    result = subprocess.run(
        [sys.executable, "-c", FAILING_RUN, "cluster=sync", secret, "hydra.run.dir=run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "RuntimeError: an unexpected failure" in output, output[-2000:]
    assert "s3cr3tLEAK0123" not in output and "The run failed" in output


@pytest.mark.slow
def test_a_sweep_runs_every_job_when_one_fails_and_exits_2(docs_dir: Path, tmp_path: Path) -> None:
    """A job's error once ended the whole sweep: the jobs after it never ran and no table was written."""
    returncode, output = run_offline(
        tmp_path,
        "-m",
        "classifier=domain,zero_shot_topic",  # domain's model is not available offline
        "cluster=sync",
        f"dataset.path={docs_dir}",
        "hydra.sweep.dir=sweep",
        timeout=300,
    )
    assert returncode == 2, output[-3000:]
    jobs = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())["jobs"]
    assert [(j["job"], j["status"]) for j in jobs] == [(0, "no summary"), (1, "done")]
    assert jobs[1]["written"] == len(DOCS) and "is not available here" in output and "Traceback" not in output


@pytest.mark.slow
def test_multirun_sweep_gives_each_job_its_output_and_summary(docs_dir: Path, tmp_path: Path) -> None:
    _, data = sweep_zero_shot(tmp_path, docs_dir, timeout=300)
    assert sorted(p.name.rsplit("-", 1)[0] for p in data.iterdir()) == ["zero_shot_domain", "zero_shot_topic"]
    summaries = sorted((tmp_path / "multirun").glob("*/*/*/summary.json"))
    assert len(summaries) == 2
