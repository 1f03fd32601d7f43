"""cluster=slurm: dask-jobqueue's SLURMCluster, one sbatch job per node's workers (imported when used)."""

from __future__ import annotations

import functools
import itertools
import logging
import shlex
import shutil
from collections.abc import Mapping
from typing import Any

import dask

from curator.cluster.base import given
from curator.cluster.secrets import check_no_secrets
from curator.cluster.workers import worker_env
from curator.config import ClusterConfig
from curator.errors import ConfigError
from curator.optional import require
from curator.resources import plan_workers

log = logging.getLogger(__name__)


def _exports(variables: Mapping[str, str]) -> list[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]


def site_default(key: str) -> Any:
    """The site's jobqueue.yaml value for `jobqueue.slurm.<key>` (None when unset or not installed)."""
    return dask.config.get(f"jobqueue.slurm.{key}", None)


def slurm_kwargs(cfg: ClusterConfig, environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any], int]:
    """SLURMCluster arguments for one job's workers, and the torch threads each worker gets.

    Only what the user set is passed: a key left null keeps the site's jobqueue.yaml default.
    """
    # SLURM reserves `cores` CPUs per job (job_cpu); Dask runs `threads_per_worker` task threads per
    # worker (its cores = workers x those) and torch gets the worker's share of the reserved cores.
    # GPU jobs run `dask cuda worker`, which starts one worker per GPU SLURM gives the job.
    cores, memory = cfg.cores or site_default("cores"), cfg.memory or site_default("memory")
    if not cores or not memory:
        raise ConfigError(
            "cluster=slurm needs cluster.cores (CPUs per job) and cluster.memory (e.g. 64GB), or "
            "jobqueue.slurm.cores and .memory in the site's jobqueue.yaml."
        )
    if cfg.gpus and cfg.n_workers not in (None, cfg.gpus):
        raise ConfigError("cluster.gpus > 0 runs one worker per GPU; leave cluster.n_workers unset.")
    workers, threads = plan_workers(int(cores), cfg.gpus or cfg.n_workers, cfg.torch_threads)
    gres = [f"--gres=gpu:{cfg.gpus}"] if cfg.gpus else []
    dashboard = (
        {"dashboard_address": cfg.dashboard_address}
        if cfg.dashboard_address
        else {"dashboard": False, "dashboard_address": ":0"}  # its HTTP server stays (health checks)
    )
    kwargs = {
        "cores": workers * cfg.threads_per_worker,  # --nthreads = cores / processes
        "processes": workers,
        "job_cpu": int(cores),
        "memory": memory,
        # the site's prologue (module loads) first, then the user's, then the worker settings
        "job_script_prologue": [
            *(site_default("job-script-prologue") or []),
            *cfg.job_script_prologue,
            *_exports(worker_env(threads, environ)),
        ],
        "scheduler_options": {**(site_default("scheduler-options") or {}), **dashboard},
        **given(
            walltime=cfg.walltime,
            job_name=cfg.job_name,
            worker_command=cfg.worker_command or ("dask cuda worker" if cfg.gpus else None),
            worker_extra_args=list(cfg.worker_extra_args) or None,
            job_extra_directives=[*gres, *cfg.job_extra_directives] or None,
            queue=cfg.partition,
            account=cfg.account,
            local_directory=cfg.local_directory,
            log_directory=cfg.log_directory,
            interface=cfg.interface,
            protocol=cfg.protocol,
            python=cfg.python,
        ),
    }
    if any(d.startswith("--export") and "ALL" not in d for d in cfg.job_extra_directives):
        log.warning("--export without ALL: HF_TOKEN reaches workers only via the HF token file on the nodes")
    return kwargs, threads


@functools.cache
def _cluster_class(jobqueue: Any) -> type:
    """SLURMCluster whose job names are never reused, so a replaced job's successor joins under a new name
    (SpecCluster would otherwise hand the freed name out again while the scheduler may still hold it)."""

    class CuratorSLURMCluster(jobqueue.SLURMCluster):
        def _new_worker_name(self, worker_number: int) -> str:
            numbers = self.__dict__.setdefault("_curator_numbers", itertools.count())
            return f"{self._name}-{next(numbers)}"

    return CuratorSLURMCluster


def new_slurm_cluster(cfg: ClusterConfig) -> tuple[Any, int]:
    """A SLURMCluster with no jobs yet (dask-jobqueue imported only now); its job script holds no secret."""
    jobqueue = require("dask_jobqueue", "cluster=slurm", "slurm")
    kwargs, threads = slurm_kwargs(cfg)
    cluster = _cluster_class(jobqueue)(**kwargs)
    try:
        check_no_secrets(cluster.job_script(), "SLURM job script")
    except ConfigError:
        cluster.close()
        raise
    return cluster, threads


def slurm_job_script(cfg: ClusterConfig) -> str:
    """The sbatch script each worker job would run (no job is submitted): to review or to test."""
    cluster, _ = new_slurm_cluster(cfg)
    with cluster:
        return cluster.job_script()


def start_slurm(cfg: ClusterConfig) -> tuple[Any, int]:
    """Submit `cluster.jobs` worker jobs; they join this process's scheduler as SLURM starts them."""
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "cluster=slurm submits worker jobs with sbatch, which is not on PATH here: run on a SLURM "
            "login node, or submit whole runs with hydra/launcher=slurm."
        )
    cluster, threads = new_slurm_cluster(cfg)
    try:
        log.debug("SLURM worker job script:\n%s", cluster.job_script())
        cluster.scale(jobs=cfg.jobs)
    except BaseException:
        cluster.close()
        raise
    log.info("SLURMCluster: %d job(s) submitted, %d torch thread(s) per worker", cfg.jobs, threads)
    return cluster, threads
