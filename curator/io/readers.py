"""Read one input file, or one part of it, into a pandas partition; bad records are marked, never dropped.

Text that is not valid Unicode (undecodable bytes; lone surrogates written as JSON escapes) is marked
with the reason and its offset by default, its original bytes kept for the quarantine; with
`invalid_text="replace"` each bad code point becomes U+FFFD and the record is classified and counted.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from curator.columns import (
    ERROR_COLUMN,
    HIDDEN_PREFIX,
    LINE_COLUMN,
    LINES_ATTR,
    RAW_COLUMN,
    REPAIRED_ATTR,
    STAGE_COLUMN,
    escape,
)
from curator.errors import ConfigError
from curator.io.compressed import open_lines
from curator.io.files import InputFile
from curator.io.partitions import Part, as_part
from curator.io.paths import open_url

__all__ = ["HIDDEN_PREFIX", "LINES_ATTR", "LINE_COLUMN", "RAW_COLUMN", "read_file"]

INVALID_TEXT = ("quarantine", "replace")  # dataset.invalid_text
BOM = b"\xef\xbb\xbf"
BARE_CR_HINT = (
    " (records separated by a carriage return alone, as in old Mac text files: JSONL separates them with a"
    " newline; convert the file, e.g. tr '\\r' '\\n')"
)
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # what Windows tools (PowerShell's Out-File) start UTF-16 text with
UTF16_HINT = (
    " (the file starts with a UTF-16 byte-order mark: it is UTF-16 text, and JSONL is UTF-8; convert it, e.g."
    " iconv -f UTF-16 -t UTF-8)"
)
ARRAY_HINT = " (a JSON array: JSONL holds one object per line; convert the file, e.g. jq -c '.[]')"
DOCUMENT_HINT = (
    " (the file starts with a lone '[' or '{': one JSON document spread over lines, not JSON Lines, which"
    " holds one object per line; convert it, e.g. jq -c '.[]' for an array)"
)
JSON_WHITESPACE = b" \t\r\n"  # a line of only these is blank; any other byte makes a record
# Deeper records are quarantined: Parquet cannot hold about 50 nested lists (the file is written, then
# cannot be read), and encoding JSON recurses once per level
MAX_NESTING = 32
_SURROGATE = re.compile("[\ud800-\udfff]")
# A \\uD800-\\uDBFF escape not followed by a \\uDC00-\\uDFFF one, or the reverse: a lone surrogate
# (or an escaped backslash before such text: the walk over the parsed record decides).
_LONE_ESCAPE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_MISSING = object()


class _NonFinite(ValueError):
    """A JSON number that is not a finite float64 (1E400, NaN, Infinity): it cannot be written back."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(f"number {text} is out of the float64 range")
    return value


def _no_constant(text: str) -> float:
    raise _NonFinite(f"{text} is not a JSON number")


_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant)


def _surrogate_at(value: Any, path: str = "") -> tuple[str, int, str] | None:
    """(field path, code point offset, the surrogate) of the first lone surrogate in a parsed value."""
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        return (path or "(value)", found.start(), found.group()) if found else None
    if isinstance(value, dict):
        for key, item in value.items():
            field = f"{path}.{key}" if path else key
            hit = _surrogate_at(key, f"{field} (key)") or _surrogate_at(item, field)
            if hit:
                return hit
    if isinstance(value, list):
        for i, item in enumerate(value):
            hit = _surrogate_at(item, f"{path}[{i}]")
            if hit:
                return hit
    return None


