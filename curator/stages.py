"""The stages of one task, in order: read → classify → decide (the filter) → write.

Readers and writers (curator.io) know files and formats, classifiers know models, the filter decides;
this module strings them together for the units of one task and returns only small counts (never
rows), so what crosses the cluster stays small whatever the dataset size.
"""

from __future__ import annotations

import os
import posixpath
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pandas as pd

from curator.classifiers.base import DistributedDataClassifier
from curator.columns import (
    ERROR_COLUMN,
    LINE_COLUMN,
    LINES_ATTR,
    RAW_COLUMN,
    REPAIRED_ATTR,
    STAGE_COLUMN,
    STATS_ATTR,
    data_columns,
    escape,
    unescape,
)
from curator.errors import ConfigError
from curator.filters import Filter
from curator.inference.isolation import classify_isolated
from curator.io.files import InputFile, detect_format
from curator.io.partitions import Part
from curator.io.readers import mark_bad_text, read_file
from curator.io.writers import OutputTarget, Unit, write_partition
from curator.report import label_examples

ATTRIBUTE_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
KEEP_COLUMN = "keep"  # attribute files with a filter: True kept, False filtered out, null quarantined


@dataclass(frozen=True)
class Work:
    """Everything a task needs besides its units (a few KB, shipped inside each task)."""

    classifiers: tuple[DistributedDataClassifier, ...]
    flt: Filter
    target: OutputTarget
    text_field: str | None  # dataset.text_field, where a classifier reads it
    id_field: str
    reader: Callable[..., pd.DataFrame] = read_file  # dataset.backend's partition reader
    invalid_text: str = "quarantine"  # dataset.invalid_text
    attributes: str | None = None  # task=mix: the attribute folder whose columns replace the classifiers
    text_columns: tuple[str, ...] = ()  # every classifier's text field: read as text where stored as bytes


def output_types(classifiers: Sequence[DistributedDataClassifier]) -> dict[str, Any]:
    """Every classifier column of the run and its Arrow type, in classifier order."""
    return {column: kind for clf in classifiers for column, kind in clf.output_types().items()}


def text_fields(classifiers: Sequence[DistributedDataClassifier]) -> tuple[str, ...]:
    """The text fields the run's classifiers read, each once, in classifier order."""
    return tuple(dict.fromkeys(clf.text_field for clf in classifiers))


# ---- read --------------------------------------------------------------------------------------
def check_columns(frame: pd.DataFrame, part: Part, classifiers: Sequence[DistributedDataClassifier]) -> None:
    """Refuse a unit whose input has a column a classifier would write (it would be overwritten)."""
    clash = sorted(output_types(classifiers).keys() & {unescape(str(c)) for c in data_columns(frame.columns)})
    if clash:
        raise ConfigError(
            f"{part.path} has input column(s) {clash} that a classifier would overwrite; "
            "give the classifier other column names (e.g. classifier.<name>.pred_column=...)."
        )


def read(parts: Sequence[Part], first_lines: Sequence[int], work: Work) -> list[pd.DataFrame]:
    """Each unit as a partition (bad records marked, never dropped)."""
    frames = []
    for part, first in zip(parts, first_lines, strict=True):
        frame = work.reader(
            part,
            work.text_field,
            work.id_field,
            first_line=first,
            invalid_text=work.invalid_text,
            text_columns=work.text_columns,
        )
        check_columns(frame, part, work.classifiers)
        frames.append(frame)
    return frames


# ---- classify ----------------------------------------------------------------------------------
def classify(
    frames: list[pd.DataFrame], classifiers: Sequence[DistributedDataClassifier]
) -> list[pd.DataFrame]:
    """Classify the texts of several partitions as one (one length sort, full batches), then hand each
    its own prediction columns; input columns are never concatenated, so their dtypes stay as read."""
    fields = list(text_fields(classifiers))
    texts = pd.concat(
        [f.reindex(columns=[*fields, ERROR_COLUMN, STAGE_COLUMN]).astype(object) for f in frames],
        ignore_index=True,
    )
    for field in fields:  # rows a classifier cannot read (its own text field) are quarantined too
        texts = mark_bad_text(texts, field)
    for clf in classifiers:
        texts = classify_isolated(clf, texts)
    columns = [ERROR_COLUMN, STAGE_COLUMN, *output_types(classifiers)]
    start = 0
    for i, frame in enumerate(frames):
        stop = start + len(frame)
        for column in columns:
            frame[column] = pd.Series(texts[column].array[start:stop], index=frame.index)
        frame.attrs[STATS_ATTR] = dict(texts.attrs.get(STATS_ATTR, {})) if i == 0 else {}
        start = stop
    return frames


