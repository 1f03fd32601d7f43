"""Resume: the manifest lists finished units; a rerun skips them and ends with a clean run's output."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from curator import pipeline
from curator.inference.numerics import FEATURES_ENV
from curator.io.manifest import MANIFEST
from tests.conftest import DOCS, write_jsonl

ROOT = Path(__file__).resolve().parent.parent


def make_inputs(folder: Path, files: int = 4, docs: int = 6) -> Path:
    """Small JSONL files (one with a bad line) and one large file that blocksize=1000 splits in parts."""
    for i in range(files):
        write_jsonl(folder / f"f{i}.jsonl", [{"text": f"{DOCS[j % 6][1]} ({i}.{j})"} for j in range(docs)])
    with (folder / "f1.jsonl").open("ab") as handle:
        handle.write(b'{"text": not json\n')
    write_jsonl(folder / "large.jsonl", [{"text": f"{DOCS[j % 6][1]} [{j}]"} for j in range(30)])
    return folder


def manifest_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]


def snapshot(out: Path) -> dict[str, bytes]:
    """Every data, filtered and quarantine file of an output folder (not the manifest or summary)."""
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.name.startswith(("_", ".")) and ".curator" not in p.parts
    }


@pytest.fixture()
def resume_config(make_config, tmp_path: Path, tiny_model: str):
    """Configs over the same inputs (split large file, a quarantined line) with the tiny model."""
    folder = make_inputs(tmp_path / "in")

    def make(out: str, *extra: str):
        return make_config(
            f"dataset.path={folder}", tiny_model, "dataset.blocksize=1000", f"output.path={out}", *extra
        )

    return make


def test_manifest_records_every_unit_after_its_outputs(resume_config, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = pipeline.run(resume_config(str(out)))
    header, *entries = manifest_lines(out)
    assert header["manifest"] == 1 and header["fingerprint"] == summary["fingerprint"]
    assert header["settings"]["dataset"]["blocksize"] == 1000 and "cluster" not in header["settings"]
    units = [e["unit"] for e in entries]
    assert sorted(units) == sorted(f["unit"] for f in summary["per_file"]) and len(units) == len(set(units))
    assert any(u.startswith("large.part") for u in units) and "large" not in units
    f1 = next(e for e in entries if e["unit"] == "f1")
    assert f1["outputs"] == ["f1.jsonl", "_quarantine/f1.jsonl"] and (f1["read"], f1["quarantined"]) == (7, 1)
    assert f1["signature"]["size"] == (tmp_path / "in" / "f1.jsonl").stat().st_size
    assert all((out / name).exists() for e in entries for name in e["outputs"])
    assert sum(e["read"] for e in entries) == summary["read"] == 4 * 6 + 1 + 30


def test_a_rerun_skips_finished_work_and_reports_the_whole_dataset(resume_config, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = pipeline.run(resume_config(str(out)))
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.jsonl") if ".curator" not in p.parts}
    second = pipeline.run(resume_config(str(out)))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing rewritten
    assert second["units"] == {"skipped": first["units"]["done"]}
    for key in ("read", "written", "filtered", "quarantined", "labels", "files", "parts", "fingerprint"):
        assert second[key] == first[key], key
    assert second["classifiers"] == {} and second["docs_per_second"] == 0
    assert len(manifest_lines(out)) == 1 + first["parts"]


def test_an_interrupted_run_resumes_to_exactly_the_clean_output(resume_config, tmp_path: Path) -> None:
    clean, out = tmp_path / "clean", tmp_path / "out"
    pipeline.run(resume_config(str(clean)))
    pipeline.run(resume_config(str(out)))
    # What a kill leaves: the last units unrecorded (one with its output already renamed into place,
    # one without), a torn manifest line, and half-written temporary files.
    header, *entries = manifest_lines(out)
    kept, lost = entries[:-2], entries[-2:]
    text = "".join(json.dumps(e) + "\n" for e in [header, *kept]) + '{"unit": "f3", "inp'
    (out / MANIFEST).write_text(text)
    for name in lost[0]["outputs"]:
        (out / name).unlink()
    (out / "f0.jsonl.curator-tmp-0badf00d").write_text('{"half": ')
    (out / "_quarantine" / "f9.jsonl.curator-tmp-12345678").write_text("")
    summary = pipeline.run(resume_config(str(out)))
    assert summary["units"] == {"skipped": len(kept), "done": 2}
    assert snapshot(out) == snapshot(clean)  # byte for byte: no duplicates, no gaps
    assert not [p for p in out.rglob("*") if ".curator-tmp-" in p.name]
    assert [e["unit"] for e in manifest_lines(out)[1:]] == [e["unit"] for e in entries]
    clean_summary = json.loads((clean / "_summary.json").read_text())
    for key in ("read", "written", "quarantined", "labels", "fingerprint"):
        assert summary[key] == clean_summary[key], key


def test_a_changed_config_is_detected_and_can_overwrite(resume_config, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    pipeline.run(resume_config(out))
    with pytest.raises(ValueError) as err:
        pipeline.run(resume_config(out, "filter.keep=[Sports]"))
    message = str(err.value)
    assert "different configuration" in message and "filter.keep: None -> ['Sports']" in message
    assert "output.mode=overwrite" in message
    with pytest.raises(ValueError, match=r"zero_shot_domain\.max_chars: 2000 -> 50"):
        pipeline.run(resume_config(out, "classifier.zero_shot_domain.max_chars=50"))
    same = pipeline.run(resume_config(out, "cluster.torch_threads=1"))  # speed settings are not content
    assert set(same["units"]) == {"skipped"}
    replaced = pipeline.run(resume_config(out, "filter.keep=[Sports]", "output.mode=overwrite"))
    assert replaced["units"] == {"done": replaced["parts"]} and replaced["written"] < replaced["read"]
    kept = [pd.read_json(p, lines=True) for p in Path(out).glob("*.jsonl") if p.stat().st_size > 1]
    assert all(set(frame["domain_pred"]) == {"Sports"} for frame in kept)
    assert sum(len(frame) for frame in kept) == replaced["written"]
    with pytest.raises(ValueError, match="already holds a run"):
        pipeline.run(resume_config(out, "filter.keep=[Sports]", "output.mode=error"))
    with pytest.raises(ValueError, match=r"output\.mode='later'"):
        pipeline.run(resume_config(out, "output.mode=later"))


def test_dtype_auto_resumes_only_on_the_same_kind_of_cpu(
    resume_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`auto` is bf16 on a CPU with AMX and float32 without: a folder begun on one is not continued in the
    other's numerics (CURATOR_CPU_FEATURES stands in for the two machines)."""
    out = str(tmp_path / "out")
    monkeypatch.setenv(FEATURES_ENV, "amx_bf16,amx_int8,avx512_bf16")
    first = pipeline.run(resume_config(out))
    assert first["classifiers"]["zero_shot_domain"]["dtype"] == "bfloat16"
    monkeypatch.setenv(FEATURES_ENV, "none")  # the same folder on a CPU without native bf16
    with pytest.raises(ValueError, match=r"inference\.auto_dtype_on_cpu: 'bfloat16' -> None"):
        pipeline.run(resume_config(out))
    explicit = pipeline.run(resume_config(str(tmp_path / "fp32"), "inference.dtype=float32"))
    monkeypatch.setenv(FEATURES_ENV, "amx_bf16")  # an explicit dtype means the same everywhere
    assert set(pipeline.run(resume_config(str(tmp_path / "fp32"), "inference.dtype=float32"))["units"]) == {
        "skipped"
    }
    assert explicit["fingerprint"] != first["fingerprint"]
    assert set(pipeline.run(resume_config(out))["units"]) == {"skipped"}  # back on an AMX machine


