"""Write one partition: kept rows, optionally filtered-out rows, and quarantined records, atomically."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from curator.classifiers.base import ERROR_COLUMN, STATS_ATTR, DistributedDataClassifier
from curator.filters import Filter
from curator.io.files import InputFile
from curator.io.readers import HIDDEN_PREFIX, LINE_COLUMN, RAW_COLUMN


@dataclass(frozen=True)
class OutputTarget:
    """Where a run writes and in which format (None: each input's own format)."""

    path: str
    format: str | None = None
    write_filtered: bool = False


def _atomic(path: str, write: Any) -> None:
    """Write through a temporary name in the same folder, then rename into place."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _visible(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in frame.columns if not str(c).startswith(HIDDEN_PREFIX)]]


def write_frame(
    frame: pd.DataFrame, path: str, fmt: str, types: dict[str, pa.DataType] | None = None
) -> None:
    """Write rows as JSONL or Parquet; classifier columns get their fixed Arrow types."""
    frame = _visible(frame).reset_index(drop=True)
    if fmt == "jsonl":
        _atomic(path, lambda tmp: frame.to_json(tmp, orient="records", lines=True, force_ascii=False))
        return
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for column, kind in (types or {}).items():
        if column in table.column_names:
            index = table.column_names.index(column)
            table = table.set_column(index, pa.field(column, kind), table.column(column).cast(kind))
    _atomic(path, lambda tmp: pq.write_table(table, tmp))


def _quarantine_records(bad: pd.DataFrame, spec: InputFile) -> list[dict[str, Any]]:
    """One JSON record per bad input: where it came from, why, and what it was."""
    records = json.loads(_visible(bad).to_json(orient="records", default_handler=str))
    out = []
    for line, reason, raw, record in zip(
        bad[LINE_COLUMN].tolist(), bad[ERROR_COLUMN].tolist(), bad[RAW_COLUMN].tolist(), records
    ):
        entry: dict[str, Any] = {"input_file": spec.path, "line": int(line), "reason": reason}
        if raw is not None:
            entry["raw"] = raw
        else:
            entry["record"] = record
        out.append(entry)
    return out


def write_partition(
    frame: pd.DataFrame,
    spec: InputFile,
    target: OutputTarget,
    flt: Filter,
    classifiers: Sequence[DistributedDataClassifier],
) -> dict[str, Any]:
    """Route every row of a classified partition to exactly one place; return the counts."""
    started = time.perf_counter()
    bad = (
        frame[ERROR_COLUMN].notna().to_numpy()
        if ERROR_COLUMN in frame.columns
        else np.zeros(len(frame), bool)
    )
    good = frame[~bad]
    keep = flt.mask(good) if flt.active else np.ones(len(good), dtype=bool)
    fmt = target.format or spec.format
    name = spec.output_name(fmt)
    types: dict[str, pa.DataType] = {}
    for clf in classifiers:
        types.update(clf.output_types())
    write_frame(good[keep], os.path.join(target.path, name), fmt, types)
    if target.write_filtered:
        write_frame(good[~keep], os.path.join(target.path, "filtered", name), fmt, types)
    if bad.any():
        records = _quarantine_records(frame[bad], spec)
        path = os.path.join(target.path, "quarantine", spec.stem + ".jsonl")
        _atomic(path, lambda tmp: _write_jsonl(tmp, records))
    labels = {
        column: {str(k): int(v) for k, v in good[column].value_counts().items()}
        for clf in classifiers
        for column in clf.report_columns
    }
    return {
        "input": spec.path,
        "output": name,
        "read": len(frame),
        "written": int(keep.sum()),
        "filtered": int((~keep).sum()),
        "quarantined": int(bad.sum()),
        "labels": labels,
        "classify": dict(frame.attrs.get(STATS_ATTR, {})),
        "write_seconds": time.perf_counter() - started,
    }


def _write_jsonl(path: str, records: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