def join_attributes(frame: pd.DataFrame, part: Part, work: Work) -> pd.DataFrame:
    """task=mix: the classifiers' columns from the unit's attribute file (row i = record i), no model."""
    assert work.attributes is not None
    fs, root = fsspec.core.url_to_fs(work.attributes)
    names = [posixpath.join(root, part.name + suffix) for suffix in ATTRIBUTE_SUFFIXES]
    found = next((n for n in names if fs.isfile(n)), None)
    if found is None:
        raise ConfigError(
            f"No attribute file for {part.path} ({part.name}) in {work.attributes}: classify it with "
            "output.content=attributes and the same dataset.blocksize first."
        )
    source = InputFile(fs.unstrip_protocol(found), detect_format(found) or "jsonl", part.name)
    attrs = read_file(source, None, None)
    ident = escape(work.id_field)
    written = attrs[ident].notna().to_numpy() if ident in attrs.columns else None  # an id may not fit
    if len(attrs) != len(frame) or (
        written is not None
        and attrs[ident][written].astype(str).tolist() != frame[ident][written].astype(str).tolist()
    ):
        raise ConfigError(
            f"{found} does not match {part.path} row for row ({len(attrs)} vs {len(frame)} rows, or other "
            "ids): the documents changed since they were classified; classify them again."
        )
    types = output_types(work.classifiers)
    missing = [c for c in types if c not in attrs.columns]
    if missing:
        raise ConfigError(f"{found} has no column(s) {missing}: mix with the classifiers it was made with.")
    for clf in work.classifiers:
        typed = clf._typed(attrs[list(clf.output_types())].copy())
        for column in typed:
            frame[column] = pd.Series(typed[column].array, index=frame.index)
    unlabelled = attrs[list(types)].isna().all(axis=1).to_numpy() & frame[ERROR_COLUMN].isna().to_numpy()
    if unlabelled.any():  # quarantined when classified: the reason is in the attributes' _quarantine/
        errors = frame[ERROR_COLUMN].to_numpy(dtype=object, copy=True)
        stages = frame[STAGE_COLUMN].to_numpy(dtype=object, copy=True)
        errors[unlabelled] = f"no attributes in {found} (quarantined when classified)"
        stages[unlabelled] = "classify"
        frame[ERROR_COLUMN], frame[STAGE_COLUMN] = errors, stages
    frame.attrs[STATS_ATTR] = {}
    return frame


# ---- decide ------------------------------------------------------------------------------------
def decide(frame: pd.DataFrame, flt: Filter) -> np.ndarray:
    """One keep flag per row (the filter over good rows; quarantined rows are never kept)."""
    good = (
        frame[ERROR_COLUMN].isna().to_numpy() if ERROR_COLUMN in frame.columns else np.ones(len(frame), bool)
    )
    keep = np.zeros(len(frame), dtype=bool)
    keep[good] = flt.mask(frame[good]) if flt.active else True
    return keep


# ---- write -------------------------------------------------------------------------------------
def attributes(
    frame: pd.DataFrame, id_field: str, types: dict[str, Any], keep_column: str | None, keep: Any
) -> pd.DataFrame:
    """The id and the classifiers' columns of every row (plus the keep flags), for an attribute file."""
    hidden = [c for c in (ERROR_COLUMN, STAGE_COLUMN, RAW_COLUMN, LINE_COLUMN) if c in frame.columns]
    out = frame[[escape(id_field), *types, *hidden]].copy()
    if keep_column:
        flags = pd.array(np.asarray(keep, dtype=bool), dtype="boolean")
        flags[out[ERROR_COLUMN].notna().to_numpy()] = pd.NA  # quarantined: neither kept nor dropped
        out.insert(1 + len(types), keep_column, flags)
    out.attrs = frame.attrs
    return out


