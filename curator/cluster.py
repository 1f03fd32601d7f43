"""Start or join the Dask cluster a run uses, and make workers use their share of the cores."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import dask
from distributed import Client, LocalCluster, WorkerPlugin, default_client

from curator.config import ClusterConfig
from curator.errors import ConfigError
from curator.resources import available_cores, plan_workers

log = logging.getLogger(__name__)


class TorchThreads(WorkerPlugin):
    """Set torch's intra-op threads on each worker (distributed's nanny pins OMP threads to 1)."""

    name = "curator-torch-threads"

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def setup(self, worker) -> None:
        set_torch_threads(self.threads)


def set_torch_threads(threads: int) -> None:
    """Intra-op threads for this process; tokenizers stay single-threaded to avoid oversubscription."""
    import torch

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def worker_env(torch_threads: int) -> dict[str, str]:
    """Environment for worker processes (the parent's HF_* variables are inherited as they are)."""
    threads = str(torch_threads)
    return {
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "TOKENIZERS_PARALLELISM": "false",
    }


@contextlib.contextmanager
def connect(cfg: ClusterConfig) -> Iterator[Client | None]:
    """Yield a Client for the configured cluster (None in sync mode); always close what was started."""
    if cfg.kind == "sync":
        _, threads = plan_workers(available_cores(), 1, cfg.torch_threads)
        set_torch_threads(threads)
        with dask.config.set(scheduler="synchronous"):
            yield None
        return
    if cfg.kind == "scheduler":
        if not (cfg.address or cfg.scheduler_file):
            raise ConfigError("cluster=scheduler needs cluster.address or cluster.scheduler_file.")
        with Client(cfg.address, scheduler_file=cfg.scheduler_file) as client:
            log.info(
                "Joined Dask scheduler %s (dashboard %s)", client.scheduler.address, client.dashboard_link
            )
            if cfg.torch_threads:
                client.register_plugin(TorchThreads(cfg.torch_threads))
            yield client
        return
    if cfg.kind != "local":
        raise ConfigError(f"Unknown cluster.kind {cfg.kind!r}; choose local, sync or scheduler.")
    cores = available_cores()
    n_workers, threads = plan_workers(cores, cfg.n_workers, cfg.torch_threads)
    extra = {"env": worker_env(threads)} if cfg.processes else {}
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=cfg.threads_per_worker,
            processes=cfg.processes,
            memory_limit=cfg.memory_limit,
            dashboard_address=cfg.dashboard_address,
            **extra,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(TorchThreads(threads))
        log.info(
            "LocalCluster: %d worker(s) x %d task thread(s), %d torch thread(s) each, %d cores; dashboard %s",
            n_workers,
            cfg.threads_per_worker,
            threads,
            cores,
            client.dashboard_link,
        )
        yield client


@contextlib.contextmanager
def ensure_client(cfg: ClusterConfig | None = None) -> Iterator[Client | None]:
    """The Python API's rule: the current Dask client if there is one, else a local cluster for this call."""
    try:
        current = default_client()
    except ValueError:
        current = None
    if current is not None:
        yield current
        return
    with connect(cfg or ClusterConfig()) as client:
        yield client
