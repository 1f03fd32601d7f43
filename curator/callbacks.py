"""Hydra callback: after a sweep, one file and one table list every job, its overrides and its counts."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from curator.cluster.secrets import mask_override
from curator.report import COUNTS

log = logging.getLogger(__name__)
FAILED_JOBS = 0  # set by SweepSummary in the launching process: `python run.py -m` then exits non-zero


def job_entry(job_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    """One job from what it left in its folder: Hydra's saved overrides and the run's summary.json."""
    hydra_yaml = job_dir / ".hydra" / "hydra.yaml"
    num = OmegaConf.load(hydra_yaml).hydra.job.get("num") if hydra_yaml.exists() else None
    entry: dict[str, Any] = {
        "job": num,
        "dir": str(job_dir.relative_to(sweep_dir)),
        "overrides": [mask_override(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")],
    }
    summary_path = job_dir / "summary.json"
    if not summary_path.exists():  # failed, killed, or still running
        return {**entry, "status": "no summary"}
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    keep = (*COUNTS, "seconds", "docs_per_second", "output_path")
    return {**entry, "status": "done", **{key: summary.get(key) for key in keep}}


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job folder of a sweep (any subdir layout), in job order."""
    dirs = sorted(p.parent.parent for p in sweep_dir.glob("**/.hydra/overrides.yaml"))
    jobs = [job_entry(d, sweep_dir) for d in dirs]
    return sorted(jobs, key=lambda j: (j["job"] is None, j["job"] or 0, j["dir"]))


def format_table(jobs: list[dict[str, Any]]) -> str:
    """A fixed-width table: job, status, counts, throughput, overrides."""
    header = ("job", "status", *COUNTS, "docs/s", "overrides")
    rows = [
        (
            str(j["job"]),
            j["status"],
            *(str(j.get(k, "")) if j.get(k) is not None else "-" for k in COUNTS),
            str(j.get("docs_per_second") or "-"),
            " ".join(j["overrides"]),
        )
        for j in jobs
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in (header, *rows)]
    return "\n".join(line.rstrip() for line in lines)


def write_sweep_summary(sweep_dir: Path, filename: str = "sweep_summary.json") -> tuple[Path, str, int]:
    """Write the sweep's job list as JSON next to Hydra's multirun.yaml; return it, the table and how
    many jobs did not finish."""
    jobs = collect_jobs(sweep_dir)
    done = sum(j["status"] == "done" for j in jobs)
    totals = {key: sum(j.get(key) or 0 for j in jobs) for key in COUNTS}
    path = sweep_dir / filename
    payload = {
        "sweep_dir": str(sweep_dir),
        "jobs_total": len(jobs),
        "jobs_done": done,
        **totals,
        "jobs": jobs,
    }
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    title = f"Sweep: {done}/{len(jobs)} job(s) done in {sweep_dir}; list in {path.name}"
    return path, title + "\n" + format_table(jobs), len(jobs) - done


class SweepSummary(Callback):
    """Registered under hydra.callbacks: runs in the launching process once every job has returned."""

    def __init__(self, filename: str = "sweep_summary.json") -> None:
        self.filename = filename

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Summarise the sweep folder (the sweeper's own resolved path: `now` is cached per config)."""
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        if not sweep_dir.is_dir():
            return
        path, table, failed = write_sweep_summary(sweep_dir, self.filename)
        log.info("Sweep summary: %s", path)
        if not config.get("quiet", False):
            print(table, flush=True)
        if failed:  # the sweep ran every job; its exit status says that not all of them finished
            global FAILED_JOBS
            FAILED_JOBS = failed
            log.error("%d of the sweep's job(s) did not finish: see their logs in %s", failed, sweep_dir)


class QuietSlurmLauncher(Callback):
    """Under hydra.callbacks: before hydra/launcher=slurm submits, quiet submitit's sacct polling."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Only for submitit's SLURM launcher; see curator.cluster.sacct."""
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        if target.endswith("SlurmLauncher"):
            from curator.cluster.sacct import quiet_submitit

            quiet_submitit()
