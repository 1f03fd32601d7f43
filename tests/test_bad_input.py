"""Nothing lost on messy input: every record is written, filtered or quarantined with its stage and reason.

Each test is a case an adversarial user met (issue "Nothing lost, part 1"); the classifier is the real
zero-shot default on the embedded all-MiniLM-L6-v2.
"""

from __future__ import annotations

import base64
import decimal
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from curator import pipeline
from curator.classifiers.registry import build_classifiers
from curator.classifiers.zero_shot import ZeroShotClassifier
from curator.errors import ConfigError
from curator.filters import build_filter
from curator.io.files import discover
from curator.io.partitions import Part
from curator.io.writers import OutputTarget
from curator.stages import Work, process
from tests.conftest import DOCS, write_jsonl

TEXTS = [text for _, text in DOCS]


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def quarantine(out: Path, name: str) -> list[dict]:
    return read_lines(out / "_quarantine" / f"{name}.jsonl")


def adds_up(summary: dict) -> None:
    """read = written + filtered + quarantined, for the run and for every unit."""
    for counts in [summary, *summary["per_file"]]:
        assert counts["read"] == counts["written"] + counts["filtered"] + counts["quarantined"], counts


# ---- invalid Unicode ---------------------------------------------------------------------------
SURROGATE_LINES = [
    f'{{"id": "a", "text": "{TEXTS[0]}"}}',
    '{"id": "b", "text": "x \\ud800 y"}',  # valid JSON, a lone surrogate in the text
    f'{{"id": "c", "text": "{TEXTS[1]}", "title": "\\udfff"}}',  # ... in another field
    '{"id": "d", "text": "a real pair \\ud83d\\ude00 is fine"}',
]


