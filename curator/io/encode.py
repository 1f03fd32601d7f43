"""Rows → bytes for the writers: JSON lines and Arrow tables of the run's schema. A row that cannot be
encoded is reported by position with the reason (the writer quarantines it), never raised."""

from __future__ import annotations

import base64
import decimal
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from curator.columns import data_columns, unescape
from curator.io.schema import as_json_text, infer_field, is_json_text


def json_value(value: Any) -> Any:
    """A value as JSON can hold it: numpy and Arrow scalars, decimals, dates, bytes, nested containers."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value  # NaN from a Parquet input: null, as pandas writes it
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(str(value))  # float32's shortest text, not its double
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_value(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} cannot be written as JSON")


def data_names(frame: pd.DataFrame) -> list[Any]:
    return data_columns(frame.columns)


def _row_values(series: pd.Series) -> list[Any]:
    """A column's values one per row; float32 stays numpy so it is written by its own shortest text."""
    if series.dtype == np.float32:
        return list(series.to_numpy())
    return series.tolist()


def encode_jsonl(frame: pd.DataFrame) -> tuple[list[bytes], dict[int, str]]:
    """Each row as one JSON line; rows that cannot be written, with the reason, by position."""
    names = data_names(frame)
    keys = [unescape(str(n)) for n in names]
    columns = [_row_values(frame[n]) for n in names]
    lines: list[bytes] = []
    failed: dict[int, str] = {}
    for row in range(len(frame)):
        try:
            record = {k: json_value(col[row]) for k, col in zip(keys, columns, strict=True)}
            text = json.dumps(record, ensure_ascii=False, allow_nan=False)
            lines.append((text + "\n").encode("utf-8"))
        except (TypeError, ValueError, OverflowError, UnicodeEncodeError, RecursionError) as err:
            failed[row] = f"cannot be written as JSONL: {type(err).__name__}: {err}"
            lines.append(b"")
    return lines, failed


_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError)


def _column_array(name: str, values: list[Any], field: pa.Field | None) -> tuple[pa.Array, dict[int, str]]:
    """One column as Arrow of its schema type; values that do not fit it, by position."""
    if field is not None and is_json_text(field):
        values = [as_json_text(json_value(v)) for v in values]
    kind = field.type if field is not None else None
    if isinstance(values, pa.Array):  # an Arrow-backed input column: cast, row by row only on failure
        return _cast_array(name, values, kind)
    try:
        return pa.array(values, type=kind, from_pandas=True), {}
    except _ARROW_ERRORS:
        pass
    if kind is None:
        kind = infer_field(name, values).type
    failed: dict[int, str] = {}
    kept: list[Any] = []
    for row, value in enumerate(values):
        try:
            pa.array([value], type=kind, from_pandas=True)
            kept.append(value)
        except _ARROW_ERRORS as err:
            what = type(value).__name__
            failed[row] = f"field {name!r}: {what} value does not fit the run's type {kind}: {err}"
            kept.append(None)
    return pa.array(kept, type=kind, from_pandas=True), failed


def _cast_array(name: str, values: pa.Array, kind: pa.DataType | None) -> tuple[pa.Array, dict[int, str]]:
    if kind is None or values.type == kind:
        return values, {}
    try:
        return values.cast(kind), {}
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    failed: dict[int, str] = {}
    kept = []
    for row in range(len(values)):
        try:
            kept.append(values.slice(row, 1).cast(kind))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
            failed[row] = f"field {name!r}: value does not fit the run's type {kind}: {err}"
            kept.append(pa.nulls(1, type=kind))
    return pa.concat_arrays(kept) if kept else pa.array([], type=kind), failed


def encode_parquet(frame: pd.DataFrame, schema: pa.Schema | None) -> tuple[pa.Table, dict[int, str]]:
    """Rows as one Arrow table of the run's schema; rows with a value that does not fit, by position."""
    present = {unescape(str(n)): n for n in data_names(frame)}
    fields = list(schema) if schema is not None else [None] * len(present)
    names = [f.name for f in schema] if schema is not None else list(present)
    failed: dict[int, str] = {}
    arrays = []
    for name, field in zip(names, fields, strict=True):
        if name not in present:  # a column this file does not have: all null
            arrays.append(pa.nulls(len(frame), type=field.type))
            continue
        array, bad = _column_array(name, _values(frame[present[name]]), field)
        arrays.append(array)
        for row, reason in bad.items():
            failed.setdefault(row, reason)
    extra = [n for n in present if n not in set(names)]
    for name in extra:  # a column the run's schema does not know: rows that have a value cannot be written
        for row in np.flatnonzero(frame[present[name]].notna().to_numpy()):
            failed.setdefault(int(row), f"field {name!r} is not in the run's Parquet schema ({SCHEMA_HINT})")
    if schema is None:
        return pa.table(dict(zip(names, arrays, strict=True))), failed
    return pa.Table.from_arrays(arrays, schema=schema), failed


SCHEMA_HINT = "decided at start-up from Parquet footers and the first JSONL records of each input"


def _values(series: pd.Series) -> Any:
    """Column values for Arrow: Arrow-backed columns as Arrow, others as Python objects."""
    if isinstance(series.dtype, pd.ArrowDtype):
        return pa.array(series)
    return series.astype(object).tolist() if series.dtype != object else series.tolist()


def safe_json(value: Any) -> Any:
    """A quarantined value, whatever it is: as JSON where it can be, else its repr (never fails)."""
    try:
        converted = json_value(value)
        json.dumps(converted, allow_nan=False)
        return converted
    except (TypeError, ValueError, OverflowError):
        return repr(value)
