"""Finding inputs and reading them: values pass through unchanged, bad records are marked, not lost."""

from __future__ import annotations

import gzip
import io
import itertools
import json
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator import pipeline
from curator.classifiers.base import ERROR_COLUMN
from curator.io.files import discover
from curator.io.partitions import Part, count_lines, group_parts, parse_blocksize, plan_parts
from curator.io.readers import LINE_COLUMN, RAW_COLUMN, read_file
from tests.conftest import write_jsonl


def test_discover_directory_glob_list_and_names(docs_dir: Path) -> None:
    found = discover(str(docs_dir))
    assert [(Path(f.path).name, f.format, f.stem) for f in found] == [
        ("a.jsonl", "jsonl", "a"),
        ("b.jsonl", "jsonl", "b"),
        ("c.jsonl.gz", "jsonl", "c"),
    ]
    assert [f.stem for f in discover(str(docs_dir / "*.jsonl"))] == ["a", "b"]
    assert [f.stem for f in discover([str(docs_dir / "b.jsonl"), str(docs_dir / "a.jsonl")])] == ["b", "a"]
    assert found[2].output_name("parquet") == "c.parquet"
    assert found[2].output_name(None) == "c.jsonl"


def test_discover_keeps_subfolders_in_output_names(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "x" / "part.jsonl", [{"text": "a"}])
    write_jsonl(tmp_path / "y" / "part.jsonl", [{"text": "b"}])
    assert sorted(f.stem for f in discover(str(tmp_path))) == ["x/part", "y/part"]


def test_discover_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no JSONL or Parquet"):
        discover(str(tmp_path))


def test_json_values_are_not_reinterpreted(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [
            {"id": "00123", "text": "a", "n": 1, "when": "2024-01-01"},
            {"id": "00124", "text": "b", "nested": {"k": [1, 2]}, "tags": ["x", "y"]},
        ],
    )
    frame = read_file(discover(str(path))[0], "text", "id")
    assert frame["id"].tolist() == ["00123", "00124"]
    assert frame["when"].iloc[0] == "2024-01-01"
    assert frame["n"].iloc[0] == 1 and isinstance(frame["n"].iloc[0], int)
    assert frame["nested"].iloc[1] == {"k": [1, 2]} and frame["tags"].iloc[1] == ["x", "y"]
    assert frame["n"].iloc[1] is None and frame["tags"].iloc[0] is None
    assert frame[ERROR_COLUMN].isna().all()


def test_ids_are_made_from_file_and_line_when_absent(tmp_path: Path) -> None:
    path = tmp_path / "doc.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "a"}\n\n{"text": "b"}\n'))
    frame = read_file(discover(str(path))[0], "text", "id")
    assert frame["id"].tolist() == ["doc:1", "doc:3"]
    assert frame[LINE_COLUMN].tolist() == [1, 3]


def test_bad_records_are_marked_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b'{"text": "fine"}\n{"text": broken\n{"text": null}\n{"text": 5}\n{"other": "x"}\n[1, 2]\n'
        b'{"text": "\xff\xfe"}\n{"text": ""}\n'
    )
    frame = read_file(discover(str(path))[0], "text", "id")
    reasons = frame[ERROR_COLUMN].tolist()
    assert len(frame) == 8
    assert reasons[0] is None and reasons[7] is None  # empty text is classified, not quarantined
    assert "invalid JSON" in reasons[1] and frame[RAW_COLUMN].iloc[1] == '{"text": broken'
    assert "is null" in reasons[2]
    assert "int, not a string" in reasons[3]
    assert "missing text field" in reasons[4]
    assert "not a JSON object" in reasons[5]
    assert "invalid UTF-8" in reasons[6]