def test_a_lone_surrogate_quarantines_its_record_not_the_file(make_config, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    # first in sort order, so the start-up checks read it first; three clean files share its task
    (folder / "a.jsonl").write_text("\n".join(SURROGATE_LINES) + "\n", encoding="utf-8")
    for i in range(3):
        write_jsonl(folder / f"clean{i}.jsonl", [{"text": TEXTS[2 + i]}])
    summary = pipeline.run(make_config(f"dataset.path={folder}", "dataset.files_per_partition=4"))
    out = tmp_path / "out"
    assert [r["id"] for r in read_lines(out / "a.jsonl")] == ["a", "d"]
    assert read_lines(out / "a.jsonl")[1]["text"] == "a real pair \U0001f600 is fine"
    assert all(len(read_lines(out / f"clean{i}.jsonl")) == 1 for i in range(3))
    bad = quarantine(out, "a")
    assert [q["line"] for q in bad] == [2, 3] and {q["stage"] for q in bad} == {"read"}
    assert "lone surrogate U+D800 in field 'text' at code point 2" in bad[0]["reason"]
    assert "U+DFFF in field 'title'" in bad[1]["reason"]
    assert [q["raw"] for q in bad] == SURROGATE_LINES[1:3]  # the line exactly as it was
    assert (summary["read"], summary["quarantined"], summary["quarantined_by_stage"]) == (7, 2, {"read": 2})
    adds_up(summary)


def test_invalid_text_replace_classifies_repaired_text_and_counts_it(make_config, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    lines = [
        SURROGATE_LINES[1].encode(),
        b'{"id": "e", "text": "bad \xff byte"}',
        SURROGATE_LINES[0].encode(),
    ]
    (folder / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    summary = pipeline.run(make_config(f"dataset.path={folder}", "dataset.invalid_text=replace"))
    written = read_lines(tmp_path / "out" / "a.jsonl")
    assert [r["text"] for r in written[:2]] == ["x \ufffd y", "bad \ufffd byte"]
    assert all(r["domain_pred"] for r in written)
    assert (summary["written"], summary["quarantined"], summary["repaired"]) == (3, 0, 2)


def test_undecodable_lines_keep_their_original_bytes(make_config, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    bad_line = b'{"id": "e", "text": "caf\xe9 latin-1"}'
    (folder / "a.jsonl").write_bytes(f'{{"text": "{TEXTS[0]}"}}\n'.encode() + bad_line + b"\n")
    pipeline.run(make_config(f"dataset.path={folder}"))
    [entry] = quarantine(tmp_path / "out", "a")
    at = bad_line.index(b"\xe9")
    assert entry["reason"].startswith(f"invalid UTF-8 at byte {at} of the line") and "raw" not in entry
    assert base64.b64decode(entry["raw_base64"]) == bad_line


def test_a_line_of_vertical_tabs_or_form_feeds_is_a_record_not_a_blank_line(
    make_config, tmp_path: Path
) -> None:
    """Only space, tab, CR and LF are JSON whitespace: a line holding \v or \f was skipped as blank and
    counted nowhere."""
    folder = tmp_path / "in"
    folder.mkdir()
    lines = [f'{{"text": "{TEXTS[0]}"}}', "\x0b", "  \t ", "\x0c\x0c", f'{{"text": "{TEXTS[1]}"}}', ""]
    (folder / "a.jsonl").write_text("\r\n".join(lines), encoding="utf-8")
    summary = pipeline.run(make_config(f"dataset.path={folder}"))
    adds_up(summary)
    assert (summary["read"], summary["written"], summary["quarantined"]) == (4, 2, 2)
    entries = quarantine(tmp_path / "out", "a")
    assert [(e["line"], e["raw"]) for e in entries] == [(2, "\x0b"), (4, "\x0c\x0c")]


def test_a_file_with_bare_cr_line_endings_says_so_at_start_up_and_in_its_quarantine_record(
    make_config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Records split by a carriage return alone (old Mac text) are one JSONL line: the start-up check said
    the text field was missing and listed no columns, and the quarantine said only "Extra data"."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "mac.jsonl").write_bytes(
        b"\r".join(json.dumps({"text": t}).encode() for t in TEXTS[:3]) + b"\r"
    )
    with pytest.raises(
        ConfigError, match=r"no record of .*mac\.jsonl is usable \(line 1: invalid JSON"
    ) as err:
        pipeline.run(make_config(f"dataset.path={folder}"))
    assert "carriage return alone" in str(err.value) and "Fix or remove that file" in str(err.value)
    assert "Set dataset.text_field" not in str(err.value)
    write_jsonl(folder / "ok.jsonl", [{"text": TEXTS[3]}])
    summary = pipeline.run(make_config(f"dataset.path={folder}"))
    adds_up(summary)
    assert (summary["read"], summary["written"], summary["quarantined"]) == (2, 1, 1)
    [entry] = quarantine(tmp_path / "out", "mac")
    assert (
        "carriage return alone" in entry["reason"] and entry["raw"].count("\r") == 2
    )  # the last one ends the line
    assert any("mac.jsonl is usable" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_a_valid_record_holding_a_bare_cr_as_whitespace_is_read(make_config, tmp_path: Path) -> None:
    """A carriage return is JSON whitespace: inside one record it is no line break and no problem."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(b'{"id": "x",\r"text": ' + json.dumps(TEXTS[0]).encode() + b"}\n")
    summary = pipeline.run(make_config(f"dataset.path={folder}"))
    assert (summary["read"], summary["written"], summary["quarantined"]) == (1, 1, 0)


def test_a_parquet_file_with_a_repeated_column_name_fails_with_the_file_and_the_name(
    make_config, tmp_path: Path
) -> None:
    """Two columns named `text`: Arrow's "Multiple matches for FieldRef.Name(text)" with a schema dump,
    and at start-up "text field not found, none could be read"; which `text` a record holds is undefined."""
    folder = tmp_path / "in"
    folder.mkdir()
    twice = pa.table(
        [pa.array(["a"]), pa.array([TEXTS[0]]), pa.array([TEXTS[1]])], names=["id", "text", "text"]
    )
    pq.write_table(twice, folder / "twice.parquet")
    jsonl = ("dataset.format=parquet", f"dataset.path={folder}", "output.format=jsonl")
    with pytest.raises(
        ConfigError, match=r"none could be read \(.*twice\.parquet: .*more than one column named 'text'"
    ):
        pipeline.run(make_config(*jsonl))
    pq.write_table(pa.table({"id": ["b"], "text": [TEXTS[2]]}), folder / "fine.parquet")
    with pytest.raises(
        pipeline.RunFailedError, match=r"1 of 2 unit\(s\) failed: .*twice\.parquet .*named 'text'"
    ):
        pipeline.run(make_config(*jsonl))
    assert read_lines(tmp_path / "out" / "fine.jsonl")[0]["id"] == "b"  # the other file is classified
    with pytest.raises(ConfigError, match=r"twice\.parquet has more than one column named 'text'"):
        pipeline.run(make_config(*jsonl[:2], "output.format=parquet", f"output.path={tmp_path / 'pq'}"))
    assert not (tmp_path / "pq").exists()  # refused before any work: no run schema can hold the file


def test_a_utf16_file_says_so_at_start_up_and_in_every_quarantine_record(make_config, tmp_path: Path) -> None:
    """PowerShell's Out-File writes UTF-16 with a byte-order mark: each line was "invalid UTF-8 at byte 0"."""
    folder = tmp_path / "in"
    folder.mkdir()
    lines = "".join(json.dumps({"text": t}) + "\n" for t in TEXTS[:2])
    (folder / "win.jsonl").write_text(lines, encoding="utf-16")
    with pytest.raises(ConfigError, match=r"no record of .*win\.jsonl is usable .*UTF-16 byte-order mark"):
        pipeline.run(make_config(f"dataset.path={folder}"))
    write_jsonl(folder / "ok.jsonl", [{"text": TEXTS[2]}])
    summary = pipeline.run(make_config(f"dataset.path={folder}"))
    adds_up(summary)
    entries = quarantine(tmp_path / "out", "win")
    assert len(entries) == summary["quarantined"] >= 2 and all("UTF-16" in e["reason"] for e in entries)


def test_files_of_blank_lines_only_are_a_run_of_nothing_not_a_missing_text_field(
    make_config, tmp_path: Path
) -> None:
    """A dataset whose files hold no record stopped with "text field not found, columns found: []"; beside
    a file of other columns, the message named the blank file's empty columns."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jsonl").write_text("\n  \n", encoding="utf-8")
    (folder / "b.jsonl").write_text("", encoding="utf-8")
    summary = pipeline.run(make_config(f"dataset.path={folder}"))
    assert (summary["read"], summary["written"], summary["quarantined"]) == (0, 0, 0)
    write_jsonl(folder / "c.jsonl", [{"body": TEXTS[0]}])
    with pytest.raises(
        ConfigError, match=r"columns found in .*c\.jsonl: \['body'\]\. Set dataset\.text_field"
    ):
        pipeline.run(make_config(f"dataset.path={folder}", f"output.path={tmp_path / 'out2'}"))


@pytest.mark.parametrize("indent", [None, 2])
def test_a_json_document_saved_as_jsonl_says_so_in_its_reasons(make_config, tmp_path: Path, indent) -> None:
    """A JSON array of records in a .jsonl file (one line, or pretty-printed over many): the reasons were
    "not a JSON object: list" and "Expecting value", with no word of what the file is."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "doc.jsonl").write_text(json.dumps([{"text": t} for t in TEXTS[:2]], indent=indent) + "\n")
    hint = "a JSON array: JSONL holds one object per line" if indent is None else "one JSON document spread"
    with pytest.raises(ConfigError, match=r"no record of .*doc\.jsonl is usable") as err:
        pipeline.run(make_config(f"dataset.path={folder}"))
    assert hint in str(err.value) and "jq -c" in str(err.value)
    write_jsonl(folder / "ok.jsonl", [{"text": TEXTS[2]}])
    summary = pipeline.run(make_config(f"dataset.path={folder}"))
    adds_up(summary)
    entries = quarantine(tmp_path / "out", "doc")
    assert len(entries) == summary["quarantined"] and all(hint in e["reason"] for e in entries)


def _nested(depth: int, kind: str) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_records_nested_too_deep_to_write_back_are_quarantined_and_the_rest_read_back(
    make_config, tmp_path: Path, fmt: str
) -> None:
    """60 nested lists made a Parquet file that was counted as written and could not be read (Parquet's
    nesting limit); 500 made JSONL encoding recurse past Python's limit and fail the whole unit."""
    folder = tmp_path / "in"
    folder.mkdir()
    records = [
        {"text": TEXTS[0], "meta": _nested(31, "list")},  # 32 levels with the record: kept
        {"text": TEXTS[1], "meta": _nested(60, "list")},
        {"text": TEXTS[2], "meta": _nested(40, "object")},
        {"text": TEXTS[3], "meta": _nested(500, "list")},
    ]
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    summary = pipeline.run(make_config(f"dataset.path={folder}", f"output.format={fmt}"))
    adds_up(summary)
    assert (summary["read"], summary["written"], summary["quarantined"]) == (4, 1, 3)
    out = tmp_path / "out" / f"a.{fmt}"
    back = pd.read_json(out, lines=True) if fmt == "jsonl" else pq.read_table(out).to_pandas()
    assert back["text"].tolist() == [TEXTS[0]]
    entries = quarantine(tmp_path / "out", "a")
    assert [e["line"] for e in entries] == [2, 3, 4] and all("levels deep" in e["reason"] for e in entries)
    assert [json.loads(e["raw"]) for e in entries] == records[1:]  # each line kept as read


def _parquet_with_bad_utf8(path: Path) -> None:
    text = pa.array([TEXTS[0].encode(), b"bad \xff text", TEXTS[1].encode()], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"text": text, "n": [1, 2, 3]}), path)


def test_parquet_text_with_invalid_utf8(make_config, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _parquet_with_bad_utf8(folder / "p.parquet")
    summary = pipeline.run(make_config(f"dataset.path={folder}", "dataset=parquet"))
    [entry] = quarantine(tmp_path / "out", "p")
    assert entry["line"] == 1 and "invalid UTF-8 in field 'text' at byte 4" in entry["reason"]
    assert base64.b64decode(entry["fields_base64"]["text"]) == b"bad \xff text"
    assert pq.read_table(tmp_path / "out" / "p.parquet").column("n").to_pylist() == [1, 3]
    adds_up(summary)
    fixed = make_config(
        f"dataset.path={folder}",
        "dataset=parquet",
        "dataset.invalid_text=replace",
        f"output.path={tmp_path / 'fixed'}",
    )
    repaired = pipeline.run(fixed)
    table = pq.read_table(tmp_path / "fixed" / "p.parquet")
    assert table.column("text").to_pylist()[1] == "bad \ufffd text" and repaired["repaired"] == 1


def _bad_bytes(*values: bytes) -> pa.Array:
    return pa.array(list(values), pa.binary()).view(pa.string())


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_invalid_utf8_in_dictionary_nested_and_view_columns_quarantines_rows_not_files(
    make_config, tmp_path: Path, fmt: str
) -> None:
    """Dictionary-encoded text, lists and structs of strings with one bad value failed their whole file
    (and a dictionary column beside a plain one stopped a Parquet run at start-up); string_view text
    (what polars writes) failed every row."""
    folder = tmp_path / "in"
    folder.mkdir()
    words = pa.DictionaryArray.from_arrays(
        pa.array([0, 1, 2], pa.int32()), _bad_bytes(b"ok 1", b"bad \xff", b"ok 3")
    )
    pq.write_table(pa.table({"text": words, "n": [1, 2, 3]}), folder / "dictionary.parquet")
    tags = pa.ListArray.from_arrays(pa.array([0, 1, 2, 3], pa.int32()), _bad_bytes(b"t1", b"\xfe", b"t3"))
    pq.write_table(pa.table({"text": TEXTS[:3], "n": [4, 5, 6], "tags": tags}), folder / "nested.parquet")
    view = pa.array(TEXTS[3:5], pa.string_view())
    pq.write_table(pa.table({"text": view, "n": [7, 8]}), folder / "view.parquet")
    pq.write_table(pa.table({"text": TEXTS[5:6], "n": [9]}), folder / "plain.parquet")
    summary = pipeline.run(make_config(f"dataset.path={folder}", "dataset=parquet", f"output.format={fmt}"))
    adds_up(summary)
    assert (summary["read"], summary["written"], summary["quarantined"]) == (9, 7, 2)
    out = tmp_path / "out"
    read = (
        (lambda f: pq.read_table(f).to_pandas())
        if fmt == "parquet"
        else (lambda f: pd.read_json(f, lines=True))
    )
    written = sorted(
        n for name in ("dictionary", "nested", "view", "plain") for n in read(out / f"{name}.{fmt}")["n"]
    )
    assert written == [1, 3, 4, 6, 7, 8, 9]
    [dictionary] = quarantine(out, "dictionary")
    assert dictionary["line"] == 1 and base64.b64decode(dictionary["fields_base64"]["text"]) == b"bad \xff"
    [nested] = quarantine(out, "nested")
    assert nested["line"] == 1 and "invalid UTF-8 inside field 'tags'" in nested["reason"]
    assert nested["record"]["n"] == 5  # the rest of the row is kept with the reason


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_text_stored_as_binary_is_read_as_utf8_and_bad_bytes_quarantine_their_row(
    make_config, tmp_path: Path, fmt: str
) -> None:
    """Writers that store strings as Parquet BINARY without the UTF8 annotation (Spark's
    `binaryAsString` case, older Hive and Impala tables) gave every row "text field is bytes, not a
    string": the text column is decoded as UTF-8, other binary columns stay bytes."""
    folder = tmp_path / "in"
    folder.mkdir()
    encoded = [TEXTS[0].encode(), b"bad \xff text", None, TEXTS[1].encode()]
    pq.write_table(
        pa.table({"text": pa.array(encoded, pa.binary()), "blob": [b"\x00\x01", b"", b"\xff", None]}),
        folder / "binary.parquet",
    )
    pq.write_table(pa.table({"text": pa.array(encoded[:1], pa.large_binary())}), folder / "large.parquet")
    pq.write_table(
        pa.table({"text": pa.array([TEXTS[2].encode()], pa.binary_view())}), folder / "view.parquet"
    )
    pq.write_table(pa.table({"text": TEXTS[3:4]}), folder / "plain.parquet")
    summary = pipeline.run(make_config(f"dataset.path={folder}", "dataset=parquet", f"output.format={fmt}"))
    adds_up(summary)
    assert (summary["read"], summary["written"], summary["quarantined"]) == (7, 5, 2)
    out = tmp_path / "out"
    bad, null = quarantine(out, "binary")
    assert bad["line"] == 1 and "invalid UTF-8 in field 'text' at byte 4" in bad["reason"]
    assert base64.b64decode(bad["fields_base64"]["text"]) == b"bad \xff text"
    assert null["line"] == 2 and "is null" in null["reason"]
    if fmt == "parquet":
        table = pq.read_table(out / "binary.parquet")
        assert pa.types.is_string(table.schema.field("text").type) or pa.types.is_large_string(
            table.schema.field("text").type
        )
        assert table.column("text").to_pylist() == [TEXTS[0], TEXTS[1]]
        assert table.column("domain_pred").null_count == 0  # classified, as text
        assert table.column("blob").to_pylist() == [b"\x00\x01", None]  # not text: still bytes
        assert pq.read_table(out / "view.parquet").column("text").to_pylist() == [TEXTS[2]]
    else:
        rows = read_lines(out / "binary.jsonl") + read_lines(out / "large.jsonl")
        assert [r["text"] for r in rows] == [TEXTS[0], TEXTS[1], TEXTS[0]]
    written = {Path(unit["input"]).stem: unit["written"] for unit in summary["per_file"]}
    assert written == {"binary": 2, "large": 1, "view": 1, "plain": 1}  # every kind of bytes classified


def test_a_classifiers_own_text_field_stored_as_binary_is_read_as_utf8(make_config, tmp_path: Path) -> None:
    """Also: with every classifier on its own text field, records without dataset.text_field ('text',
    absent here) were quarantined as "missing text field 'text'", though no classifier reads it."""
    folder = tmp_path / "in"
    folder.mkdir()
    body = pa.array([t.encode() for t in TEXTS[:3]], pa.binary())
    pq.write_table(pa.table({"title": ["a", "b", "c"], "body": body}), folder / "p.parquet")
    summary = pipeline.run(
        make_config(
            f"dataset.path={folder}", "dataset=parquet", "classifier.zero_shot_domain.text_field=body"
        )
    )
    assert (summary["written"], summary["quarantined"]) == (3, 0)
    assert pq.read_table(tmp_path / "out" / "p.parquet").column("body").to_pylist() == TEXTS[:3]


# ---- values the writer cannot hold ---------------------------------------------------------------
def test_parquet_types_round_trip_exactly(make_config, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    table = pa.table(
        {
            "text": TEXTS[:3],
            "tags": pa.array([[("a", 1)], [("b", 2)], None], pa.map_(pa.string(), pa.int64())),
            "price": pa.array([decimal.Decimal("1.50"), None, decimal.Decimal("2.00")], pa.decimal128(10, 2)),
            "small": pa.array([1, None, 3], pa.int8()),
            "big": pa.array([2**62 + 1, None, 5], pa.int64()),  # exact: never through float64
        }
    )
    pq.write_table(table, folder / "p.parquet")
    for fmt in ("parquet", "jsonl"):
        out = tmp_path / fmt
        summary = pipeline.run(
            make_config(
                f"dataset.path={folder}", "dataset=parquet", f"output.format={fmt}", f"output.path={out}"
            )
        )
        assert summary["written"] == 3
    written = pq.read_table(tmp_path / "parquet" / "p.parquet")
    assert written.select(table.column_names).equals(table)
    as_json = read_lines(tmp_path / "jsonl" / "p.jsonl")
    assert as_json[0]["tags"] == [["a", 1]] and as_json[0]["big"] == 2**62 + 1 and as_json[1]["small"] is None


def test_jsonl_to_parquet_values_of_several_kinds_become_json_text(make_config, tmp_path: Path) -> None:
    records = [
        {"id": "one", "text": TEXTS[0], "n": 1, "meta": {}, "big": 2**64 - 1},
        {"id": "str", "text": TEXTS[1], "n": "x", "meta": {}, "big": 1},
    ]
    write_jsonl(tmp_path / "in" / "a.jsonl", records)
    summary = pipeline.run(make_config(f"dataset.path={tmp_path / 'in'}", "output.format=parquet"))
    written = pq.read_table(tmp_path / "out" / "a.parquet")
    assert written.column("n").to_pylist() == ["1", '"x"']  # 1 and "x": JSON text, nothing lost
    assert written.column("meta").to_pylist() == ["{}", "{}"]  # Parquet cannot hold {}: JSON text
    assert written.column("big").type == pa.uint64() and written.column("big")[0].as_py() == 2**64 - 1
    assert summary["quarantined"] == 0


def test_a_value_past_the_schema_sample_that_does_not_fit_is_quarantined(make_config, tmp_path: Path) -> None:
    from curator.io.schema import SAMPLE_ROWS

    records = [{"text": f"document number {i}", "n": i} for i in range(SAMPLE_ROWS)]
    records += [
        {"text": TEXTS[0], "n": "late string"},
        {"text": TEXTS[1], "n": 2**64 - 1},
        {"text": TEXTS[2]},
    ]
    write_jsonl(tmp_path / "in" / "a.jsonl", records)
    summary = pipeline.run(make_config(f"dataset.path={tmp_path / 'in'}", "output.format=parquet"))
    written = pq.read_table(tmp_path / "out" / "a.parquet")
    assert written.schema.field("n").type == pa.int64() and written.num_rows == SAMPLE_ROWS + 1
    bad = quarantine(tmp_path / "out", "a")
    assert [(q["line"], q["stage"]) for q in bad] == [(SAMPLE_ROWS + 1, "write"), (SAMPLE_ROWS + 2, "write")]
    assert all("field 'n'" in q["reason"] and "int64" in q["reason"] for q in bad)
    assert bad[1]["record"]["n"] == 2**64 - 1 and summary["quarantined_by_stage"] == {"write": 2}
    adds_up(summary)


def test_one_parquet_schema_per_run_even_for_empty_files(make_config, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_jsonl(folder / "a.jsonl", [{"text": TEXTS[0], "n": 1, "d": 0.5, "s": "00123"}])
    write_jsonl(folder / "b.jsonl", [{"text": TEXTS[1], "n": None}])  # a column null everywhere here
    write_jsonl(folder / "c.jsonl", [{"text": None, "n": 3}])  # every record quarantined: an empty file
    summary = pipeline.run(make_config(f"dataset.path={folder}", "output.format=parquet"))
    out = tmp_path / "out"
    schemas = {name: pq.read_schema(out / f"{name}.parquet") for name in "abc"}
    assert schemas["a"] == schemas["b"] == schemas["c"]
    columns = ("id", "text", "n", "d", "s", "domain_pred", "domain_score")
    kinds = [pa.string(), pa.string(), pa.int64(), pa.float64(), pa.string(), pa.string(), pa.float32()]
    assert [schemas["a"].field(c).type for c in columns] == kinds
    dataset = ds.dataset(out, format="parquet")  # _quarantine/ and _summary.json are skipped
    assert dataset.to_table().num_rows == 2 == len(pd.read_parquet(out))
    assert pd.read_parquet(out)["s"].iloc[0] == "00123"  # strings stay strings
    adds_up(summary)


# ---- columns -----------------------------------------------------------------------------------
@pytest.mark.parametrize("override", ["pred_column=text", "score_column=id", "pred_column=gold"])
def test_an_output_column_may_not_overwrite_an_input_column(
    make_config, docs_dir: Path, tmp_path: Path, override: str
) -> None:
    with pytest.raises(ConfigError, match="would overwrite input column"):
        pipeline.run(make_config(f"dataset.path={docs_dir}", f"classifier.zero_shot_domain.{override}"))
    assert not (tmp_path / "out").exists()


def test_api_refuses_an_output_column_equal_to_an_input_column(make_config, docs_dir: Path) -> None:
    from curator.datasets import DocumentDataset

    cfg = make_config("classifier.zero_shot_domain.pred_column=text")
    [clf] = build_classifiers(cfg.classifier, "text", cfg.inference)
    dataset = DocumentDataset.read_json(str(docs_dir / "a.jsonl"), backend="pandas")
    with pytest.raises(ConfigError, match=r"overwrite input column\(s\) \['text'\]"):
        clf(dataset)


def test_ids_bom_working_column_names_and_numbers(make_config, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    lines = [
        f'\ufeff{{"id": "first", "text": "{TEXTS[0]}", "_curator_tag": "kept"}}',
        f'{{"text": "{TEXTS[1]}", "_curator_error": "mine"}}',  # no id here
        f'{{"id": "inf", "text": "{TEXTS[2]}", "x": 1E400}}',
        f'{{"id": "nan", "text": "{TEXTS[3]}", "x": NaN}}',
    ]
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = pipeline.run(make_config(f"dataset.path={folder}"))
    written = read_lines(tmp_path / "out" / "a.jsonl")
    assert [r["id"] for r in written] == ["first", "a:2"]
    assert written[0]["_curator_tag"] == "kept" and written[1]["_curator_error"] == "mine"
    bad = quarantine(tmp_path / "out", "a")
    assert [q["line"] for q in bad] == [3, 4]
    assert "1E400 is out of the float64 range" in bad[0]["reason"] and "NaN" in bad[1]["reason"]
    adds_up(summary)


# ---- poison rows at the classifier -------------------------------------------------------------
class BraceTemplate(ZeroShotClassifier):
    """A user's prompt template built with str.format: documents holding braces make it raise."""

    def format_text(self, text: str) -> str:
        return ("Document: " + text).format()


class BrokenTemplate(ZeroShotClassifier):
    def format_text(self, text: str) -> str:
        raise RuntimeError("template file missing")


def _work(make_config, out: Path, cls: type) -> Work:
    cfg = make_config()
    [clf] = build_classifiers(cfg.classifier, "text", cfg.inference)
    clf.__class__ = cls
    return Work((clf,), build_filter(cfg.filter, [clf]), OutputTarget(str(out)), "text", "id")


def test_rows_that_make_the_classifier_fail_are_quarantined(make_config, tmp_path: Path) -> None:
    code = ["int main() { return 0; }", "Use {name} to fill the template.", "dict(a={1: 2})"]
    records = [{"id": f"t{i}", "text": t} for i, t in enumerate(TEXTS)] + [
        {"id": f"c{i}", "text": t} for i, t in enumerate(code)
    ]
    path = write_jsonl(tmp_path / "in" / "mixed.jsonl", records)
    [stats] = process(
        [Part(discover(str(path))[0])], [1], _work(make_config, tmp_path / "out", BraceTemplate)
    )
    written = read_lines(tmp_path / "out" / "mixed.jsonl")
    assert [r["id"] for r in written] == [f"t{i}" for i in range(len(TEXTS))]
    bad = quarantine(tmp_path / "out", "mixed")
    assert [q["record"]["id"] for q in bad] == ["c0", "c1", "c2"] and {q["stage"] for q in bad} == {
        "classify"
    }
    assert "classifier 'zero_shot_domain'" in bad[1]["reason"] and "KeyError" in bad[1]["reason"]
    assert (stats["written"], stats["quarantined"]) == (len(TEXTS), 3)
    # the rows left are classified as they would be without the poison rows
    clean = write_jsonl(tmp_path / "clean" / "mixed.jsonl", records[: len(TEXTS)])
    process([Part(discover(str(clean))[0])], [1], _work(make_config, tmp_path / "ref", BraceTemplate))
    reference = read_lines(tmp_path / "ref" / "mixed.jsonl")
    assert [r["domain_pred"] for r in written] == [r["domain_pred"] for r in reference]
    assert np.allclose(
        [r["domain_score"] for r in written], [r["domain_score"] for r in reference], atol=1e-6
    )


def test_a_failure_not_tied_to_rows_still_fails_the_unit(make_config, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": t} for t in TEXTS])
    with pytest.raises(RuntimeError, match="template file missing"):
        process([Part(discover(str(path))[0])], [1], _work(make_config, tmp_path / "out", BrokenTemplate))
    assert not (tmp_path / "out" / "a.jsonl").exists()


def test_a_resumed_run_keeps_the_schema_of_its_first_files(make_config, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_jsonl(folder / "a.jsonl", [{"text": TEXTS[0], "n": 1}])
    write_jsonl(folder / "b.jsonl", [{"text": TEXTS[1], "n": 2}])
    cfg = make_config(f"dataset.path={folder}", "output.format=parquet")
    pipeline.run(cfg)
    out = tmp_path / "out"
    first = pq.read_schema(out / "a.parquet")
    write_jsonl(folder / "b.jsonl", [{"text": TEXTS[1], "n": 2.5, "z": "new"}, {"text": TEXTS[2], "n": 3}])
    summary = pipeline.run(cfg)  # a is skipped, the changed b is done again
    assert summary["units"] == {"skipped": 1, "done": 1}
    assert pq.read_schema(out / "b.parquet") == first == pq.read_schema(out / "a.parquet")
    assert pq.read_table(out / "b.parquet").column("n").to_pylist() == [3]
    assert [q["line"] for q in quarantine(out, "b")] == [1]  # 2.5 and "z" do not fit the first files' schema
    adds_up(summary)
