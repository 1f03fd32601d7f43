"""Finding inputs and reading them: values pass through unchanged, bad records are marked, not lost."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from curator.classifiers.base import ERROR_COLUMN
from curator.io.files import discover
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
