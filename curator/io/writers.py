"""Write one partition: kept rows, optionally filtered-out rows, and quarantined records, atomically."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import json
import posixpath
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from curator.columns import (
    ERROR_COLUMN,
    LINE_COLUMN,
    RAW_COLUMN,
    REPAIRED_ATTR,
    STAGE_COLUMN,
    unescape,
)
from curator.io.encode import data_names, encode_jsonl, encode_parquet, safe_json
from curator.io.files import output_format
from curator.io.lock import temporary_suffix
from curator.io.paths import move_file, url_to_fs

INPUT_CODECS = {".gz": "gzip", ".zst": "zstd"}  # a compressed input is written compressed the same way
JSONL_CODEC_SUFFIXES = {"gzip": ".gz", "zstd": ".zst"}
QUARANTINE = "_quarantine"  # `_`: Arrow, pandas and Dask skip it when reading the folder as a dataset
NAME_MAX = 255  # bytes in one file name on Linux filesystems (and S3's limit is higher)
FILTERED = "_filtered"


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
    schema: pa.Schema | None = None  # the run's Parquet schema (one for every Parquet file of the run)
    # output.storage_options (endpoints, ...): may hold credentials, so never shown
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)
    compression: str | None = None  # none | gzip | zstd; None: as the input (JSONL), snappy (Parquet)
    row_group_size: int | None = None  # Parquet rows per row group; None: pyarrow's default
    content: str = "all"  # all: documents + new columns; attributes: id + new columns, every row
    keep_column: str | None = None  # attributes with a filter: the column of keep flags

    def fmt(self, spec: Unit) -> str:
        """The format a unit is written in (Arrow inputs: Parquet)."""
        return output_format(self.format, spec.format)

    def codec(self, spec: Unit) -> str | None:
        """A unit's compression: the configured one, else its input's (gzip, zstd), else none."""
        if self.compression is not None:
            return None if self.compression == "none" else self.compression
        return INPUT_CODECS.get(posixpath.splitext(spec.path.lower())[1])

    def data_name(self, spec: Unit) -> str:
        """A unit's data file name: its own name, the format's suffix, and `.gz`/`.zst` for JSONL."""
        name, codec = spec.output_name(self.fmt(spec)), self.codec(spec)
        return name + JSONL_CODEC_SUFFIXES[codec] if self.fmt(spec) == "jsonl" and codec else name

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        return url_to_fs(self.path, self.storage_options)[0]

    def location(self, relative: str) -> str:
        """A relative output name as a path on `fs`."""
        return posixpath.join(url_to_fs(self.path, self.storage_options)[1], relative)


def atomic_write(fs: fsspec.AbstractFileSystem, path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temporary name in the same folder, then rename into place (readers never see half).

    The temporary name (`<path>.curator-tmp-<host>-<pid>-<hex>`) says which process writes it, so a
    clean-up at the next start never removes a file another live process is still writing; a name too
    long for that suffix is replaced by a hash of it in the temporary's name.
    """
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    folder, name = posixpath.split(path)
    suffix = temporary_suffix()
    if len((name + suffix).encode()) > NAME_MAX:  # a long (valid) name: a short stand-in for the temporary
        name = hashlib.sha256(name.encode()).hexdigest()[:16]
    tmp = posixpath.join(folder, name + suffix)
    try:
        with fs.open(tmp, "wb") as handle:
            write(handle)
        move_file(fs, tmp, path)
    finally:
        if fs.exists(tmp):
            fs.rm_file(tmp)


