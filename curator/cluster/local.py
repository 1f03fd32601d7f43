"""cluster=local: a distributed.LocalCluster sized to this machine's usable cores."""

from __future__ import annotations

import logging
from typing import Any

import dask
from distributed import LocalCluster

from curator.cluster.api_choice import require_processes
from curator.cluster.base import given
from curator.cluster.workers import worker_env
from curator.config import ClusterConfig
from curator.resources import available_cores, plan_workers

log = logging.getLogger(__name__)


def start_local(cfg: ClusterConfig) -> tuple[Any, int]:
    """A LocalCluster sized to this machine's usable cores; returns it and each worker's torch threads."""
    if cfg.processes:
        require_processes("local")
    cores = available_cores()
    n_workers, threads = plan_workers(cores, cfg.n_workers, cfg.torch_threads)
    extra = {"env": worker_env(threads)} if cfg.processes else {}
    # A paused worker waits for memory that a loaded model never gives back: the run would hang.
    # Unpaused, a worker either fits or is killed at the limit, and the run says so.
    with dask.config.set({"distributed.worker.memory.pause": False}):  # nannies hand it to their workers
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=cfg.threads_per_worker,
            processes=cfg.processes,
            memory_limit=cfg.memory_limit,
            dashboard_address=cfg.dashboard_address,
            **given(protocol=cfg.protocol, interface=cfg.interface, local_directory=cfg.local_directory),
            **extra,
        )
    log.info(
        "LocalCluster: %d worker(s) x %d task thread(s), %d torch thread(s) each, %d cores",
        n_workers,
        cfg.threads_per_worker,
        threads,
        cores,
    )
    return cluster, threads
