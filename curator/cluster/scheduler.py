"""cluster=scheduler: join a running Dask scheduler (its workers are not ours to start or close)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from distributed import Client

from curator.cluster.base import dashboard
from curator.cluster.workers import TorchThreads
from curator.config import ClusterConfig
from curator.errors import ConfigError

log = logging.getLogger(__name__)


def scheduler_address(cfg: ClusterConfig) -> str | None:
    """cluster.scheduler_address, or its older name cluster.address."""
    if cfg.address and cfg.scheduler_address and cfg.address != cfg.scheduler_address:
        raise ConfigError("cluster.address is the older name of cluster.scheduler_address: set only one.")
    return cfg.scheduler_address or cfg.address


@contextlib.contextmanager
def join(cfg: ClusterConfig) -> Iterator[Client]:
    """Join a running scheduler (started with `dask scheduler`); its workers are not ours to close."""
    address = scheduler_address(cfg)
    if not (address or cfg.scheduler_file):
        raise ConfigError("cluster=scheduler needs cluster.scheduler_address or cluster.scheduler_file.")
    with Client(address, scheduler_file=cfg.scheduler_file) as client:
        workers = len(client.scheduler_info().get("workers", {}))
        log.info("Joined Dask scheduler %s with %d worker(s)", client.scheduler.address, workers)
        log.info("Dask dashboard: %s", dashboard(client))
        client.register_plugin(TorchThreads(cfg.torch_threads))  # threads as the workers chose, unless set
        yield client
