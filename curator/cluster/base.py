"""What every cluster starter shares: its signature, only-set keyword arguments, the dashboard link."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distributed import Client

from curator.config import ClusterConfig

# A starter returns the cluster it started (a context manager that closes it) and each worker's torch threads.
Starter = Callable[[ClusterConfig], tuple[Any, int]]


def given(**kwargs: Any) -> dict[str, Any]:
    """Only the arguments that are set, so each library keeps its own defaults for the rest."""
    return {k: v for k, v in kwargs.items() if v is not None}


def dashboard(client: Client) -> str:
    """The dashboard link, or why there is none."""
    try:
        return client.dashboard_link or "disabled"
    except (KeyError, AttributeError):
        return "disabled"
