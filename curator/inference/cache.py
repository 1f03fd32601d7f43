"""One model per worker process, loaded on first use and kept for every later partition."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

_MODELS: dict[Hashable, Any] = {}
_LOCK = threading.Lock()
_LOADS = {"count": 0}


def get_or_load(key: Hashable, load: Callable[[], Any]) -> Any:
    """Return the object cached under `key`, loading it once even when tasks run in several threads."""
    try:
        return _MODELS[key]
    except KeyError:
        pass
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = load()
            _LOADS["count"] += 1
        return _MODELS[key]


def loaded(key: Hashable) -> Any | None:
    """The object cached under `key` if this process has loaded it; None (never loads)."""
    return _MODELS.get(key)


def load_count() -> int:
    """How many models this process has loaded (tests use it to prove per-worker caching)."""
    return _LOADS["count"]


def clear() -> None:
    """Drop every cached model (frees memory between runs in one process)."""
    with _LOCK:
        _MODELS.clear()
