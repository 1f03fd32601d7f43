"""Tasks side by side in a worker (inference.units_in_flight), windowed tokenising and the simulated
device: outputs identical to the serial path row for row, a bounded number of units in flight, an
exception in any stage reported for its unit only, and device_busy in summary.json from `run.py`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from curator import execution, pipeline, stages
from curator.classifiers.base import DistributedDataClassifier
from curator.inference import cache, tokens
from curator.inference.engine import DeviceTurns
from curator.inference.simulated import SimulatedModel
from curator.pipeline import RunFailedError
from tests.conftest import DOCS, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
SIMULATED = ["inference.device=simulated", "inference.simulated_tokens_per_s=400000"]


def make_units(folder: Path, sizes: list[int], parquet: bool = False) -> Path:
    """Files of `sizes` documents (distinct texts of many lengths), JSONL or Parquet."""
    for i, size in enumerate(sizes):
        records = [
            {"id": f"u{i}-{j}", "text": f"{DOCS[j % len(DOCS)][1]} " * (1 + (i * 7 + j) % 9) + f"#{i}-{j}"}
            for j in range(size)
        ]
        if parquet:
            folder.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(records).to_parquet(folder / f"f{i}.parquet")
        else:
            write_jsonl(folder / f"f{i}.jsonl", records)
    return folder


def outputs(folder: Path) -> dict[str, pd.DataFrame]:
    found = sorted([*folder.glob("*.jsonl"), *folder.glob("*.parquet")])
    return {
        p.name: pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_json(p, lines=True, dtype=False)
        for p in found
    }


@pytest.mark.parametrize("parquet", [False, True])
def test_side_by_side_outputs_equal_the_serial_path_row_for_row(
    make_config, tmp_path: Path, tiny_model: str, tiny_fineweb: Path, parquet: bool
) -> None:
    """Two classifiers (zero-shot, FineWeb-Edu regression without a max_chars cut) on a real CPU model."""
    data = make_units(tmp_path / "in", [23, 5, 40, 1, 17], parquet=parquet)
    common = [
        f"dataset.path={data}",
        "classifier=[zero_shot_domain,fineweb_edu]",
        tiny_model,
        f"classifier.fineweb_edu.model={tiny_fineweb}",
        "classifier.fineweb_edu.max_length=24",  # long rows are cut: the prefix path is taken
        "inference.window=7",
    ]
    serial = pipeline.run(make_config(*common, "inference.units_in_flight=1", f"output.path={tmp_path}/a"))
    overlapped = pipeline.run(
        make_config(
            *common,
            "inference.units_in_flight=3",
            "inference.tokenizer_threads=2",
            f"output.path={tmp_path}/b",
        )
    )
    a, b = outputs(tmp_path / "a"), outputs(tmp_path / "b")
    assert sorted(a) == sorted(b) and len(a) == 5
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert (
        a["f2" + (".parquet" if parquet else ".jsonl")]["fineweb-edu-score"].nunique() > 5
    )  # real, varied scores
    for summary in (serial, overlapped):
        figures = summary["classifiers"]["fineweb_edu"]
        assert 0 < figures["device_busy"] <= 1
        assert set(figures["host_seconds"]) == {"read", "tokenise", "postprocess", "write"}


def test_simulated_outputs_do_not_depend_on_windows_or_batches(
    make_config, tmp_path: Path, tiny_model: str
) -> None:
    """A row's simulated output is a function of its ids: any window, batch or concurrency gives the same."""
    data = make_units(tmp_path / "in", [30, 12, 25])
    pipeline.run(
        make_config(
            f"dataset.path={data}",
            tiny_model,
            *SIMULATED,
            "inference.units_in_flight=1",
            "inference.window=null",
            f"output.path={tmp_path}/a",
        )
    )
    pipeline.run(
        make_config(
            f"dataset.path={data}",
            tiny_model,
            *SIMULATED,
            "inference.units_in_flight=2",
            "inference.window=4",
            "inference.token_budget=300",
            f"output.path={tmp_path}/b",
        )
    )
    a, b = outputs(tmp_path / "a"), outputs(tmp_path / "b")
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert a["f0.jsonl"]["domain_pred"].nunique() > 3


