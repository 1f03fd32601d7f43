"""File listing as NeMo Curator's `get_all_files_paths_under`, so seed examples run unchanged."""

from __future__ import annotations

import os
from collections.abc import Iterable


def get_all_files_paths_under(
    root: str,
    recurse_subdirectories: bool = True,
    followlinks: bool = False,
    keep_extensions: str | Iterable[str] | None = None,
) -> list[str]:
    """Every file under `root` (sorted), optionally only those with the given extensions."""
    if isinstance(keep_extensions, str):
        keep_extensions = [keep_extensions]
    suffixes = tuple(f".{e.lstrip('.')}" for e in keep_extensions) if keep_extensions else None
    found: list[str] = []
    for folder, dirs, files in os.walk(os.path.expanduser(root), followlinks=followlinks):
        found.extend(os.path.join(folder, name) for name in files)
        if not recurse_subdirectories:
            dirs.clear()
    return sorted(f for f in found if suffixes is None or f.endswith(suffixes))