def _quarantine_records(bad: pd.DataFrame, spec: Unit) -> list[dict[str, Any]]:
    """One JSON record per bad input: where it came from, at which stage, why, and what it was."""
    names = data_names(bad)
    keys = [unescape(str(n)) for n in names]
    columns = [bad[n].tolist() for n in names]
    out = []
    for row, (line, reason, stage, raw) in enumerate(
        zip(bad[LINE_COLUMN].tolist(), bad[ERROR_COLUMN].tolist(), _stages(bad), bad[RAW_COLUMN].tolist())
    ):
        entry: dict[str, Any] = {"input_file": spec.path, "line": int(line), "stage": stage, "reason": reason}
        if isinstance(raw, str):
            entry["raw"] = raw
        elif isinstance(raw, (bytes, bytearray)):  # not UTF-8: the original bytes, base64-encoded
            entry["raw_base64"] = base64.b64encode(bytes(raw)).decode("ascii")
        if raw is None or isinstance(raw, dict):
            entry["record"] = {k: safe_json(col[row]) for k, col in zip(keys, columns, strict=True)}
        if isinstance(raw, dict):  # Parquet fields that were not UTF-8: their original bytes
            entry["fields_base64"] = {k: base64.b64encode(v).decode("ascii") for k, v in raw.items()}
        out.append(entry)
    return out


def _stages(bad: pd.DataFrame) -> list[str]:
    stages = bad[STAGE_COLUMN].tolist() if STAGE_COLUMN in bad.columns else [None] * len(bad)
    return [s or "read" for s in stages]


def _write_jsonl(handle: IO[bytes], records: list[dict[str, Any]]) -> None:
    for record in records:  # a stray surrogate becomes its \\u escape: the line stays valid JSON
        handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace"))


def output_names(spec: Unit, target: OutputTarget) -> list[str]:
    """Every relative output name a unit can have (what `overwrite` and a changed input remove)."""
    name = target.data_name(spec)
    return [name, f"{FILTERED}/{name}", f"{QUARANTINE}/{spec.name}.jsonl"]


def _encode(frame: pd.DataFrame, fmt: str, schema: pa.Schema | None) -> tuple[Any, dict[int, str]]:
    return encode_jsonl(frame) if fmt == "jsonl" else encode_parquet(frame, schema)


def _placeholders(payload: Any, fmt: str, frame: pd.DataFrame, rows: np.ndarray) -> Any:
    """Aligned files keep a line for a row that could not be encoded: its first column (the id) alone."""
    if fmt != "jsonl":
        return payload  # Parquet: values that did not fit are already null
    first = next(iter(data_names(frame)), None)
    return [
        line or (json.dumps({unescape(str(first)): str(frame[first].iloc[row])}) + "\n").encode("utf-8")
        for line, row in zip(payload, rows, strict=True)
    ]


def _select(payload: Any, fmt: str, mask: np.ndarray) -> Any:
    if fmt == "jsonl":
        return [line for line, keep in zip(payload, mask, strict=True) if keep]
    return payload.filter(pa.array(mask, type=pa.bool_()))


def _put(
    fs: fsspec.AbstractFileSystem,
    path: str,
    fmt: str,
    payload: Any,
    codec: str | None = None,
    row_group_size: int | None = None,
) -> None:
    """Write encoded rows atomically: JSON lines (plain, gzip or zstd), or an Arrow table as Parquet
    (with that codec, snappy by default; no pandas metadata)."""
    if fmt == "jsonl":
        atomic_write(fs, path, lambda handle: _write_lines(handle, payload, codec))
    else:
        table = payload.replace_schema_metadata(None)
        options = {"compression": codec or "snappy", "row_group_size": row_group_size}
        atomic_write(fs, path, lambda handle: pq.write_table(table, handle, **options))


def _write_lines(handle: IO[bytes], lines: list[bytes], codec: str | None) -> None:
    if codec is None:
        handle.writelines(lines)
    elif codec == "gzip":  # mtime 0: the same rows give the same bytes, run after run
        with gzip.GzipFile(fileobj=handle, mode="wb", mtime=0) as packed:
            packed.writelines(lines)
    else:
        import zstandard

        with zstandard.ZstdCompressor().stream_writer(handle, closefd=False) as packed:
            for line in lines:  # its writer has no writelines
                packed.write(line)


