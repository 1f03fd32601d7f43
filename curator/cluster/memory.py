"""Workers their nanny killed for memory: name the setting, what a worker reached, and a value to try."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from distributed import Client, KilledWorker
from distributed.comm.core import CommClosedError

from curator.cluster.jobs import gave_up
from curator.config import ClusterConfig
from curator.errors import UserError
from curator.validate import MEMORY_KINDS

MEMORY_EVENT = "worker-restart-memory"  # what a nanny logs on the scheduler when it kills its worker


class WorkerMemoryError(UserError, MemoryError):
    """Workers were killed for going over cluster.memory_limit (the model and its batches do not fit)."""


def memory_kills(client: Client, since: float = 0.0) -> list[dict[str, Any]]:
    """The workers their nanny killed for exceeding the memory limit (since a time, by the scheduler)."""
    try:
        return [event for stamp, event in client.get_events(MEMORY_EVENT) if stamp >= since]
    except Exception:  # the scheduler is gone: nothing more to learn
        return []


def memory_message(cfg: ClusterConfig, kills: list[dict[str, Any]]) -> str:
    """One line: which setting, what the worker reached, and a value to try."""
    from dask.utils import format_bytes

    rss = max(int(kill.get("rss", 0)) for kill in kills)  # the kill comes at 95% of the limit
    suggest = max(4, 2 * -(-rss // 2**30))  # GiB: at least double what was not enough
    setting = (
        f"cluster.memory_limit={cfg.memory_limit}"
        if cfg.kind in MEMORY_KINDS
        else "their memory limit (dask worker --memory-limit, or the job's memory)"
    )
    return (
        f"{len(kills)} worker(s) killed for using more memory than {setting} allows (a worker reached "
        f"{format_bytes(rss)}): the model and its batches do not fit. Set cluster.memory_limit={suggest}GiB "
        "or more, or run fewer workers per machine"
    )


def explain_lost_workers(client: Client, cfg: ClusterConfig, outcomes: Iterable[Any]) -> Iterator[Any]:
    """Pass (units, outcome) pairs on; a failure from a worker its nanny killed for memory says so, and
    tasks cancelled because no worker was left for cluster.no_worker_timeout stop the run (NoWorkersError)."""
    since = time.time() - 1  # a joined scheduler may remember kills from earlier runs
    for group, outcome in outcomes:
        stopped = gave_up(outcome)
        if stopped is not None:
            raise stopped
        if isinstance(outcome, KilledWorker | CommClosedError):
            kills = memory_kills(client, since)
            if kills:
                outcome = WorkerMemoryError(memory_message(cfg, kills))
        yield group, outcome