def test_at_most_units_in_flight_tasks_run_at_once(
    make_config, tmp_path: Path, tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_units(tmp_path / "in", [6] * 8)
    running, peak, lock = [0], [0], threading.Lock()
    real = execution.process

    def counted(*args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.05)  # hold the slot long enough for the others to pile up
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(execution, "process", counted)
    summary = pipeline.run(
        make_config(f"dataset.path={data}", tiny_model, *SIMULATED, "inference.units_in_flight=3")
    )
    assert peak[0] == 3
    assert summary["read"] == summary["written"] == 48


def inject(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, fails: Callable, stage: str) -> None:
    """Make `owner.name` raise (naming `stage`) on the calls `fails` picks; the others run as before."""
    real = getattr(owner, name)

    def patched(*args: object, **kwargs: object) -> object:
        if fails(*args, **kwargs):
            raise RuntimeError(f"injected failure in {stage}")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, patched)


STAGES = ["read", "tokenise", "device", "postprocess", "write"]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("grouped", [False, True])
def test_an_exception_in_any_stage_fails_its_unit_only(
    make_config, tmp_path: Path, tiny_model: str, monkeypatch: pytest.MonkeyPatch, stage: str, grouped: bool
) -> None:
    """The unit of 7 documents raises in `stage`; every other unit is written and the counts add up.
    `grouped`: small files share tasks (files_per_partition=3), so read/write failures hit one unit of a
    task and classification failures the units classified with it."""
    sizes = [5, 7, 9, 4, 6, 8]
    data = make_units(tmp_path / "in", sizes)
    bad = "f1"  # the unit of 7 documents
    size = 5 + 7 + 9 if grouped else 7  # what the model stage sees: the unit, or its task's three units
    # where the failure is injected, and which call raises (a unit's name, or the rows the stage sees)
    places = {
        "read": (stages, "read", lambda parts, *a: parts[0].name == bad),
        "write": (stages, "write_partition", lambda frame, unit, *a, **k: unit.name == bad),
        "tokenise": (tokens, "tokenize", lambda tok, texts, n: len(texts) == size),
        "device": (SimulatedModel, "forward", lambda model, ids, mask: ids.shape[0] == size),
        "postprocess": (
            DistributedDataClassifier,
            "label_columns",
            lambda clf, probs, labels: len(probs) == size,
        ),
    }
    inject(monkeypatch, *places[stage], stage)
    cache.clear()  # the simulated model is built afresh with the patched class
    settings = [
        f"dataset.path={data}",
        tiny_model,
        *SIMULATED,
        "inference.tokenizer_threads=1",
        "inference.units_in_flight=2",
        "classifier.zero_shot_domain.batch_size=1000",
    ]
    if grouped:
        settings.append("dataset.files_per_partition=3")
    with pytest.raises(RunFailedError, match="injected failure in " + stage):
        pipeline.run(make_config(*settings))
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    status = {s["unit"]: s["status"] for s in summary["per_file"]}
    classified_together = grouped and stage not in ("read", "write")
    failed = {"f0", "f1", "f2"} if classified_together else {bad}
    assert {u for u, s in status.items() if s == "failed"} == failed
    assert all(status[u] == "done" for u in status if u not in failed)
    done = [s for s in summary["per_file"] if s["status"] == "done"]
    assert summary["read"] == sum(s["written"] + s["filtered"] + s["quarantined"] for s in done)
    assert summary["read"] == sum(n for i, n in enumerate(sizes) if f"f{i}" not in failed)
    written = outputs(tmp_path / "out")
    assert sorted(written) == sorted(f"{u}.jsonl" for u in status if u not in failed)
    # the rerun resumes: only the failed units' tasks run again (a task reruns whole), then all is there
    rerun = 3 if grouped else 1
    monkeypatch.undo()
    cache.clear()
    again = pipeline.run(make_config(*settings))
    assert again["units"] == {"done": rerun, "skipped": len(sizes) - rerun}