def write_partition(
    frame: pd.DataFrame,
    spec: Unit,
    target: OutputTarget,
    keep: np.ndarray | None = None,
    types: dict[str, pa.DataType] | None = None,
    aligned: bool = False,
) -> tuple[dict[str, Any], np.ndarray]:
    """Route every row of a classified partition to exactly one place; return the counts and the rows
    written or filtered (not quarantined).

    `keep` (one flag per row; None: keep all) says which good rows go to the data file and which to
    `_filtered/`. Rows are encoded for the output format first: a row with a value the format (or
    the run's Parquet schema) cannot hold is quarantined at stage `write` with the reason; the others
    are written. `types` fixes the classifier columns' Arrow types when the run has no schema.
    `aligned` (attribute files): every row is written, in input order, quarantined ones with nulls,
    so row i of the file belongs to record i of the input; no `_filtered/` file.
    """
    started = time.perf_counter()
    fs = target.fs
    frame = frame.reset_index(drop=True)
    if ERROR_COLUMN not in frame.columns:
        frame[ERROR_COLUMN] = None
    keep = np.ones(len(frame), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    fmt, codec = target.fmt(spec), target.codec(spec)
    good = frame[ERROR_COLUMN].isna().to_numpy()
    rows = np.arange(len(frame)) if aligned else np.flatnonzero(good)
    schema = target.schema if fmt == "parquet" else None
    if fmt == "parquet" and schema is None:  # Python API: this partition's types, classifier columns fixed
        inferred, _ = encode_parquet(frame.iloc[rows], None)
        fixed = [
            pa.field(f.name, (types or {})[f.name]) if f.name in (types or {}) else f for f in inferred.schema
        ]
        schema = pa.schema(fixed)
    payload, failed = _encode(frame.iloc[rows], fmt, schema)
    failed = {i: reason for i, reason in failed.items() if good[rows[i]]}  # bad rows: already quarantined
    if failed:
        frame = frame.copy()
        errors, stages = frame[ERROR_COLUMN].to_numpy(copy=True), _stages_all(frame)
        for position, reason in failed.items():
            errors[rows[position]], stages[rows[position]] = reason, "write"
        frame[ERROR_COLUMN], frame[STAGE_COLUMN] = errors, stages
        if aligned and target.keep_column in frame.columns:  # quarantined now: neither kept nor dropped
            flags = frame[target.keep_column].astype("boolean").array.copy()
            flags[rows[list(failed)]] = pd.NA
            frame[target.keep_column] = flags
            payload, _ = _encode(frame.iloc[rows], fmt, schema)
    bad = frame[ERROR_COLUMN].notna().to_numpy()
    writable = ~bad[rows]
    kept = writable & keep[rows]
    name = target.data_name(spec)
    outputs = [name]
    if aligned:
        _put(
            fs,
            target.location(name),
            fmt,
            _placeholders(payload, fmt, frame, rows),
            codec,
            target.row_group_size,
        )
    else:
        _put(fs, target.location(name), fmt, _select(payload, fmt, kept), codec, target.row_group_size)
    if target.write_filtered and not aligned:
        outputs.append(f"{FILTERED}/{name}")
        filtered = _select(payload, fmt, writable & ~kept)
        _put(fs, target.location(outputs[-1]), fmt, filtered, codec, target.row_group_size)
    quarantine = target.location(f"{QUARANTINE}/{spec.name}.jsonl")
    if bad.any():
        outputs.append(f"{QUARANTINE}/{spec.name}.jsonl")
        records = _quarantine_records(frame[bad], spec)
        atomic_write(fs, quarantine, lambda handle: _write_jsonl(handle, records))
    elif fs.exists(quarantine):  # left by an earlier run over a since-changed input
        fs.rm_file(quarantine)
    counts = {
        "unit": spec.name,
        "input": spec.path,
        "output": name,
        "outputs": outputs,
        "read": len(frame),
        "written": int(kept.sum()),
        "filtered": int((writable & ~kept).sum()),
        "quarantined": int(bad.sum()),
        "quarantined_by_stage": dict(Counter(_stages(frame[bad]))),
        "repaired": int(frame.attrs.get(REPAIRED_ATTR, 0)),
        "write_seconds": time.perf_counter() - started,
    }
    return counts, ~bad


def _stages_all(frame: pd.DataFrame) -> np.ndarray:
    if STAGE_COLUMN in frame.columns:
        return frame[STAGE_COLUMN].to_numpy(dtype=object, copy=True)
    return np.array([None] * len(frame), dtype=object)