def write(
    frame: pd.DataFrame,
    unit: Unit,
    target: OutputTarget,
    classifiers: Sequence[DistributedDataClassifier],
    keep: np.ndarray | None = None,
    id_field: str = "id",
) -> dict[str, Any]:
    """Write a classified unit (documents, or attributes); its counts, with label counts of the rows
    that were not quarantined."""
    types = output_types(classifiers)
    if target.content == "attributes":
        flags = np.ones(len(frame), dtype=bool) if keep is None else keep
        aligned = attributes(frame, id_field, types, target.keep_column, flags)
        counts, written = write_partition(aligned, unit, target, keep, types, aligned=True)
    else:
        counts, written = write_partition(frame, unit, target, keep, types)
    rows = frame[written]
    labels = {
        column: {str(k): int(v) for k, v in rows[column].value_counts().items()}
        for clf in classifiers
        for column in clf.report_columns
    }
    examples = {
        column: label_examples(rows, column, clf.text_field)
        for clf in classifiers
        for column in clf.report_columns
    }
    classify = dict(frame.attrs.get(STATS_ATTR, {}))
    return {**counts, "labels": labels, "examples": examples, "classify": classify}


WORKER = f"{socket.gethostname()}:{os.getpid()}"  # this process: device busy is a fraction of its wall time


def _read_each(parts: Sequence[Part], first_lines: Sequence[int], work: Work) -> list[Any]:
    """Each unit's partition, or the exception that reading it raised (the others are still read)."""
    out: list[Any] = []
    for part, first in zip(parts, first_lines, strict=True):
        began = time.perf_counter()
        try:
            frame = read([part], [first], work)[0]
        except Exception as err:
            out.append(err)
            continue
        frame.attrs["read_seconds"] = time.perf_counter() - began
        out.append(frame)
    return out


def process(parts: list[Part], first_lines: list[int], work: Work) -> list[Any]:
    """Read, classify, decide and write one task's units; return each unit's small counts (never rows).

    A unit whose reading or writing raises gets its exception in its place (the task's other units
    finish); a task whose units all fail raises the first error, so Dask's retries still apply. The
    units of a task are classified together: an error there fails them all.
    """
    started = time.time()
    read_out = _read_each(parts, first_lines, work)
    frames = [f for f in read_out if not isinstance(f, Exception)]
    ready = [p for p, f in zip(parts, read_out, strict=True) if not isinstance(f, Exception)]
    lines = [frame.attrs.get(LINES_ATTR) for frame in frames]
    repaired = [frame.attrs.get(REPAIRED_ATTR, 0) for frame in frames]
    read_seconds = [frame.attrs.pop("read_seconds", 0.0) for frame in frames]
    if frames and work.attributes is None:
        frames = classify(frames, work.classifiers)
    elif frames:
        frames = [join_attributes(f, p, work) for f, p in zip(frames, ready, strict=True)]
    results: dict[str, Any] = {}
    for part, frame, spanned, fixed, reading in zip(
        ready, frames, lines, repaired, read_seconds, strict=True
    ):
        frame.attrs[REPAIRED_ATTR] = fixed
        began = time.perf_counter()
        try:
            counts = write(frame, part, work.target, work.classifiers, decide(frame, work.flt), work.id_field)
        except Exception as err:
            results[part.name] = err
            continue
        timing = {"worker": WORKER, "started": started, "read": reading, "write": time.perf_counter() - began}
        results[part.name] = {**counts, "lines": spanned, "timing": timing}
    finished = time.time()
    out = [results.get(p.name, f) for p, f in zip(parts, read_out, strict=True)]
    for stats in out:
        if isinstance(stats, dict):
            stats["timing"]["finished"] = finished
    if all(isinstance(s, Exception) for s in out):
        raise out[0]
    return out
