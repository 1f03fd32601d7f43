"""Read one input file, or one part of it, into a pandas partition; bad records are marked, never dropped."""

from __future__ import annotations

import io
import json
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from curator.classifiers.base import ERROR_COLUMN
from curator.io.files import InputFile
from curator.io.partitions import Part, as_part

RAW_COLUMN = "_curator_raw"  # the raw line of a record that could not be parsed
LINE_COLUMN = "_curator_line"  # 1-based JSONL line or 0-based Parquet row, for ids and quarantine
HIDDEN_PREFIX = "_curator_"
LINES_ATTR = "curator_lines"  # DataFrame.attrs: physical lines a JSONL part spans (recorded for resume)


def _parse_line(raw: bytes, text_field: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """A JSON object and None, or None and the reason it is not a usable record."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return None, f"invalid UTF-8: {err}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return None, f"invalid JSON: {err}"
    if not isinstance(record, dict):
        return None, f"not a JSON object: {type(record).__name__}"
    if text_field is None:  # Python API: the text is checked when a classifier runs
        return record, None
    return record, _text_problem(record.get(text_field, _MISSING), text_field)


_MISSING = object()


def _text_problem(value: Any, text_field: str) -> str | None:
    """Why a text value cannot be classified, or None when it can."""
    if value is _MISSING:
        return f"missing text field {text_field!r}"
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return f"text field {text_field!r} is null"
    if not isinstance(value, str):
        return f"text field {text_field!r} is {type(value).__name__}, not a string"
    return None


def read_jsonl(
    spec: InputFile | Part, text_field: str | None, limit: int | None = None, first_line: int = 1
) -> pd.DataFrame:
    """Every line of a JSONL file or byte range (plain or compressed) as a row; values keep their JSON types.

    `first_line` is the file line number of the range's first line (1 for a whole file).
    """
    part = as_part(spec)
    records: list[dict[str, Any]] = []
    errors: list[str | None] = []
    raws: list[str | None] = []
    lines: list[int] = []
    spanned = 0
    with fsspec.open(part.path, "rb", compression="infer") as opened:
        # zstandard's reader has no readline: a buffer gives every decompressor line iteration
        handle = io.BufferedReader(opened) if part.file.compressed else opened
        position = part.start
        if position:
            handle.seek(position)
        for number, raw in enumerate(handle, start=first_line):
            if limit is not None and len(records) >= limit:
                break
            if part.end is not None and position >= part.end:  # the next part's first line
                break
            position += len(raw)
            spanned += 1
            if not raw.strip():
                continue
            record, problem = _parse_line(raw.rstrip(b"\r\n"), text_field)
            records.append(record or {})
            errors.append(problem)
            raws.append(raw.decode("utf-8", errors="replace").rstrip("\r\n") if record is None else None)
            lines.append(number)
    frame = _finish(_object_frame(records), errors, raws, lines)
    frame.attrs[LINES_ATTR] = spanned
    return frame


def _object_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Columns of Python objects exactly as parsed (no int→float promotion for missing values)."""
    columns = dict.fromkeys(key for record in records for key in record)
    data = {}
    for column in columns:
        values = np.empty(len(records), dtype=object)
        for i, record in enumerate(records):  # item by item: list values must not broadcast
            values[i] = record.get(column)
        data[column] = values
    return pd.DataFrame(data, index=pd.RangeIndex(len(records)))


def read_parquet(spec: InputFile | Part, text_field: str | None, limit: int | None = None) -> pd.DataFrame:
    """A Parquet file (or some of its row groups) as a partition; rows whose text is not a string are bad."""
    part = as_part(spec)
    with fsspec.open(part.path, "rb") as handle:
        if part.row_groups is not None and limit is None:
            table = pq.ParquetFile(handle).read_row_groups(list(part.row_groups))
        elif limit is None:
            table = pq.read_table(handle)
        else:  # only the first rows: for meta and start-up checks on files of any size
            parquet = pq.ParquetFile(handle)
            batch = next(parquet.iter_batches(batch_size=limit), None)
            table = (
                pa.Table.from_batches([batch]) if batch is not None else parquet.schema_arrow.empty_table()
            )
    frame = table.to_pandas()
    if text_field is None:
        errors = [None] * len(frame)
    elif text_field in frame.columns:
        errors = [_text_problem(v, text_field) for v in frame[text_field].tolist()]
    else:
        errors = [f"missing text field {text_field!r}"] * len(frame)
    rows = range(part.first_row, part.first_row + len(frame))
    return _finish(frame, errors, [None] * len(frame), list(rows))


def _finish(frame: pd.DataFrame, errors: list, raws: list, lines: list) -> pd.DataFrame:
    frame[ERROR_COLUMN] = pd.Series(errors, index=frame.index, dtype=object)
    frame[RAW_COLUMN] = pd.Series(raws, index=frame.index, dtype=object)
    frame[LINE_COLUMN] = np.asarray(lines, dtype=np.int64)
    return frame


def read_file(
    spec: InputFile | Part,
    text_field: str | None,
    id_field: str,
    limit: int | None = None,
    first_line: int = 1,
) -> pd.DataFrame:
    """One input file or part as a partition, with a stable id column (the input's, else `name:line`).

    Ids and line numbers are the whole file's, so they do not depend on how a file is split.
    """
    part = as_part(spec)
    if part.format == "jsonl":
        frame = read_jsonl(part, text_field, limit, first_line)
    else:
        frame = read_parquet(part, text_field, limit)
    if id_field not in frame.columns:
        ids = [f"{part.file.stem}:{n}" for n in frame[LINE_COLUMN].tolist()]
        frame.insert(0, id_field, pd.Series(ids, index=frame.index, dtype=object))
    return frame


def mark_bad_text(frame: pd.DataFrame, text_field: str) -> pd.DataFrame:
    """Mark rows whose text cannot be classified (missing, null, not a string), keeping earlier reasons."""
    values = frame[text_field].tolist() if text_field in frame.columns else [_MISSING] * len(frame)
    problems = [_text_problem(v, text_field) for v in values]
    frame = frame.copy()
    earlier = frame[ERROR_COLUMN].tolist() if ERROR_COLUMN in frame.columns else [None] * len(frame)
    merged = [e if e is not None else p for e, p in zip(earlier, problems, strict=True)]
    frame[ERROR_COLUMN] = pd.Series(merged, index=frame.index, dtype=object)
    for column, default in ((RAW_COLUMN, None), (LINE_COLUMN, 0)):
        if column not in frame.columns:
            frame[column] = default
    return frame
