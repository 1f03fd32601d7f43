"""Start or join the Dask cluster a run uses: one module per cluster kind, worker tuning in `workers`.

`connect(cfg)` is the one entry point the pipeline uses; the names re-exported here keep
`from curator.cluster import ...` working for every caller.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import dask
from distributed import Client, default_client

from curator.cluster.api_choice import api_cluster, caller_chose
from curator.cluster.base import Starter, dashboard, given
from curator.cluster.jobs import NoWorkersError, keep_jobs
from curator.cluster.local import start_local
from curator.cluster.local_cuda import local_cuda_kwargs, start_local_cuda, visible_gpus
from curator.cluster.memory import (
    MEMORY_EVENT,
    WorkerMemoryError,
    explain_lost_workers,
    memory_kills,
    memory_message,
)
from curator.cluster.scheduler import join, scheduler_address
from curator.cluster.secrets import SECRET_NAME, check_no_secrets, is_secret
from curator.cluster.slurm import new_slurm_cluster, slurm_job_script, slurm_kwargs, start_slurm
from curator.cluster.workers import (
    HF_SETTINGS,
    QuickExit,
    QuietClose,
    TorchThreads,
    reuse_freed_memory,
    set_torch_threads,
    thread_env,
    worker_env,
)
from curator.config import ClusterConfig
from curator.errors import ConfigError
from curator.optional import GPU_HINT, require
from curator.resources import available_cores, plan_workers
from curator.validate import CHOICES, cluster_problems, raise_problems

__all__ = [
    "GPU_HINT",
    "HF_SETTINGS",
    "KINDS",
    "MEMORY_EVENT",
    "SECRET_NAME",
    "STARTERS",
    "NoWorkersError",
    "TorchThreads",
    "WorkerMemoryError",
    "check_no_secrets",
    "close_kept",
    "connect",
    "dashboard",
    "ensure_client",
    "explain_lost_workers",
    "given",
    "is_secret",
    "join",
    "keep_jobs",
    "local_cuda_kwargs",
    "memory_kills",
    "memory_message",
    "new_slurm_cluster",
    "require",
    "reuse_freed_memory",
    "scheduler_address",
    "set_torch_threads",
    "slurm_job_script",
    "slurm_kwargs",
    "start_local",
    "start_local_cuda",
    "start_slurm",
    "thread_env",
    "visible_gpus",
    "worker_env",
]

log = logging.getLogger(__name__)

KINDS = CHOICES["cluster.kind"]
STARTERS: dict[str, Starter] = {
    "local": start_local,
    "local_cuda": start_local_cuda,
    "slurm": start_slurm,
}


@contextlib.contextmanager
def connect(cfg: ClusterConfig) -> Iterator[Client | None]:
    """Yield a Client for the configured cluster (None in sync mode); close what was started, on error too."""
    raise_problems(list(cluster_problems(cfg)))  # e.g. n_workers=-1 would start nothing and wait forever
    if cfg.kind == "sync":
        _, threads = plan_workers(available_cores(), 1, cfg.torch_threads)
        set_torch_threads(threads)
        reuse_freed_memory()  # this process runs the batches: the allocator reuse a worker gets
        log.info("Dask synchronous scheduler in this process (no dashboard)")
        with dask.config.set(scheduler="synchronous"):
            yield None
        return
    if cfg.kind == "scheduler":
        with join(cfg) as client:
            yield client
        return
    if cfg.kind not in STARTERS:
        raise ConfigError(f"Unknown cluster.kind {cfg.kind!r}; choose one of {', '.join(KINDS)}.")
    cluster, threads = STARTERS[cfg.kind](cfg)
    with cluster, Client(cluster) as client:
        client.register_plugin(TorchThreads(threads))
        client.register_plugin(QuietClose())
        client.register_plugin(QuickExit())
        log.info("Dask dashboard: %s", dashboard(client))
        # SLURM worker jobs end (walltime, preemption, scancel): keep cluster.jobs of them submitted
        with keep_jobs(cluster, client, cfg) if cfg.kind == "slurm" else contextlib.nullcontext():
            yield client


_KEPT: dict[str, Any] = {}  # the Python API's own local cluster and client, kept for the process
_KEEP_LOCK = threading.Lock()  # two threads calling the API at once start one cluster


@contextlib.contextmanager
def ensure_client(cfg: ClusterConfig | None = None) -> Iterator[Client | None]:
    """The Python API's rule: the current Dask client if there is one, else the caller's Dask scheduler
    setting, else the API's own local cluster of worker processes or, where they cannot start, threads:
    started on the first call and kept for this process (closed at exit), so later calls reuse its
    workers and the models they loaded. An explicit `cfg` gets a cluster for this call only."""
    try:
        current = default_client()
    except ValueError:
        current = None
    if current is not None:
        yield current
        return
    kept = _KEPT.get("client")
    if cfg is None and kept is not None and kept.status == "running" and not caller_chose():
        with kept.as_current():
            yield kept
        return
    explicit = cfg is not None
    cfg = cfg or api_cluster()
    if cfg is None:  # dask.config.set(scheduler="synchronous"/"threads"/...): dask.compute uses it
        yield None
        return
    if explicit or cfg.kind != "local":
        with connect(cfg) as client:
            yield client
        return
    client = _keep_local(cfg)
    with client.as_current():
        yield client


def _keep_local(cfg: ClusterConfig) -> Client:
    """The API's kept local cluster, started now unless another thread just did; at exit, it is closed
    before Dask's own clean-up runs."""
    with _KEEP_LOCK:
        kept = _KEPT.get("client")
        if kept is not None and kept.status == "running":
            return kept
        return _start_kept(cfg)


def _start_kept(cfg: ClusterConfig) -> Client:
    cluster, threads = start_local(cfg)
    client = Client(cluster, set_as_default=False)
    client.register_plugin(TorchThreads(threads))
    client.register_plugin(QuietClose())
    log.info("Python API: local cluster kept for this process; Dask dashboard: %s", dashboard(client))
    _KEPT.update(cluster=cluster, client=client)
    atexit.register(close_kept)
    return client


def close_kept() -> None:
    """Close the API's kept cluster (at exit, or by hand to free its workers' memory sooner)."""
    client, cluster = _KEPT.pop("client", None), _KEPT.pop("cluster", None)
    with contextlib.suppress(Exception):
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
