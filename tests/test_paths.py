"""Inputs and outputs never overlap: real folders, links, FIFOs, locks and second processes."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from curator import pipeline
from curator.errors import ConfigError, InputNotFoundError, UserError
from curator.io.files import discover
from curator.io.guard import OverlapError
from curator.io.lock import (
    HOST,
    LOCK,
    MARKER,
    TMP_MARK,
    OutputInUseError,
    OutputNotWritableError,
    temporary_suffix,
)
from curator.io.manifest import remove_temporaries
from curator.io.writers import QUARANTINE
from tests.conftest import DOCS, write_jsonl
from tests.test_resume import _run_py


def docs(n: int, tag: str) -> list[dict]:
    return [{"text": f"{DOCS[i % 6][1]} <{tag}{i}>"} for i in range(n)]


def rows(folder: Path, pattern: str = "*.jsonl") -> pd.DataFrame:
    """Every data row written in an output folder (not its quarantine or filtered rows)."""
    paths = [p for p in sorted(folder.glob(pattern)) if ".curator" not in p.parts and p.stat().st_size]
    found = [pd.read_json(p, lines=True) for p in paths]
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame()


@pytest.fixture()
def config(make_config, tiny_model: str):
    """A config over `path` writing to `out`, with the tiny model (synchronous cluster)."""

    def make(path: str | Path, out: str | Path, *extra: str):
        return make_config(f"dataset.path={path}", f"output.path={out}", tiny_model, *extra)

    return make


# ---- output names never collide ------------------------------------------------------------------
def test_a_split_part_name_equal_to_another_input_is_refused_before_any_work(config, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", docs(40, "a"))
    write_jsonl(tmp_path / "in" / "a.part0001.jsonl", docs(2, "p"))
    with pytest.raises(ConfigError, match=r"a\.jsonl.*part a\.part0001.*a\.part0001\.jsonl.*blocksize"):
        pipeline.run(config(tmp_path / "in", tmp_path / "out", "dataset.blocksize=1000"))
    assert not (tmp_path / "out").exists()
    summary = pipeline.run(config(tmp_path / "in", tmp_path / "out", "dataset.blocksize=null"))
    assert summary["read"] == summary["written"] == 42  # whole files: two names, nothing lost


def test_a_long_input_name_is_written_and_one_too_long_to_write_is_refused_first(
    config, tmp_path: Path
) -> None:
    """The temporary's suffix once pushed a valid 246-byte name past the 255-byte limit: every run of that
    unit failed at its write. A name the output itself cannot have is refused before any work."""
    long = "ü" * 120 + ".jsonl"  # 246 bytes in UTF-8
    write_jsonl(tmp_path / "in" / long, docs(3, "long"))
    summary = pipeline.run(config(tmp_path / "in", tmp_path / "out"))
    assert summary["read"] == summary["written"] == 3 and len(rows(tmp_path / "out")) == 3
    write_jsonl(tmp_path / "in2" / ("x" * 250 + ".json"), docs(1, "x"))  # writes x...x.jsonl: 256 bytes
    with pytest.raises(ConfigError, match=r"longer than the 255 bytes a file name may have"):
        pipeline.run(config(tmp_path / "in2", tmp_path / "out2"))
    assert not (tmp_path / "out2").exists()


def test_a_data_name_equal_to_a_quarantine_name_is_refused(config, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "x.jsonl", docs(2, "x"))
    write_jsonl(tmp_path / "in" / "_quarantine" / "x.jsonl", docs(2, "q"))  # data named like x's quarantine
    pattern = str(tmp_path / "in" / "**" / "*.jsonl")  # a glob reads names a folder listing would skip
    with pytest.raises(ConfigError, match=r"_quarantine/x\.jsonl.*would both write '_quarantine/x\.jsonl'"):
        pipeline.run(config(pattern, tmp_path / "out"))


# ---- the run's own folders are known by a marker, never by name ----------------------------------
def test_a_user_quarantine_folder_is_data_and_chained_runs_read_only_data(config, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", docs(6, "a"))
    with (tmp_path / "in" / "a.jsonl").open("ab") as handle:
        handle.write(b'{"text": broken\n')
    write_jsonl(tmp_path / "in" / "quarantine" / "q.jsonl", docs(4, "q"))
    write_jsonl(tmp_path / "in" / "filtered" / "f.jsonl", docs(3, "f"))
    one = tmp_path / "one"
    first = pipeline.run(config(tmp_path / "in", one, "filter.write_filtered=true"))
    assert (first["read"], first["written"], first["quarantined"]) == (14, 13, 1)
    assert (one / MARKER).is_file() and (one / "_filtered" / "a.jsonl").exists()
    users = pd.read_json(one / "quarantine" / "q.jsonl", lines=True)  # the user's folder: classified data
    assert len(users) == 4 and users["domain_pred"].notna().all()
    # The first run's output folder as the next run's input: only its data files, never its own
    # quarantine (a's bad line) or filtered files, manifest or summary.
    assert sorted(f.stem for f in discover(str(one))) == ["a", "filtered/f", "quarantine/q"]
    renamed = ("classifier.zero_shot_domain.pred_column=d2", "classifier.zero_shot_domain.score_column=s2")
    second = pipeline.run(config(one, tmp_path / "two", *renamed))
    assert (second["read"], second["written"], second["quarantined"]) == (13, 13, 0)


# ---- inputs and outputs never overlap (resolved real paths) --------------------------------------
def test_output_equal_to_inside_or_around_an_input_is_refused(config, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", docs(3, "a"))
    before = sorted(p.name for p in (tmp_path / "in").rglob("*"))
    with pytest.raises(OverlapError, match="is the input"):
        pipeline.run(config(tmp_path / "in", tmp_path / "in"))
    with pytest.raises(OverlapError, match="is inside the input"):
        pipeline.run(config(tmp_path / "in", tmp_path / "in" / "out"))
    with pytest.raises(OverlapError, match=r"is inside output\.path"):
        pipeline.run(config(tmp_path / "in" / "a.jsonl", tmp_path))
    with pytest.raises(OverlapError, match="is inside the input"):
        pipeline.run(config(f"'{tmp_path / 'in'}/*.jsonl'", tmp_path / "in" / "sub" / "out"))
    assert sorted(p.name for p in (tmp_path / "in").rglob("*")) == before  # nothing written there


def test_links_into_the_output_folder_or_from_it_into_the_input_are_refused(config, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", docs(3, "a"))
    out = tmp_path / "out"
    pipeline.run(config(tmp_path / "in", out))
    written = (out / "a.jsonl").read_bytes()
    (tmp_path / "in" / "b.jsonl").symlink_to(out / "a.jsonl")  # an input that is really an output
    with pytest.raises(OverlapError, match=r"b\.jsonl' resolves to .*out/a\.jsonl, inside output\.path"):
        pipeline.run(config(tmp_path / "in", out))
    assert (out / "a.jsonl").read_bytes() == written
    (tmp_path / "in" / "b.jsonl").unlink()
    (tmp_path / "link-to-out").symlink_to(out)
    with pytest.raises(OverlapError, match="is the input"):
        pipeline.run(config(tmp_path / "link-to-out", out))
    (tmp_path / "link-into-in").symlink_to(tmp_path / "in")
    with pytest.raises(OverlapError, match="is inside the input"):  # output.path a link into the input
        pipeline.run(config(tmp_path / "in", tmp_path / "link-into-in" / "results"))
    assert not (tmp_path / "in" / "results").exists()


def test_overlap_on_an_fsspec_filesystem_compares_normalised_paths(config, tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/paths-test/in/a.jsonl", b'{"text": "a"}\n')
    try:
        with pytest.raises(OverlapError, match="is inside the input"):
            pipeline.run(config("memory://paths-test/in", "memory://paths-test/x/../in/out"))
        summary = pipeline.run(config("memory://paths-test/in", "memory://paths-test/out"))
        assert summary["written"] == 1 and fs.exists("/paths-test/out/a.jsonl")
    finally:
        fs.rm("/paths-test", recursive=True)


def test_names_with_glob_characters_are_written_as_named_on_an_fsspec_store(config, tmp_path: Path) -> None:
    """mv and rm expand `*`, `?` and `[...]` on object stores and memory://: `a*.jsonl` was copied into
    a folder `a*.jsonl/` and deleted, after being counted as written."""
    folder, fs = tmp_path / "in", fsspec.filesystem("memory")
    write_jsonl(folder / "a*.jsonl", [*docs(2, "star"), {"text": None}])  # one row to quarantine
    write_jsonl(folder / "b[1].jsonl", docs(1, "bracket"))
    write_jsonl(folder / "c?.jsonl", docs(2, "question"))
    try:
        summary = pipeline.run(config(folder, "memory://glob-names/out"))
        assert (summary["read"], summary["written"], summary["quarantined"]) == (6, 5, 1)
        files = sorted(p for p in fs.find("/glob-names/out") if p.endswith(".jsonl") and ".curator/" not in p)
        names = [p.removeprefix("/glob-names/out/") for p in files]
        assert names == [f"{QUARANTINE}/a*.jsonl", "a*.jsonl", "b[1].jsonl", "c?.jsonl"]
        assert [fs.cat_file(p).decode().count("\n") for p in files] == [1, 2, 1, 2]
        write_jsonl(folder / "a*.jsonl", docs(3, "star"))  # the bad row fixed: its quarantine goes
        summary = pipeline.run(config(folder, "memory://glob-names/out", "output.mode=resume"))
        left = sorted(p for p in fs.find("/glob-names/out") if ".curator" not in p)
        assert summary["quarantined"] == 0 and not any("quarantine" in p for p in left)
        assert fs.cat_file("/glob-names/out/a*.jsonl").decode().count("\n") == 3
    finally:
        fs.rm("/glob-names", recursive=True)


def test_overlapping_inputs_are_read_once(config, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", docs(3, "a"))
    write_jsonl(tmp_path / "in" / "sub" / "b.jsonl", docs(2, "b"))
    summary = pipeline.run(config(f"[{tmp_path / 'in'},{tmp_path / 'in' / 'sub'}]", tmp_path / "out"))
    assert summary["read"] == 5 and rows(tmp_path / "out", "**/*.jsonl")["id"].is_unique
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").glob("**/?.jsonl")) == [
        "a.jsonl",
        "sub/b.jsonl",
    ]


# ---- only regular files are read -----------------------------------------------------------------
@pytest.mark.timeout(120)  # opening the FIFO would block forever
def test_fifos_and_symlink_loops_are_skipped_with_a_warning(config, tmp_path: Path, caplog) -> None:
    folder = tmp_path / "in"
    write_jsonl(folder / "a.jsonl", docs(3, "a"))
    os.mkfifo(folder / "b.jsonl")  # opening it would block forever
    (folder / "loop1.jsonl").symlink_to(folder / "loop2.jsonl")
    (folder / "loop2.jsonl").symlink_to(folder / "loop1.jsonl")
    (folder / "gone.jsonl").symlink_to(folder / "nowhere.jsonl")
    with caplog.at_level(logging.WARNING, logger="curator.io.files"):
        summary = pipeline.run(config(folder, tmp_path / "out"))
        with pytest.raises(InputNotFoundError, match="no JSONL or Parquet files"):
            discover(str(folder / "b.jsonl"))  # named on its own: skipped, never opened
    assert summary["read"] == 3 and [f["unit"] for f in summary["per_file"]] == ["a"]
    skipped = [r.getMessage() for r in caplog.records if "not a regular file" in r.getMessage()]
    assert sorted(Path(m.split()[1].rstrip(":")).name for m in skipped) == [
        "b.jsonl",  # by the run
        "b.jsonl",  # named on its own
        "gone.jsonl",
        "loop1.jsonl",
        "loop2.jsonl",
    ]


def test_a_name_fsspec_would_read_as_a_url_chain_is_opened_as_named(config, tmp_path: Path) -> None:
    """fsspec reads `a::b.jsonl` as a chain of URLs and opens `a`: a file of that name beside it was
    read in its place, and the run said all was well."""
    folder = tmp_path / "in"
    write_jsonl(folder / "a::b.jsonl", docs(2, "chained"))
    write_jsonl(folder / "a", docs(1, "impostor"))  # no suffix: not an input itself
    with gzip.open(folder / "c::d.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(d) + "\n" for d in docs(3, "zipped")))
    summary = pipeline.run(config(folder, tmp_path / "out"))
    assert summary["read"] == summary["written"] == 5
    out = tmp_path / "out"
    assert pd.read_json(out / "a::b.jsonl", lines=True)["text"].str.contains("<chained").all()
    zipped = pd.read_json(out / "c::d.jsonl.gz", lines=True, compression="gzip")
    assert zipped["text"].str.contains("<zipped").all() and len(zipped) == 3


def test_a_path_with_glob_characters_that_exists_is_that_file_or_folder(config, tmp_path: Path) -> None:
    """`part[1].jsonl` read `part1.jsonl` (a glob's match) in its place; a folder `data[1]` was refused."""
    write_jsonl(tmp_path / "in" / "part[1].jsonl", docs(2, "bracket"))
    write_jsonl(tmp_path / "in" / "part1.jsonl", docs(1, "other"))
    summary = pipeline.run(config(f"'{tmp_path / 'in' / 'part[1].jsonl'}'", tmp_path / "out"))
    assert summary["read"] == 2 and rows(tmp_path / "out")["text"].str.contains("<bracket").all()
    write_jsonl(tmp_path / "data[1]" / "a.jsonl", docs(3, "folder"))
    summary = pipeline.run(config(f"'{tmp_path / 'data[1]'}'", tmp_path / "out2"))
    assert summary["read"] == summary["written"] == 3
    summary = pipeline.run(config(f"'{tmp_path / 'in' / 'part[0-9].jsonl'}'", tmp_path / "out3"))
    assert summary["read"] == 1  # a pattern that names no file is still a glob


def test_files_a_folder_holds_in_other_formats_are_named_in_a_warning(config, tmp_path: Path, caplog) -> None:
    folder = tmp_path / "in"
    write_jsonl(folder / "a.jsonl", docs(2, "a"))
    write_jsonl(folder / "b.ndjson", docs(3, "b"))
    write_jsonl(folder / "sub" / "c.jsonlines", docs(1, "c"))
    (folder / "_SUCCESS").write_text("")  # marker files are skipped quietly, as before
    with caplog.at_level(logging.WARNING, logger="curator.io.files"):
        summary = pipeline.run(config(folder, tmp_path / "out"))
    assert summary["read"] == 2
    warned = [r.getMessage() for r in caplog.records if "suffix is not one this reads" in r.getMessage()]
    assert len(warned) == 1 and "Skipping 2 file(s)" in warned[0]
    assert "b.ndjson, sub/c.jsonlines." in warned[0] and "_SUCCESS" not in warned[0]
    # as the warning says, dataset.format reads them all
    summary = pipeline.run(config(folder, tmp_path / "out2", "dataset.format=jsonl"))
    assert summary["read"] == summary["written"] == 6


def test_links_without_a_suffix_are_named_for_what_they_are_not_for_their_suffix(
    config, tmp_path: Path, caplog
) -> None:
    """A link to a folder and a link loop, named without a suffix, were listed as files of another format."""
    folder = tmp_path / "in"
    write_jsonl(folder / "a.jsonl", docs(2, "a"))
    write_jsonl(tmp_path / "elsewhere" / "b.jsonl", docs(3, "b"))
    (folder / "shards").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (folder / "loop1").symlink_to(folder / "loop2")
    (folder / "loop2").symlink_to(folder / "loop1")
    (folder / "notes.txt").write_text("not data\n")
    with caplog.at_level(logging.WARNING, logger="curator.io.files"):
        summary = pipeline.run(config(folder, tmp_path / "out"))
    assert summary["read"] == 2
    messages = [r.getMessage() for r in caplog.records]
    suffix = [m for m in messages if "suffix is not one this reads" in m]
    assert len(suffix) == 1 and "Skipping 1 file(s)" in suffix[0] and ": notes.txt. Set" in suffix[0]
    assert any("shards: a link to a folder" in m for m in messages)
    loops = sorted(Path(m.split()[1].rstrip(":")).name for m in messages if "not a regular file" in m)
    assert loops == ["loop1", "loop2"]


# ---- one run per output folder --------------------------------------------------------------------
def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_stale_lock_is_taken_over_and_a_live_one_refuses(config, tmp_path: Path, caplog) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", docs(3, "a"))
    out = tmp_path / "out"
    lock = out / LOCK
    lock.parent.mkdir(parents=True)
    host = HOST
    lock.write_text(json.dumps({"host": host, "pid": _dead_pid(), "started": time.time()}))
    with caplog.at_level(logging.WARNING, logger="curator.io.lock"):
        assert pipeline.run(config(tmp_path / "in", out))["written"] == 3
    assert any("Took over the lock" in r.getMessage() for r in caplog.records)
    assert not lock.exists()  # released at the end
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        lock.write_text(json.dumps({"host": host, "pid": sleeper.pid, "started": time.time()}))
        with pytest.raises(OutputInUseError, match=rf"in use by another run \(PID {sleeper.pid} on host"):
            pipeline.run(config(tmp_path / "in", out))
    finally:
        sleeper.kill()
        sleeper.wait()
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": time.time()}))
    with pytest.raises(OutputInUseError, match=f"host elsewhere.*delete {lock}"):
        pipeline.run(config(tmp_path / "in", out))


def test_clean_up_removes_only_temporaries_of_dead_processes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        mine = temporary_suffix()
        live = mine.replace(f"-{os.getpid()}-", f"-{sleeper.pid}-")
        dead = mine.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-")
        names = {
            "live": live,
            "dead": dead,
            "mine": mine,
            "old": f"{TMP_MARK}0a1b2c3d",
            "host": f"{TMP_MARK}x-1-y",
        }
        for key, suffix in names.items():
            (out / f"{key}.jsonl{suffix}").write_text("half")
        assert remove_temporaries(fsspec.filesystem("file"), str(out)) == 4
        assert [p.name for p in out.iterdir()] == [f"live.jsonl{live}"]  # another process is writing it
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow
def test_a_second_run_on_the_same_output_stops_at_once_and_the_first_finishes(
    config, tmp_path: Path, tiny_model: str
) -> None:
    folder = tmp_path / "in"
    for i in range(6):
        write_jsonl(folder / f"part-{i}.jsonl", docs(4000, f"{i}-"))
    out = tmp_path / "out"
    args = [f"dataset.path={folder}", f"output.path={out}", tiny_model, "cluster=sync", "quiet=true"]
    first = _run_py([*args, "cluster.torch_threads=1"], tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (out / LOCK).exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.poll() is None, first.stdout.read()
        started = time.monotonic()
        with pytest.raises(OutputInUseError, match=f"PID {first.pid} on host"):
            pipeline.run(config(folder, out))
        assert time.monotonic() - started < 30
        assert first.poll() is None, "the first run must still be busy when the second is refused"
        log, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 0, log[-3000:]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["read"] == summary["written"] == 6 * 4000 and len(rows(out)) == 6 * 4000
    assert not [p for p in out.rglob("*") if TMP_MARK in p.name] and not (out / LOCK).exists()


# ---- operating-system failures are one-line user errors ------------------------------------------
def test_output_path_that_is_a_file_or_unwritable_or_foreign_is_a_user_error(config, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", docs(2, "a"))
    (tmp_path / "file.txt").write_text("mine")
    with pytest.raises(OutputNotWritableError, match="is a file"):
        pipeline.run(config(tmp_path / "in", tmp_path / "file.txt"))
    assert (tmp_path / "file.txt").read_text() == "mine"
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(OutputNotWritableError, match="no run of curator-classify wrote"):
        pipeline.run(config(tmp_path / "in", tmp_path / "docs"))
    if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses even root
        read_only = Path("/sys/kernel")
        if not os.access(read_only, os.R_OK) or (read_only / ".curator").exists():
            pytest.skip("no read-only folder to test with")
        with pytest.raises(OutputNotWritableError, match="cannot be written"):
            pipeline.run(config(tmp_path / "in", read_only / "curator-out"))
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(OutputNotWritableError, match="cannot be written"):
            pipeline.run(config(tmp_path / "in", tmp_path / "ro"))


def test_a_corrupt_archive_first_does_not_stop_the_start_up_check(config, tmp_path: Path, caplog) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    header = gzip.compress(b'{"text": "x"}\n')[:10]
    (folder / "0-broken.jsonl.gz").write_bytes(header + b"\xff" * 50)  # zlib.error: invalid block type
    write_jsonl(folder / "1-good.jsonl", docs(3, "g"))
    with pytest.raises(UserError, match=r"1 of 2 unit\(s\) failed: .*0-broken\.jsonl\.gz"):
        pipeline.run(config(folder, tmp_path / "out"))
    assert any("Cannot read the first records of" in r.getMessage() for r in caplog.records)
    assert len(rows(tmp_path / "out")) == 3  # the good file is classified and recorded
    with pytest.raises(ConfigError, match=r"Text field 'body' is not in .*columns found in .*1-good"):
        pipeline.run(config(folder, tmp_path / "out2", "dataset.text_field=body"))


def test_a_file_list_that_is_not_utf8_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "files.txt").write_bytes(b"caf\xe9.jsonl\n")
    with pytest.raises(ConfigError, match=r"files\.txt' is not UTF-8 text .*byte 3"):
        discover(f"@{tmp_path / 'files.txt'}")


@pytest.mark.slow
def test_run_py_prints_an_overlap_in_one_line_and_exits_2(tmp_path: Path, tiny_model: str) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", docs(2, "a"))
    args = [f"dataset.path={tmp_path / 'in'}", f"output.path={tmp_path / 'in'}", "cluster=sync"]
    result = _run_py([*args, tiny_model], tmp_path)
    output, _ = result.communicate(timeout=180)
    assert result.returncode == 2, output[-2000:]
    assert "Traceback" not in output and "a run must never write where it reads" in output
