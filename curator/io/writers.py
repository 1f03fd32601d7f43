"""Write one partition: kept rows, optionally filtered-out rows, and quarantined records, atomically."""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from curator.classifiers.base import ERROR_COLUMN, STATS_ATTR, DistributedDataClassifier
from curator.filters import Filter
from curator.io.lock import temporary_suffix
from curator.io.readers import HIDDEN_PREFIX, LINE_COLUMN, RAW_COLUMN

JSON_ROWS = 10_000  # JSONL is serialised this many rows at a time (no whole-partition string)
QUARANTINE = "quarantine"
FILTERED = "filtered"


class Unit(Protocol):
    """What the writer needs of an input file or part: where it came from, what its outputs are called."""

    path: str
    format: str

    @property
    def name(self) -> str: ...

    def output_name(self, fmt: str | None) -> str: ...


@dataclass(frozen=True)
class OutputTarget:
    """Where a run writes (a local folder or an fsspec URL) and in which format (None: each input's own)."""

    path: str
    format: str | None = None
    write_filtered: bool = False

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return fsspec.core.url_to_fs(self.path)[0]

    def location(self, relative: str) -> str:
        """A relative output name as a path on `fs`."""
        return posixpath.join(fsspec.core.url_to_fs(self.path)[1], relative)


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temporary name in the same folder, then rename into place (readers never see half).

    The temporary name (`<path>.curator-tmp-<host>-<pid>-<hex>`) says which process writes it, so a
    clean-up at the next start never removes a file another live process is still writing.
    """
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    tmp = f"{path}{temporary_suffix()}"
    try:
        with fs.open(tmp, "wb") as handle:
            write(handle)
        fs.mv(tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def _visible(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in frame.columns if not str(c).startswith(HIDDEN_PREFIX)]]


def _write_json_lines(frame: pd.DataFrame, handle: IO[bytes]) -> None:
    if frame.empty:
        handle.write(frame.to_json(orient="records", lines=True, force_ascii=False).encode("utf-8"))
    for start in range(0, len(frame), JSON_ROWS):
        chunk = frame.iloc[start : start + JSON_ROWS]
        handle.write(chunk.to_json(orient="records", lines=True, force_ascii=False).encode("utf-8"))


def write_frame(
    frame: pd.DataFrame,
    path: str,
    fmt: str,
    types: dict[str, pa.DataType] | None = None,
    fs: fsspec.AbstractFileSystem | None = None,
) -> None:
    """Write rows as JSONL or Parquet; classifier columns get their fixed Arrow types."""
    fs = fs or fsspec.filesystem("file")
    frame = _visible(frame).reset_index(drop=True)
    if fmt == "jsonl":
        atomic_write(fs, path, lambda handle: _write_json_lines(frame, handle))
        return
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for column, kind in (types or {}).items():
        if column in table.column_names:
            index = table.column_names.index(column)
            table = table.set_column(index, pa.field(column, kind), table.column(column).cast(kind))
    atomic_write(fs, path, lambda handle: pq.write_table(table, handle))


def _quarantine_records(bad: pd.DataFrame, spec: Unit) -> list[dict[str, Any]]:
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


def _write_jsonl(handle: IO[bytes], records: list[dict[str, Any]]) -> None:
    for record in records:
        handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))


def output_names(spec: Unit, target: OutputTarget) -> list[str]:
    """Every relative output name a unit can have (what `overwrite` and a changed input remove)."""
    name = spec.output_name(target.format or spec.format)
    return [name, f"{FILTERED}/{name}", f"{QUARANTINE}/{spec.name}.jsonl"]


def write_partition(
    frame: pd.DataFrame,
    spec: Unit,
    target: OutputTarget,
    flt: Filter,
    classifiers: Sequence[DistributedDataClassifier],
) -> dict[str, Any]:
    """Route every row of a classified partition to exactly one place; return the (small) counts."""
    started = time.perf_counter()
    fs = target.fs
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
    outputs = [name]
    write_frame(good[keep], target.location(name), fmt, types, fs)
    if target.write_filtered:
        outputs.append(f"{FILTERED}/{name}")
        write_frame(good[~keep], target.location(outputs[-1]), fmt, types, fs)
    quarantine = target.location(f"{QUARANTINE}/{spec.name}.jsonl")
    if bad.any():
        outputs.append(f"{QUARANTINE}/{spec.name}.jsonl")
        records = _quarantine_records(frame[bad], spec)
        atomic_write(fs, quarantine, lambda handle: _write_jsonl(handle, records))
    elif fs.exists(quarantine):  # left by an earlier run over a since-changed input
        fs.rm(quarantine)
    labels = {
        column: {str(k): int(v) for k, v in good[column].value_counts().items()}
        for clf in classifiers
        for column in clf.report_columns
    }
    return {
        "unit": spec.name,
        "input": spec.path,
        "output": name,
        "outputs": outputs,
        "read": len(frame),
        "written": int(keep.sum()),
        "filtered": int((~keep).sum()),
        "quarantined": int(bad.sum()),
        "labels": labels,
        "classify": dict(frame.attrs.get(STATS_ATTR, {})),
        "write_seconds": time.perf_counter() - started,
    }