def _replace_surrogates(value: Any) -> Any:
    """The value with every lone surrogate (in keys and strings, at any depth) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    return value


def parse_line(
    raw: bytes, invalid_text: str = "quarantine"
) -> tuple[dict[str, Any] | None, str | None, bool]:
    """A JSON object, or None and the reason it is not a usable record; and whether text was repaired."""
    repaired = False
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if invalid_text != "replace":
            return None, f"invalid UTF-8 at byte {err.start} of the line: {err.reason}", False
        line, repaired = raw.decode("utf-8", errors="replace"), True
    try:  # the float hook costs one call per float (cheaper than scanning every line for 1E400)
        record = _DECODER.decode(line)
    except json.JSONDecodeError as err:
        return None, f"invalid JSON: {err}{BARE_CR_HINT if _bare_cr(line, err) else ''}", repaired
    except _NonFinite as err:
        return None, f"unrepresentable number: {err}", repaired
    except RecursionError:
        return None, "invalid JSON: nested too deeply", repaired
    if not isinstance(record, dict):
        hint = ARRAY_HINT if isinstance(record, list) and any(isinstance(r, dict) for r in record) else ""
        return None, f"not a JSON object: {type(record).__name__}{hint}", repaired
    if line.count("[") + line.count("{") > MAX_NESTING and (depth := nesting(record)) > MAX_NESTING:
        return None, f"nested {depth} levels deep (at most {MAX_NESTING} can be written back)", repaired
    if ("\\ud" in line or "\\uD" in line) and _LONE_ESCAPE.search(line):
        hit = _surrogate_at(record)
        if hit and invalid_text == "replace":
            record, repaired = _replace_surrogates(record), True
        elif hit:
            field, offset, char = hit
            where = f"in field {field!r} at code point {offset}"
            return None, f"invalid Unicode: lone surrogate U+{ord(char):04X} {where}", repaired
    return record, None, repaired


def _bare_cr(line: str, err: json.JSONDecodeError) -> bool:
    """Whether a line failed because it holds several JSON values split by carriage returns alone."""
    return err.msg == "Extra data" and "\r" in line[: err.pos]


def nesting(value: Any) -> int:
    """How many lists and objects deep a parsed JSON value goes (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def text_problem(value: Any, text_field: str) -> str | None:
    """Why a text value cannot be classified, or None when it can."""
    if value is _MISSING:
        return f"missing text field {text_field!r}"
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return f"text field {text_field!r} is null"
    if not isinstance(value, str):
        return f"text field {text_field!r} is {type(value).__name__}, not a string"
    return None


def read_jsonl(
    spec: InputFile | Part,
    text_field: str | None,
    limit: int | None = None,
    first_line: int = 1,
    invalid_text: str = "quarantine",
) -> pd.DataFrame:
    """Every line of a JSONL file or byte range (plain or compressed) as a row; values keep their JSON types.

    `first_line` is the file line number of the range's first line (1 for a whole file). Bad lines keep
    their raw text (or, when it is not UTF-8, their bytes) for the quarantine.
    """
    part = as_part(spec)
    records: list[dict[str, Any]] = []
    errors: list[str | None] = []
    raws: list[str | bytes | None] = []
    lines: list[int] = []
    spanned = repaired = 0
    utf16 = False  # the file starts with a UTF-16 byte-order mark: every bad line's reason says so
    document = False  # the file starts with a lone [ or {: one JSON document over lines, and reasons say so
    with open_lines(part) as handle:
        position = part.start
        if position:
            handle.seek(position)
        for number, raw in enumerate(handle, start=first_line):
            if limit is not None and len(records) >= limit:
                break
            if part.end is not None and position >= part.end:  # the next part's first line
                break
            at_start = position == 0
            position += len(raw)
            spanned += 1
            if at_start and raw.startswith(BOM):  # a byte-order mark opens the file, not the record
                raw = raw[len(BOM) :]
            utf16 = utf16 or (at_start and raw.startswith(UTF16_BOMS))
            document = document or (at_start and raw.strip(JSON_WHITESPACE) in (b"[", b"{"))
            if not raw.strip(JSON_WHITESPACE):  # not bytes.strip(): it takes \v and \f, which JSON does not
                continue
            line = raw.rstrip(b"\r\n")
            record, problem, fixed = parse_line(line, invalid_text)
            if record is None and (utf16 or document):
                problem = f"{problem}{UTF16_HINT if utf16 else DOCUMENT_HINT}"
            repaired += fixed and record is not None
            if record is not None and text_field is not None:
                problem = text_problem(record.get(text_field, _MISSING), text_field)
            if record is not None and HIDDEN_PREFIX.encode() in line:  # rename input `_curator_*` keys
                record = {escape(k): v for k, v in record.items()}
            records.append(record if record is not None else {})
            errors.append(problem)
            raws.append(None if record is not None else _raw_text(line))
            lines.append(number)
    frame = _finish(object_frame(records), errors, raws, lines)
    frame.attrs[LINES_ATTR] = spanned
    frame.attrs[REPAIRED_ATTR] = repaired
    return frame


def _raw_text(line: bytes) -> str | bytes:
    """A bad line as text when it is UTF-8 (kept exactly), else its bytes (written base64-encoded)."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line


def object_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Columns of Python objects exactly as parsed (no int→float promotion, no string dtype inference)."""
    columns = dict.fromkeys(key for record in records for key in record)
    data = {}
    for column in columns:
        values = np.empty(len(records), dtype=object)
        for i, record in enumerate(records):  # item by item: list values must not broadcast
            values[i] = record.get(column)
        data[column] = values
    return pd.DataFrame(data, index=pd.RangeIndex(len(records)), dtype=object)


def read_parquet(
    spec: InputFile | Part,
    text_field: str | None,
    limit: int | None = None,
    invalid_text: str = "quarantine",
    text_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """A Parquet file (or some of its row groups) as a partition; columns keep their Arrow types exactly."""
    part = as_part(spec)
    with open_url(part.path, "rb", part.file.storage_options) as handle:
        parquet = pq.ParquetFile(handle)
        if (why := repeated_columns(parquet.schema_arrow.names, part.path)) is not None:
            raise ValueError(why)  # Arrow's own error names neither the file nor the cause
        if part.row_groups is not None and limit is None:
            table = parquet.read_row_groups(list(part.row_groups))
        elif limit is None:
            table = pq.read_table(handle)
        else:  # only the first rows: for meta and start-up checks on files of any size
            batch = next(parquet.iter_batches(batch_size=limit), None)
            table = (
                pa.Table.from_batches([batch]) if batch is not None else parquet.schema_arrow.empty_table()
            )
    return _table_frame(table, part, text_field, invalid_text, text_columns)


ARROW_FILE_MAGIC = b"ARROW1"  # the Arrow IPC file format starts with it; the streaming format does not


def open_arrow(handle: Any) -> pa.ipc.RecordBatchStreamReader | pa.ipc.RecordBatchFileReader:
    """A reader for an Arrow IPC file in either format: streaming (what `datasets` writes) or file."""
    magic = handle.read(len(ARROW_FILE_MAGIC))
    handle.seek(0)
    return pa.ipc.open_file(handle) if magic == ARROW_FILE_MAGIC else pa.ipc.open_stream(handle)


def read_arrow(
    spec: InputFile | Part,
    text_field: str | None,
    limit: int | None = None,
    invalid_text: str = "quarantine",
    text_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """An Arrow IPC file (a `datasets.save_to_disk` data-*.arrow file, a .feather file) as a partition,
    exactly as Parquet: Arrow types kept, rows numbered from 0, bad text marked."""
    part = as_part(spec)
    with open_url(part.path, "rb", part.file.storage_options) as handle:
        reader = open_arrow(handle)
        if (why := repeated_columns(reader.schema.names, part.path)) is not None:
            raise ValueError(why)  # checked before reading, as for Parquet
        if isinstance(reader, pa.ipc.RecordBatchFileReader):
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            batches = iter(reader)
        kept, rows = [], 0
        for batch in batches:
            if limit is not None and rows >= limit:
                break
            kept.append(batch)
            rows += batch.num_rows
        table = pa.Table.from_batches(kept, schema=reader.schema)
    if limit is not None:
        table = table.slice(0, limit)
    return _table_frame(table.replace_schema_metadata(None), part, text_field, invalid_text, text_columns)


def repeated_columns(names: Sequence[str], path: str) -> str | None:
    """Why a file whose columns repeat a name cannot be read as records (None when every name is unique)."""
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)  # linear: files may be wide
    if not repeated:
        return None
    return (
        f"{path} has more than one column named {', '.join(map(repr, repeated))}: a record cannot hold two "
        "fields of one name; rename them (pyarrow: table.rename_columns) or leave the file out"
    )


def _table_frame(
    table: pa.Table, part: Part, text_field: str | None, invalid_text: str, text_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """An Arrow table as a partition: names escaped, text stored as bytes decoded, bad text marked, file
    row numbers as lines."""
    table = table.rename_columns([escape(c) for c in table.column_names])
    table = _without_views(table)
    table = _binary_as_text(table, {escape(c) for c in (text_field, *text_columns) if c is not None})
    table, errors, raws, repaired = _check_utf8(table, invalid_text)
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)  # exact round trip: maps, decimals, int8 with nulls
    if text_field is not None:
        values = frame[text_field].tolist() if text_field in frame.columns else [_MISSING] * len(frame)
        errors = [e or text_problem(v, text_field) for e, v in zip(errors, values, strict=True)]
    rows = range(part.first_row, part.first_row + len(frame))
    frame = _finish(frame, errors, raws, list(rows))
    frame.attrs[REPAIRED_ATTR] = repaired
    return frame


def _check_utf8(table: pa.Table, invalid_text: str) -> tuple[pa.Table, list, list, int]:
    """String columns holding invalid UTF-8: rows marked (original bytes kept) or repaired with U+FFFD."""
    errors: list[str | None] = [None] * table.num_rows
    raws: list[dict[str, bytes] | None] = [None] * table.num_rows
    repaired: set[int] = set()
    for index, name in enumerate(table.column_names):
        column = table.column(index)
        try:
            column.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        if pa.types.is_dictionary(column.type) and is_text(column.type.value_type):
            column = column.cast(column.type.value_type)  # decoded: each row's own value is checked below
        if not is_text(column.type):  # inside lists, structs, maps: the row's value is left out
            column, bad = _without_invalid_rows(column)
            for row in bad:
                errors[row] = errors[row] or f"invalid UTF-8 inside field {name!r} (a {column.type} value)"
            table = table.set_column(index, table.field(index).with_type(column.type), column)
            continue
        binary = pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
        values = column.combine_chunks().view(binary).to_pylist()
        fixed = []
        for row, value in enumerate(values):
            try:
                fixed.append(None if value is None else value.decode("utf-8"))
            except UnicodeDecodeError as err:
                fixed.append(value.decode("utf-8", errors="replace"))
                if invalid_text == "replace":
                    repaired.add(row)
                    continue
                if errors[row] is None:
                    errors[row] = f"invalid UTF-8 in field {name!r} at byte {err.start}: {err.reason}"
                raws[row] = {**(raws[row] or {}), name: value}
        table = table.set_column(
            index, table.field(index).with_type(column.type), pa.array(fixed, column.type)
        )
    return table, errors, raws, len(repaired)


def is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


# view types (what polars writes) as the types pandas can hold
VIEWS = {pa.string_view(): pa.large_string(), pa.binary_view(): pa.large_binary()}


def _without_views(table: pa.Table) -> pa.Table:
    """string_view and binary_view columns as large_string and large_binary: pandas holds no view type."""
    for index, field in enumerate(table.schema):
        if (kind := VIEWS.get(field.type)) is not None:
            table = table.set_column(index, field.with_type(kind), table.column(index).cast(kind))
    return table


# a text column Parquet stores as BINARY without the UTF8 annotation (Spark's `binaryAsString` case;
# older Hive and Impala tables): the same bytes viewed as text
BINARY_TEXT = {pa.binary(): pa.string(), pa.large_binary(): pa.large_string()}


def _binary_as_text(table: pa.Table, names: set[str]) -> pa.Table:
    """The columns in `names` (the classifiers' text fields) that hold bytes, as strings: a view, not a
    copy; `_check_utf8` then marks (or repairs) the rows that are not UTF-8. Other binary columns stay."""
    for index, field in enumerate(table.schema):
        if field.name in names and (kind := BINARY_TEXT.get(field.type)) is not None:
            column = pa.chunked_array([chunk.view(kind) for chunk in table.column(index).chunks], type=kind)
            table = table.set_column(index, field.with_type(kind), column)
    return table


def _without_invalid_rows(column: pa.ChunkedArray) -> tuple[pa.Array, list[int]]:
    """A nested column with the rows whose values hold invalid UTF-8 made null, and those rows."""
    values = column.combine_chunks()
    bad = set()
    for row in range(len(values)):
        try:  # take, not slice: a slice of a list still holds (and validates) every row's items
            values.take([row]).validate(full=True)
        except pa.ArrowInvalid:
            bad.add(row)
    pieces = [pa.nulls(1, values.type) if row in bad else values.slice(row, 1) for row in range(len(values))]
    return (pa.concat_arrays(pieces) if pieces else values), sorted(bad)


def _finish(frame: pd.DataFrame, errors: list, raws: list, lines: list) -> pd.DataFrame:
    frame[ERROR_COLUMN] = pd.Series(errors, index=frame.index, dtype=object)
    frame[STAGE_COLUMN] = pd.Series(["read" if e else None for e in errors], index=frame.index, dtype=object)
    frame[RAW_COLUMN] = pd.Series(raws, index=frame.index, dtype=object)
    frame[LINE_COLUMN] = np.asarray(lines, dtype=np.int64)
    return frame


def read_file(
    spec: InputFile | Part,
    text_field: str | None,
    id_field: str | None,
    limit: int | None = None,
    first_line: int = 1,
    invalid_text: str = "quarantine",
    text_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """One input file or part as a partition, with a stable id on every row (the input's, else `name:line`).

    Ids and line numbers are the whole file's, so they do not depend on how a file is split. With
    `id_field` None no ids are made (the columns are the file's own). `text_field` and `text_columns`
    (other classifiers' text fields) stored as bytes in Parquet or Arrow are read as UTF-8 text.
    """
    if invalid_text not in INVALID_TEXT:
        raise ConfigError(f"dataset.invalid_text={invalid_text!r}: choose one of {', '.join(INVALID_TEXT)}.")
    part = as_part(spec)
    if part.format == "jsonl":
        frame = read_jsonl(part, text_field, limit, first_line, invalid_text)
    elif part.format == "arrow":
        frame = read_arrow(part, text_field, limit, invalid_text, text_columns)
    else:
        frame = read_parquet(part, text_field, limit, invalid_text, text_columns)
    return frame if id_field is None else fill_ids(frame, part.file.stem, escape(id_field))


def fill_ids(frame: pd.DataFrame, stem: str, id_field: str) -> pd.DataFrame:
    """Give every row an id: the input's where it has one, else `<file name>:<line or row>`."""
    made = pd.Series([f"{stem}:{n}" for n in frame[LINE_COLUMN].tolist()], index=frame.index, dtype=object)
    if id_field not in frame.columns:
        frame.insert(0, id_field, made)
        return frame
    ids = frame[id_field]
    if isinstance(ids.dtype, pd.ArrowDtype) and not pa.types.is_string(ids.dtype.pyarrow_dtype):
        return frame  # typed ids (Parquet int64, ...): a null stays null rather than become a string
    missing = ids.isna().to_numpy()
    if missing.any():  # records without an id (absent or null) among records that have one
        values = ids.astype(object).to_numpy(copy=True)
        values[missing] = made.to_numpy()[missing]
        frame[id_field] = pd.Series(values, index=frame.index, dtype=object)
    return frame


def mark_bad_text(frame: pd.DataFrame, text_field: str) -> pd.DataFrame:
    """Mark rows whose text cannot be classified (missing, null, not a string), keeping earlier reasons."""
    values = frame[text_field].tolist() if text_field in frame.columns else [_MISSING] * len(frame)
    problems = [text_problem(v, text_field) for v in values]
    frame = frame.copy()
    earlier = frame[ERROR_COLUMN].tolist() if ERROR_COLUMN in frame.columns else [None] * len(frame)
    merged = [e if e is not None else p for e, p in zip(earlier, problems, strict=True)]
    frame[ERROR_COLUMN] = pd.Series(merged, index=frame.index, dtype=object)
    stages = frame[STAGE_COLUMN].tolist() if STAGE_COLUMN in frame.columns else [None] * len(frame)
    stages = [s or ("read" if m else None) for s, m in zip(stages, merged, strict=True)]
    frame[STAGE_COLUMN] = pd.Series(stages, index=frame.index, dtype=object)
    for column, default in ((RAW_COLUMN, None), (LINE_COLUMN, 0)):
        if column not in frame.columns:
            frame[column] = default
    return frame