def test_simulated_device_through_run_py_reports_device_busy(tmp_path: Path, tiny_bert: Path) -> None:
    data = make_units(tmp_path / "in", [40, 30])
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            f"dataset.path={data}",
            "dataset.name=sim",
            "cluster=sync",
            f"classifier.zero_shot_domain.model={tiny_bert}",
            "inference.device=simulated",
            "inference.simulated_tokens_per_s=50000",
            f"output.path={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = [p for p in (tmp_path / "outputs").glob("*/*") if (p / ".hydra").is_dir()]
    summary = json.loads((run_dirs[0] / "summary.json").read_text())
    figures = summary["classifiers"]["zero_shot_domain"]
    # the simulated device slept padded_tokens / rate seconds in all
    assert figures["device_seconds"] == pytest.approx(figures["padded_tokens"] / 50000, rel=0.2)
    assert 0 < figures["device_busy"] <= 1
    assert figures["host_seconds"]["tokenise"] > 0 and figures["host_seconds"]["read"] > 0
    assert summary["written"] == 70


def test_generating_families_refuse_the_simulated_device() -> None:
    from curator.config import InferenceConfig
    from curator.errors import ConfigError

    class Generates(DistributedDataClassifier):
        generates = True

    with pytest.raises(ConfigError, match="simulated stands in for one forward pass"):
        Generates("gen", inference=InferenceConfig(device="simulated"))


def test_simulated_rows_are_probabilities_when_the_model_gives_probabilities() -> None:
    import torch

    class Softmax(torch.nn.Module):
        def forward(self, ids, mask):
            return torch.softmax(torch.ones(ids.shape[0], 4), -1)

    model = SimulatedModel(Softmax(), 1e9)
    ids = torch.tensor([[5, 6, 7, 0], [5, 6, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    out = model(ids, mask).numpy()
    assert out.shape == (2, 4) and np.allclose(out.sum(-1), 1)
    again = model(ids[:1, :3], mask[:1, :3]).numpy()  # the same row, padded differently
    assert np.array_equal(out[0], again[0]) and not np.array_equal(out[0], out[1])


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_results_come_back_without_a_per_batch_sync_and_busy_time_from_events() -> None:
    """The same rows in the same order as on the CPU; the device's busy time from CUDA events."""
    import torch

    from curator.inference.engine import BatchPlan, RunStats, run_batches

    torch.manual_seed(0)
    layer = torch.nn.Embedding(100, 8)
    rng = np.random.default_rng(0)
    ids = [rng.integers(1, 100, size=int(n)).tolist() for n in rng.integers(1, 40, size=300)]

    def forward(model):
        return lambda input_ids, mask: (model(input_ids) * mask.unsqueeze(-1)).sum(1)

    plan = BatchPlan(token_budget=256, max_rows=64, prefetch=True)
    expected = run_batches(ids, forward(layer), plan, 0, torch.device("cpu"))
    stats = RunStats()
    got = run_batches(ids, forward(layer.cuda()), plan, 0, torch.device("cuda"), stats=stats)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert stats.batches > 3 and stats.device_seconds > 0


def test_a_device_counts_as_starving_only_when_idle_for_a_while() -> None:
    """The ramp of small windows is for a pipeline that fills, not for the gaps between busy batches."""
    turns = DeviceTurns()
    assert turns.cold()  # never ran
    with turns.turn():
        assert not turns.cold(idle_s=0.0)  # a batch is on the device
    assert not turns.cold(idle_s=60.0)  # just finished one
    time.sleep(0.02)
    assert turns.cold(idle_s=0.01)


def test_a_small_run_spreads_over_every_worker_from_the_start(
    make_config, tmp_path: Path, tiny_model: str
) -> None:
    """Two units, two one-thread workers, no work stealing: each worker runs one unit (a task shared by
    all units, such as the work shipped once, would pin both to the worker holding it)."""
    import dask
    from distributed import Client, LocalCluster

    data = make_units(tmp_path / "in", [6, 6])
    with (
        dask.config.set({"distributed.scheduler.work-stealing": False}),
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        summary = pipeline.run(
            make_config(
                f"dataset.path={data}",
                tiny_model,
                "cluster=scheduler",
                f"cluster.address={cluster.scheduler_address}",
            )
        )
    assert summary["read"] == 12
    assert len(summary["classifiers"]["zero_shot_domain"]["dtype_by_worker"]) == 2
