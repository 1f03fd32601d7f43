"""Joining a cluster started from the command line: a scheduler and two workers on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from distributed import Client

from curator import pipeline
from curator.inference import cache
from tests.conftest import DOCS, write_jsonl


def start(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_pipeline_runs_on_a_scheduler_and_workers_started_from_the_cli(
    make_config, tmp_path: Path, tiny_bert: Path
) -> None:
    scheduler_file = tmp_path / "scheduler.json"
    processes = [
        start(
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            ":0",
            "--scheduler-file",
            str(scheduler_file),
            log=tmp_path / "scheduler.log",
        ),
    ]
    try:
        deadline = time.time() + 60
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        for i in range(2):
            processes.append(
                start(
                    "distributed.cli.dask_worker",
                    "--scheduler-file",
                    str(scheduler_file),
                    "--nthreads",
                    "1",
                    "--name",
                    f"w{i}",
                    "--host",
                    "127.0.0.1",
                    log=tmp_path / f"worker{i}.log",
                )
            )
        with Client(scheduler_file=str(scheduler_file)) as client:
            client.wait_for_workers(2, timeout=60)
        folder = tmp_path / "in"
        for i in range(4):
            write_jsonl(folder / f"f{i}.jsonl", [{"text": f"{text} {i}"} for _, text in DOCS])
        summary = pipeline.run(
            make_config(
                f"dataset.path={folder}",
                f"classifier.zero_shot_domain.model={tiny_bert}",
                "cluster=scheduler",
                f"cluster.scheduler_file={scheduler_file}",
                "cluster.torch_threads=1",
            )
        )
        with Client(scheduler_file=str(scheduler_file)) as client:
            loads = client.run(cache.load_count)
            threads = client.run(lambda: __import__("torch").get_num_threads())
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    assert summary["read"] == summary["written"] == 4 * len(DOCS)
    assert len(loads) == 2 and all(n in (0, 2) for n in loads.values())  # model + tokenizer, once per worker
    assert set(threads.values()) == {1}  # cluster.torch_threads reached the workers
    outputs = sorted((tmp_path / "out").glob("*.jsonl"))
    assert [p.name for p in outputs] == ["f0.jsonl", "f1.jsonl", "f2.jsonl", "f3.jsonl"]
    assert all(pd.read_json(p, lines=True)["domain_pred"].notna().all() for p in outputs)
