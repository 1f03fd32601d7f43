"""On a real SLURM (one node is enough; `.ci/run` starts one): cluster=slurm end to end, a submitit sweep,
a worker job cancelled mid-run and replaced, and a run that stops when no worker ever starts. Also the
site's jobqueue.yaml defaults, which need no SLURM."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import dask
import pandas as pd
import pytest

from curator.cluster import connect, slurm_job_script
from curator.cluster.sacct import OnceFilter, squeue_watcher
from curator.validate import cluster_problems
from tests.conftest import DOCS, compose_config, sweep_zero_shot, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
MARKER = "hf_curatorTestMarker0123456789"  # a fake token: it must reach no file
SMALL_JOB = ["cluster=slurm", "cluster.jobs=1", "cluster.cores=1", "cluster.memory=2GB"]


def curator_env() -> dict[str, str]:
    """The user's environment with a token in it, as sbatch passes it on to the worker jobs."""
    return {**os.environ, "HF_TOKEN": MARKER, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def slurm_run(partition: str, *overrides: str) -> list[str]:
    """`python run.py cluster=slurm`: one small worker job on `partition`, its jobs polled every second."""
    small = [*SMALL_JOB, f"cluster.partition={partition}", "cluster.job_poll_interval=1"]
    return [sys.executable, str(ROOT / "run.py"), *small, *overrides]


def run_on_slurm(partition: str, cwd: Path, *overrides: str, timeout: float) -> subprocess.CompletedProcess:
    """`slurm_run` in `cwd` until it ends, its output captured."""
    command = slurm_run(partition, *overrides)
    return subprocess.run(
        command, cwd=cwd, env=curator_env(), capture_output=True, text=True, timeout=timeout
    )


def job_ids(log_text: str, event: str) -> list[str]:
    """SLURM job ids the run logged for an event (submitted, started, ended)."""
    return re.findall(rf"SLURM job (\d+) {event}", log_text)


def read_outputs(folder: Path) -> pd.DataFrame:
    """Every data file of a run folder (never the temporary files a killed writer may leave)."""
    files = sorted(p for p in folder.glob("*.jsonl*") if ".curator-tmp-" not in p.name)
    return pd.concat([pd.read_json(p, lines=True, dtype=False) for p in files], ignore_index=True)


def assert_no_token_under(folder: Path) -> None:
    for path in (p for p in folder.rglob("*") if p.is_file()):
        assert MARKER.encode() not in path.read_bytes(), path


# --- site defaults: no SLURM needed ---------------------------------------------------------------


def test_keys_left_null_keep_the_sites_jobqueue_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dask_jobqueue")
    site = {
        "jobqueue.slurm.walltime": "08:00:00",
        "jobqueue.slurm.name": "site-worker",
        "jobqueue.slurm.job-script-prologue": ["module load site-python"],
        "jobqueue.slurm.job-extra-directives": ["--qos=site"],
    }
    with dask.config.set(site):
        lines = slurm_job_script(compose_config(["cluster=slurm"]).cluster).splitlines()
        assert {"#SBATCH -t 08:00:00", "#SBATCH -J site-worker", "#SBATCH --qos=site"} <= set(lines)
        assert lines.index("module load site-python") < lines.index("export OMP_NUM_THREADS=4")
        given = compose_config(["cluster=slurm", "cluster.walltime=01:30:00", "cluster.job_name=mine"])
        lines = slurm_job_script(given.cluster).splitlines()
        assert {"#SBATCH -t 01:30:00", "#SBATCH -J mine"} <= set(lines)
    with dask.config.set({"jobqueue.slurm.cores": 6, "jobqueue.slurm.memory": "12GB"}):
        null = compose_config(["cluster=slurm", "cluster.cores=null", "cluster.memory=null"])
        assert "#SBATCH --cpus-per-task=6" in slurm_job_script(null.cluster).splitlines()


FAKE_SBATCH = """#!/bin/sh
cp "$1" {dir}/job-$$.sh
echo "Submitted batch job $$"
"""
FAKE_SQUEUE = """#!/bin/sh
# squeue -h -t all -j ID,ID -o FORMAT: RUNNING, or COMPLETING / CANCELLED for ids in the files so named
for id in $(echo "$5" | tr , ' '); do
  state=RUNNING
  if grep -qx "$id" {dir}/completing 2>/dev/null; then state=COMPLETING; fi
  if grep -qx "$id" {dir}/cancelled 2>/dev/null; then state=CANCELLED; fi
  echo "$id|$state|node1"
done
"""


@pytest.mark.parametrize("completing_first", [False, True])
def test_an_ended_worker_job_is_logged_and_replaced_by_a_new_one(
    completing_first: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SLURM's commands faked at the PATH edge: the watcher's bookkeeping, where no SLURM runs. A job
    squeue shows COMPLETING (its processes being killed) is replaced at once and polled until squeue
    says why it ended."""
    pytest.importorskip("dask_jobqueue")
    bin_dir, jobs_dir = tmp_path / "bin", tmp_path / "jobs"
    jobs_dir.mkdir()
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("squeue", FAKE_SQUEUE), ("scancel", "#!/bin/sh\n")):
        (bin_dir / name).write_text(text.format(dir=jobs_dir))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    caplog.set_level(logging.INFO, logger="curator.cluster.jobs")
    cfg = compose_config([*SMALL_JOB, "cluster.jobs=2", "cluster.job_poll_interval=0.2"])

    def submitted() -> list[str]:
        return sorted(p.stem.split("-")[1] for p in jobs_dir.glob("job-*.sh"))

    with connect(cfg.cluster) as client:
        first = wait_for(lambda: len(submitted()) == 2 and submitted(), 30, "two jobs submitted")
        wait_for(lambda: all(f"SLURM job {j} started on node1" in caplog.text for j in first), 30, "starts")
        (jobs_dir / ("completing" if completing_first else "cancelled")).write_text(first[0] + "\n")
        wait_for(lambda: len(submitted()) == 3, 30, "a replacement submitted")
        time.sleep(1)  # a few more polls: the ended job is replaced once, the running one not at all
        if completing_first:
            assert f"SLURM job {first[0]} ended" not in caplog.text  # not known yet
            (jobs_dir / "cancelled").write_text(first[0] + "\n")
            wait_for(lambda: f"SLURM job {first[0]} ended (CANCELLED)" in caplog.text, 30, "the final state")
            time.sleep(1)
        names = sorted(client.cluster.worker_spec)
    assert len(submitted()) == 3 and len(names) == 2 and len(set(names)) == 2
    assert caplog.text.count(f"SLURM job {first[0]} ended (CANCELLED)") == 1
    assert caplog.text.count(f"SLURM job {first[0]} is ending (COMPLETING)") == int(completing_first)
    assert caplog.text.count("submitting a replacement") == 1
    (new,) = set(submitted()) - set(first)
    assert f"SLURM job {new} submitted (cluster.jobs=2; 1 ended job(s) replaced so far)" in caplog.text


def test_submitits_sacct_warning_is_shown_once_and_explained(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("curator-test-submitit")
    logger.addFilter(OnceFilter())
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for call in (1, 2, 3):
            logger.warning(
                f"Call #{call} - Bypassing sacct error Command sacct failed, status may be inaccurate."
            )
        logger.warning("another warning")
    assert [r.getMessage().split(" - ")[0] for r in caplog.records] == ["Call #1", "another warning"]
    assert "shown once" in caplog.records[0].getMessage()


def test_submitit_reads_job_states_from_squeue_where_sacct_has_none() -> None:
    pytest.importorskip("submitit")
    watcher = squeue_watcher()
    states = watcher.read_info(b"12_0|RUNNING|node1\n12_1|PENDING|\n13|CANCELLED|node2\n")
    assert {k: v["State"] for k, v in states.items()} == {
        "12_0": "RUNNING",
        "12_1": "PENDING",
        "13": "CANCELLED",
    }
    assert watcher._make_command() is None  # no job registered: no call
    watcher.register_job("13")
    assert watcher._make_command()[0] == "squeue"


@pytest.mark.parametrize(
    ("value", "ok"), [(300, True), ("10m", True), (None, True), (0, False), ("soon", False), (-5, False)]
)
def test_no_worker_timeout_takes_seconds_or_a_duration(value: object, ok: bool) -> None:
    cfg = compose_config(["cluster=slurm"])
    cfg.cluster.no_worker_timeout = value
    problems = list(cluster_problems(cfg.cluster))
    assert (
        not problems
        if ok
        else problems
        == [
            f"cluster.no_worker_timeout={value!r}: must be a time > 0 in seconds or like 90s, 10m, 1h, "
            "or null (no limit)"
        ]
    )


# --- a real SLURM ----------------------------------------------------------------------------------


@pytest.mark.slurm
@pytest.mark.slow
def test_cluster_slurm_end_to_end_without_the_token_in_any_file(
    slurm: str, docs_dir: Path, tiny_model: str, tmp_path: Path
) -> None:
    out, logs = tmp_path / "out", tmp_path / "worker-logs"
    done = run_on_slurm(
        slurm,
        tmp_path,
        f"cluster.log_directory={logs}",
        f"dataset.path={docs_dir}",
        "dataset.name=tiny",
        tiny_model,
        f"output.path={out}",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["read"] == summary["written"] == len(DOCS) and summary["units"] == {"done": 3}
    assert sorted(read_outputs(out)["id"]) == sorted(f"d{i}" for i in range(len(DOCS)))
    (run_log,) = tmp_path.glob("outputs/*/*/classify.log")
    text = run_log.read_text()
    (job,) = job_ids(text, "submitted")
    assert job_ids(text, "started") == [job]
    assert f"SLURM job(s) {job} end with the run: cancelling them" in text
    script = subprocess.run(
        ["scontrol", "write", "batch_script", job, "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "distributed.cli.dask_worker" in script and "HF_HUB_OFFLINE=1" in script
    assert MARKER not in script and "HF_TOKEN" not in script
    assert list(logs.glob("*.err")), "the worker job wrote no log"
    assert_no_token_under(tmp_path)  # run log, saved config, worker logs, outputs, report


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """Poll `check` until it returns something truthy (fail after `timeout` s, or if `proc` ended)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = check()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before {what}")
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def finished_units(out: Path) -> int:
    manifest = out / ".curator" / "manifest.jsonl"
    lines = manifest.read_text().splitlines() if manifest.exists() else []
    return sum('"unit"' in line for line in lines)


def run_log(cwd: Path) -> str:
    found = list(cwd.glob("outputs/*/*/classify.log"))
    return found[0].read_text() if found else ""


@pytest.mark.slurm
@pytest.mark.slow
def test_a_worker_job_cancelled_mid_run_is_replaced_and_every_record_is_written_once(
    slurm: str, tiny_model: str, tmp_path: Path
) -> None:
    per_file = 2000  # a few seconds per unit on one core: the job is cancelled while it works on one
    records = {
        f: [{"id": f"{f}-{i}", "text": DOCS[i % 6][1] * (1 + i % 4)} for i in range(per_file)] for f in "abc"
    }
    for name, rows in records.items():
        write_jsonl(tmp_path / "docs" / f"{name}.jsonl", rows)
    out = tmp_path / "out"
    command = slurm_run(
        slurm,
        f"cluster.log_directory={tmp_path / 'worker-logs'}",
        f"dataset.path={tmp_path / 'docs'}",
        "dataset.name=big",
        tiny_model,
        f"output.path={out}",
        "quiet=true",
    )
    with (tmp_path / "stdout.txt").open("w") as stdout:
        proc = subprocess.Popen(
            command, cwd=tmp_path, env=curator_env(), stdout=stdout, stderr=subprocess.STDOUT
        )
        try:
            wait_for(lambda: finished_units(out) >= 1, 240, "the first unit finished", proc)
            (first,) = job_ids(run_log(tmp_path), "started")
            subprocess.run(["scancel", first], check=True)
            assert proc.wait(timeout=300) == 0, (tmp_path / "stdout.txt").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    text = run_log(tmp_path)
    submitted = job_ids(text, "submitted")
    assert submitted[0] == first and len(submitted) == 2, text[-3000:]  # one replacement, logged
    # squeue shows COMPLETING while the job's processes are killed; the poll may see that or CANCELLED
    assert re.search(rf"SLURM job {first} (ended \(CANCELLED\)|is ending \(COMPLETING\))", text), text
    assert job_ids(text, "started") == submitted
    summary = json.loads((out / "_summary.json").read_text())
    total = per_file * len(records)
    assert (summary["read"], summary["written"], summary["units"]) == (total, total, {"done": 3})
    ids = read_outputs(out)["id"]
    assert ids.is_unique and len(ids) == total  # the unit the cancelled job was writing: once, complete
    assert not [p for p in out.rglob("*") if ".curator-tmp-" in p.name]  # nothing half-written left


@pytest.mark.slurm
def test_a_run_whose_worker_job_never_starts_stops_and_says_how_to_resume(
    slurm: str, docs_dir: Path, tiny_model: str, tmp_path: Path
) -> None:
    done = run_on_slurm(
        slurm,
        tmp_path,
        "cluster.job_extra_directives=['--begin=now+3600']",  # queued, never running during the test
        "cluster.no_worker_timeout=4",
        f"dataset.path={docs_dir}",
        "dataset.name=tiny",
        tiny_model,
        f"output.path={tmp_path / 'out'}",
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    text = run_log(tmp_path)
    (job,) = job_ids(text, "submitted")
    assert "No Dask worker for" in text and f"{job} PENDING (BeginTime)" in text
    assert "rerun the same command to resume" in text and "cluster.no_worker_timeout" in text
    queued = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout
    assert queued.strip() in ("", "CANCELLED", "COMPLETING")  # the run cancelled its job on the way out


@pytest.mark.slurm
@pytest.mark.slow
def test_a_sweep_on_slurm_runs_both_jobs_and_writes_the_sweep_summary(
    slurm: str, docs_dir: Path, tmp_path: Path
) -> None:
    result, _ = sweep_zero_shot(  # also checks that each job labelled every document
        tmp_path,
        docs_dir,
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={slurm}",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        "hydra.launcher.timeout_min=10",
        timeout=400,
        env=curator_env(),
    )
    (sweep,) = (tmp_path / "multirun").glob("*/*")
    listed = json.loads((sweep / "sweep_summary.json").read_text())
    assert [(j["job"], j["status"], j["read"]) for j in listed["jobs"]] == [(0, "done", 6), (1, "done", 6)]
    assert "Sweep: 2/2 job(s) done" in result.stdout
    output = result.stdout + result.stderr
    assert output.count("Bypassing sacct error") <= 1  # without accounting: said once, and explained
    if "Bypassing sacct error" in output:
        assert "accounting" in output
    assert_no_token_under(tmp_path)  # sbatch files, submitit pickles, logs, saved configs, outputs
