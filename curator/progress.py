"""A live progress line driven by the Dask futures: units and documents done, docs/s, ETA.

On a terminal it redraws one line on stderr; elsewhere (batch jobs, logs) it logs a line per finished unit;
`quiet` silences both. The results come back in the order of the tasks, whatever order they finish in.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import dask
from distributed import Client, as_completed

log = logging.getLogger(__name__)


class Progress:
    """Counts finished units and documents: `[####....] 3/8 files · 1,204 docs · 40.1 docs/s · ETA 12s`."""

    def __init__(
        self, total: int, stream: TextIO | None = None, quiet: bool = False, unit: str = "files"
    ) -> None:
        self.total, self.done, self.docs = total, 0, 0
        self.unit, self.quiet = unit, quiet
        self.stream = stream if stream is not None else sys.stderr
        self.live = not quiet and self.stream.isatty()
        self.started = time.perf_counter()

    def line(self) -> str:
        """The progress line as it stands."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        eta = elapsed / self.done * (self.total - self.done) if self.done else None
        eta_text = (
            f"ETA {_duration(eta)}" if eta is not None and self.done < self.total else _duration(elapsed)
        )
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {self.unit} · "
            f"{self.docs:,} docs · {self.docs / elapsed:.1f} docs/s · {eta_text}"
        )

    def update(self, docs: int) -> None:
        """One unit finished with `docs` documents read."""
        self.done += 1
        self.docs += docs
        if self.live:
            self.stream.write("\r" + self.line())
            self.stream.flush()
        elif not self.quiet:
            log.info("%s", self.line())

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    """12s, 3:05 or 1:02:03."""
    seconds = round(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s")
    )


def compute(
    tasks: Sequence[Any], client: Client | None, progress: Progress, docs_of: Any = lambda r: r.get("read", 0)
) -> list[Any]:
    """Compute delayed tasks, reporting each as it finishes; results in task order."""
    results: list[Any] = [None] * len(tasks)
    try:
        if client is None:  # the synchronous scheduler: one task after another
            for i, task in enumerate(tasks):
                (results[i],) = dask.compute(task)
                progress.update(docs_of(results[i]))
            return results
        futures = client.compute(list(tasks))
        index = {future.key: i for i, future in enumerate(futures)}
        for future in as_completed(futures):
            i = index[future.key]
            results[i] = future.result()
            progress.update(docs_of(results[i]))
        return results
    finally:
        progress.close()
