"""The progress line: driven by finished Dask futures, results in task order, quiet and log modes."""

from __future__ import annotations

import io
import logging
import time

import dask
import pytest
from distributed import Client, LocalCluster

from curator.progress import Progress, compute


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def unit(i: int, docs: int) -> dict:
    time.sleep(0.05 * (3 - i % 3))  # later tasks finish first
    return {"i": i, "read": docs}


def test_results_keep_task_order_and_the_line_counts_units_and_docs() -> None:
    tasks = [dask.delayed(unit)(i, 10 * (i + 1)) for i in range(6)]
    screen = Terminal()
    with (
        LocalCluster(n_workers=1, threads_per_worker=3, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        results = compute(tasks, client, Progress(len(tasks), stream=screen))
    assert [r["i"] for r in results] == list(range(6))
    frames = screen.getvalue().split("\r")[1:]
    assert len(frames) == 6 and frames[-1].startswith("[" + "#" * 24 + "] 6/6 files · 210 docs")
    assert "docs/s" in frames[0] and "ETA" in frames[0] and frames[-1].endswith("\n")


def test_synchronous_scheduler_and_log_mode(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()  # not a terminal: a log line per unit instead of redrawing
    with caplog.at_level(logging.INFO, logger="curator.progress"):
        results = compute([dask.delayed(unit)(i, 5) for i in range(3)], None, Progress(3, stream=stream))
    assert [r["i"] for r in results] == [0, 1, 2] and stream.getvalue() == ""
    assert [m for m in caplog.messages if "3/3 files · 15 docs" in m]


def test_quiet_prints_and_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    screen = Terminal()
    with caplog.at_level(logging.INFO, logger="curator.progress"):
        compute([dask.delayed(unit)(0, 1)], None, Progress(1, stream=screen, quiet=True))
    assert screen.getvalue() == "" and not caplog.messages