def test_parquet_input(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pd.DataFrame({"text": ["a", None, "c"], "score": [1.5, 2.5, 3.5]}).to_parquet(path)
    frame = read_file(discover(str(path))[0], "text", "id")
    assert frame["id"].tolist() == ["p:0", "p:1", "p:2"]
    assert frame[ERROR_COLUMN].notna().tolist() == [False, True, False]
    assert frame["score"].tolist() == [1.5, 2.5, 3.5]


def test_limited_reads_stop_early(tmp_path: Path) -> None:
    jsonl = write_jsonl(tmp_path / "many.jsonl", [{"text": str(i)} for i in range(500)])
    parquet = tmp_path / "many.parquet"
    pd.DataFrame({"text": [str(i) for i in range(500)]}).to_parquet(parquet)
    for path in (jsonl, parquet):
        spec = discover(str(path))[0]
        assert len(read_file(spec, "text", "id", limit=10)) == 10
        assert len(read_file(spec, "text", "id")) == 500


# ---- inputs through fsspec, file lists, compression ----------------------------------------------
def test_file_list_names_files_folders_and_globs(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data" / "one.jsonl", [{"text": "a"}])
    write_jsonl(tmp_path / "data" / "more" / "two.jsonl", [{"text": "b"}])
    write_jsonl(tmp_path / "other" / "three.jsonl", [{"text": "c"}])
    listing = tmp_path / "files.txt"
    listing.write_text(f"# inputs\ndata/one.jsonl\n\n{tmp_path / 'other'}\ndata/more/*.jsonl\n")
    found = discover(f"@{listing}")
    assert [(f.stem, Path(f.path).name) for f in found] == [
        ("one", "one.jsonl"),
        ("three", "three.jsonl"),
        ("two", "two.jsonl"),
    ]
    assert all(f.size > 0 and f.modified for f in found)
    with pytest.raises(FileNotFoundError, match="file list"):
        discover(f"@{tmp_path / 'nope.txt'}")


def test_discover_local_urls_memory_filesystem_and_earlier_run_folders(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": "a"}])
    run = tmp_path / "in" / "out"  # an earlier run's output folder, known by its marker and manifest
    write_jsonl(run / "a.jsonl", [{"text": "classified"}])
    write_jsonl(run / "quarantine" / "a.jsonl", [{"reason": "invalid JSON"}])
    write_jsonl(run / ".curator" / "manifest.jsonl", [{"manifest": 1}, {"unit": "a", "outputs": ["a.jsonl"]}])
    (run / ".curator" / "output.json").write_text("{}")
    write_jsonl(tmp_path / "in" / ".hidden" / "x.jsonl", [{"text": "x"}])
    found = discover(f"file://{tmp_path / 'in'}")
    assert [(f.stem, f.path) for f in found] == [
        ("a", str(tmp_path / "in" / "a.jsonl")),
        ("out/a", str(run / "a.jsonl")),  # its data; never its quarantine, manifest or marker
    ]

    fs = fsspec.filesystem("memory")
    fs.pipe("/h6-io/sub/b.jsonl", b'{"text": "b"}\n')
    fs.pipe("/h6-io/a.jsonl", b'{"text": "a"}\n')
    try:
        found = discover("memory://h6-io")
        assert [f.stem for f in found] == ["a", "sub/b"]
        assert found[1].path.startswith("memory://") and found[1].size == 14
        assert [f.stem for f in discover("memory://h6-io/**/*.jsonl")] == ["a", "sub/b"]
        assert read_file(found[1], "text", "id")["text"].tolist() == ["b"]
    finally:
        fs.rm("/h6-io", recursive=True)


def test_zstandard_and_gzip_jsonl_are_read_and_never_split(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    lines = b"".join(b'{"text": "doc %d"}\n' % i for i in range(50))
    (tmp_path / "z.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    (tmp_path / "g.jsonl.gz").write_bytes(gzip.compress(lines))
    files = discover(str(tmp_path))
    for file in files:
        assert read_file(file, "text", "id")["text"].tolist() == [f"doc {i}" for i in range(50)]
    assert [p.index for p in plan_parts(files, blocksize=64)] == [None, None]


def _jsonl_bytes(rows: int, seed: int = 0) -> bytes:
    """Records of random words: zstd cannot squeeze them into one block, so a cut leaves whole blocks."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list("abcdefghij"), size=6)) for _ in range(400)]
    return b"".join(
        json.dumps({"id": i, "text": " ".join(rng.choice(words, size=40))}).encode() + b"\n"
        for i in range(rows)
    )


@pytest.mark.parametrize("suffix", [".jsonl.zst", ".jsonl.gz"])
@pytest.mark.parametrize("keep", [0.05, 0.5, 0.999])
def test_a_truncated_compressed_file_raises_naming_it_instead_of_reading_short(
    tmp_path: Path, suffix: str, keep: float
) -> None:
    """zstandard's stream reader stops quietly where a file is cut: a half-downloaded .jsonl.zst read
    as fewer records (or none), and the run reported success."""
    zstandard = pytest.importorskip("zstandard")
    data = _jsonl_bytes(3000)
    packed = zstandard.ZstdCompressor().compress(data) if suffix.endswith("zst") else gzip.compress(data)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(packed[: int(len(packed) * keep)])
    [file] = discover(str(path))
    with pytest.raises(EOFError, match=r"cut\.jsonl\.(zst|gz) is truncated"):
        read_file(file, "text", "id")


def test_zstd_files_of_several_frames_and_checksums_are_read_whole(tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    first, second = _jsonl_bytes(1500, seed=1), _jsonl_bytes(1500, seed=2)
    frames = zstandard.ZstdCompressor(write_checksum=True).compress(first)
    frames += zstandard.ZstdCompressor(level=19).compress(second)  # `cat a.zst b.zst` is one valid file
    (tmp_path / "two.jsonl.zst").write_bytes(frames)
    chunks = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(chunks, closefd=False) as writer:  # many flushed blocks
        for line in first.splitlines(keepends=True):
            writer.write(line)
            writer.flush()
    (tmp_path / "flushed.jsonl.zst").write_bytes(chunks.getvalue())
    expected = [json.loads(line)["text"] for line in (first + second).splitlines()]
    two, flushed = sorted(discover(str(tmp_path)), key=lambda f: f.path, reverse=True)
    assert read_file(two, "text", "id")["text"].tolist() == expected
    assert read_file(flushed, "text", "id")["text"].tolist() == expected[:1500]


def test_a_truncated_file_fails_its_unit_and_the_others_are_written(make_config, tmp_path: Path) -> None:
    zstandard = pytest.importorskip("zstandard")
    folder = tmp_path / "in"
    folder.mkdir()
    whole = zstandard.ZstdCompressor().compress(_jsonl_bytes(20))
    (folder / "good.jsonl.zst").write_bytes(whole)
    packed = zstandard.ZstdCompressor().compress(_jsonl_bytes(3000))
    (folder / "cut.jsonl.zst").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(
        pipeline.RunFailedError, match=r"1 of 2 unit\(s\) failed: .*cut\.jsonl\.zst is truncated"
    ):
        pipeline.run(make_config(f"dataset.path={folder}", "dataset=jsonl"))
    out = tmp_path / "out"
    assert (
        len(
            zstandard.ZstdDecompressor()
            .decompress((out / "good.jsonl.zst").read_bytes(), max_output_size=1 << 24)
            .splitlines()
        )
        == 20
    )
    assert not (out / "cut.jsonl.zst").exists()


# ---- splitting large files, grouping small ones --------------------------------------------------
def _read_parts(parts: list[Part]) -> pd.DataFrame:
    """Read parts as the pipeline does: each JSONL part starts at 1 + the lines of the earlier parts."""
    frames, first = [], 1
    for part in parts:
        frames.append(read_file(part, "text", "id", first_line=first))
        first += count_lines(part) if part.format == "jsonl" else 0
    return pd.concat(frames, ignore_index=True)


def test_jsonl_splits_on_line_starts_and_keeps_whole_file_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    body = [b'{"text": "doc %d"}\n' % i for i in range(40)]
    body[10] = b"\n"  # a blank line
    body[20] = b'{"text": broken\n'
    body[25] = b'{"text": "' + b"x" * 700 + b'"}\n'  # a line longer than a block
    path.write_bytes(b"".join(body) + b'{"text": "no final newline"}')
    file = discover(str(path))[0]
    parts = plan_parts([file], blocksize=200)
    assert len(parts) > 3 and [p.name for p in parts[:2]] == ["big.part0000", "big.part0001"]
    assert parts[0].start == 0 and parts[-1].end == file.size
    data = path.read_bytes()
    for before, after in itertools.pairwise(parts):
        assert before.end == after.start and data[after.start - 1 : after.start] == b"\n"
    assert all(p.end > p.start for p in parts)  # the long line made no empty part
    whole, split = read_file(file, "text", "id"), _read_parts(parts)
    columns = ["id", "text", LINE_COLUMN, ERROR_COLUMN, RAW_COLUMN]
    pd.testing.assert_frame_equal(split[columns], whole[columns])
    assert split["id"].iloc[-1] == "big:41" and split[ERROR_COLUMN].notna().sum() == 1
    assert sum(count_lines(p) for p in parts) == 41


def test_parquet_splits_by_row_groups_with_file_row_numbers(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    table = pa.table({"text": [f"doc {i}" for i in range(100)], "n": list(range(100))})
    pq.write_table(table, path, row_group_size=10)
    file = discover(str(path))[0]
    parts = plan_parts([file], blocksize=600)  # about 3 row groups of ~270 compressed bytes each
    assert len(parts) == 4 and [g for p in parts for g in p.row_groups] == list(range(10))
    split = _read_parts(parts)
    assert split["id"].tolist() == [f"rows:{i}" for i in range(100)] and split["n"].tolist() == list(
        range(100)
    )
    assert [p.index for p in plan_parts([file], blocksize=None)] == [None]


def test_small_files_are_grouped_under_both_limits(tmp_path: Path) -> None:
    for name in "abcde":
        write_jsonl(tmp_path / f"{name}.jsonl", [{"text": "x" * 40}])
    write_jsonl(tmp_path / "f.jsonl", [{"text": f"doc {i}"} for i in range(40)])  # large: split
    parts = plan_parts(discover(str(tmp_path)), blocksize=200)
    groups = group_parts(parts, files_per_partition=3, blocksize=200)
    names = [[p.name for p in g] for g in groups]
    assert names[:2] == [["a", "b", "c"], ["d", "e"]] and all(len(n) == 1 for n in names[2:])
    assert [[p.name for p in g] for g in group_parts(parts[:5], 10, blocksize=120)] == [
        ["a", "b"],
        ["c", "d"],
        ["e"],
    ]
    with pytest.raises(ValueError, match="files_per_partition"):
        group_parts(parts, 0, None)


def test_blocksize_parsing() -> None:
    assert parse_blocksize("128MiB") == 128 << 20 and parse_blocksize(1000) == 1000
    assert parse_blocksize(None) is None and parse_blocksize(0) is None
    with pytest.raises(ValueError, match="blocksize"):
        parse_blocksize("lots")