def test_a_changed_input_is_redone_and_its_old_parts_removed(resume_config, tmp_path: Path) -> None:
    out = tmp_path / "out"
    pipeline.run(resume_config(str(out)))
    assert len(list(out.glob("large.part*.jsonl"))) > 1
    write_jsonl(tmp_path / "in" / "large.jsonl", [{"text": DOCS[2][1]}])  # now small: one unit
    summary = pipeline.run(resume_config(str(out)))
    assert summary["units"] == {"skipped": 4, "done": 1}
    assert sorted(p.name for p in out.glob("large*")) == ["large.jsonl"]
    assert summary["read"] == 4 * 6 + 1 + 1
    assert sorted(e["unit"] for e in manifest_lines(out)[1:]) == ["f0", "f1", "f2", "f3", "large"]


def test_units_of_inputs_this_run_does_not_read_are_kept_and_named(
    resume_config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A renamed or deleted input leaves its outputs (a folder may gather runs over several dataset.paths):
    the run says so instead of counting fewer rows than the folder holds without a word."""
    out = tmp_path / "out"
    pipeline.run(resume_config(str(out)))
    (tmp_path / "in" / "f1.jsonl").rename(tmp_path / "in" / "g1.jsonl")
    with caplog.at_level(logging.WARNING, logger="curator.pipeline"):
        summary = pipeline.run(resume_config(str(out)))
    assert summary["units"]["done"] == 1 and (out / "f1.jsonl").exists() and (out / "g1.jsonl").exists()
    [warning] = [r.getMessage() for r in caplog.records if "this run does not read" in r.getMessage()]
    assert warning.startswith("The output folder also holds 1 unit(s)") and ": f1. They are kept" in warning


# ---- the real thing: SIGKILL a running `python run.py`, rerun, compare ----------------------------
def _run_py(args: list[str], cwd: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the kill takes the workers with it
        **kwargs,
    )


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_equals_a_clean_run(make_config, tmp_path: Path, tiny_model: str) -> None:
    folder = tmp_path / "in"
    for i in range(8):
        write_jsonl(folder / f"part-{i}.jsonl", [{"text": f"{DOCS[j % 6][1]} #{i}-{j}"} for j in range(400)])
    common = [f"dataset.path={folder}", tiny_model, "cluster.torch_threads=1", "quiet=true"]
    out = tmp_path / "out"
    # Killed: a LocalCluster run (client, scheduler and worker processes all die at once).
    local = ["cluster.n_workers=1", "cluster.dashboard_address=null"]
    killed = _run_py([*common, *local, f"output.path={out}"], tmp_path)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and killed.poll() is None:
        if (out / MANIFEST).exists() and len(manifest_lines(out)) >= 2:  # header + ≥ 1 finished file
            break
        time.sleep(0.02)
    assert killed.poll() is None, f"the run ended before it could be killed:\n{killed.stdout.read()}"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait(30)
    finished_before = len(manifest_lines(out)) - 1
    assert 1 <= finished_before < 8
    # Rerun, the same command (synchronous here: quicker to start, the same numbers).
    resumed = _run_py([*common, "cluster=sync", f"output.path={out}"], tmp_path)
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log[-3000:]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["units"]["skipped"] >= finished_before and summary["read"] == 8 * 400
    threads = torch.get_num_threads()
    try:  # the uninterrupted run, in this process with the same settings
        pipeline.run(make_config(*common, f"output.path={tmp_path / 'clean'}"))
    finally:
        torch.set_num_threads(threads)
    assert snapshot(out) == snapshot(tmp_path / "clean")  # byte for byte
    rows = pd.concat(pd.read_json(p, lines=True) for p in sorted(out.glob("*.jsonl")))
    assert len(rows) == 8 * 400 and rows["id"].is_unique and rows["domain_pred"].notna().all()
    assert not [p for p in out.rglob("*") if ".curator-tmp-" in p.name]
