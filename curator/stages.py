"""The stages of one task, in order: read → classify → decide (the filter) → write.

Readers and writers (curator.io) know files and formats, classifiers know models, the filter decides;
this module strings them together for the units of one task and returns only small counts (never
rows), so what crosses the cluster stays small whatever the dataset size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from curator.classifiers.base import DistributedDataClassifier
from curator.columns import (
    ERROR_COLUMN,
    LINES_ATTR,
    REPAIRED_ATTR,
    STAGE_COLUMN,
    STATS_ATTR,
    data_columns,
    unescape,
)
from curator.errors import ConfigError
from curator.filters import Filter
from curator.inference.isolation import classify_isolated
from curator.io.partitions import Part
from curator.io.readers import mark_bad_text, read_file
from curator.io.writers import OutputTarget, Unit, write_partition


@dataclass(frozen=True)
class Work:
    """Everything a task needs besides its units (shipped to each worker once)."""

    classifiers: tuple[DistributedDataClassifier, ...]
    flt: Filter
    target: OutputTarget
    text_field: str
    id_field: str
    reader: Callable[..., pd.DataFrame] = read_file  # dataset.backend's partition reader
    invalid_text: str = "quarantine"  # dataset.invalid_text


# ---- read --------------------------------------------------------------------------------------
def check_columns(frame: pd.DataFrame, part: Part, classifiers: Sequence[DistributedDataClassifier]) -> None:
    """Refuse a unit whose input has a column a classifier would write (it would be overwritten)."""
    outputs = {c for clf in classifiers for c in clf.output_types()}
    clash = sorted(outputs & {unescape(str(c)) for c in data_columns(frame.columns)})
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
            part, work.text_field, work.id_field, first_line=first, invalid_text=work.invalid_text
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
    fields = list(dict.fromkeys(clf.text_field for clf in classifiers))
    texts = pd.concat(
        [f.reindex(columns=[*fields, ERROR_COLUMN, STAGE_COLUMN]).astype(object) for f in frames],
        ignore_index=True,
    )
    for field in fields:  # rows a classifier cannot read (its own text field) are quarantined too
        texts = mark_bad_text(texts, field)
    for clf in classifiers:
        texts = classify_isolated(clf, texts)
    columns = [ERROR_COLUMN, STAGE_COLUMN, *(c for clf in classifiers for c in clf.output_types())]
    start = 0
    for i, frame in enumerate(frames):
        stop = start + len(frame)
        for column in columns:
            frame[column] = pd.Series(texts[column].array[start:stop], index=frame.index)
        frame.attrs[STATS_ATTR] = dict(texts.attrs.get(STATS_ATTR, {})) if i == 0 else {}
        start = stop
    return frames


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
def write(
    frame: pd.DataFrame,
    unit: Unit,
    target: OutputTarget,
    classifiers: Sequence[DistributedDataClassifier],
    keep: np.ndarray | None = None,
) -> dict[str, Any]:
    """Write a classified unit; its counts, with label counts of the rows that were not quarantined."""
    types = {column: kind for clf in classifiers for column, kind in clf.output_types().items()}
    counts, written = write_partition(frame, unit, target, keep, types)
    rows = frame[written]
    labels = {
        column: {str(k): int(v) for k, v in rows[column].value_counts().items()}
        for clf in classifiers
        for column in clf.report_columns
    }
    from curator.report import label_examples  # the report's few texts per label, cut short

    examples = {
        column: label_examples(rows, column, clf.text_field)
        for clf in classifiers
        for column in clf.report_columns
    }
    classify = dict(frame.attrs.get(STATS_ATTR, {}))
    return {**counts, "labels": labels, "examples": examples, "classify": classify}


def process(parts: list[Part], first_lines: list[int], work: Work) -> list[dict[str, Any]]:
    """Read, classify, decide and write one task's units; return each unit's small counts (never rows)."""
    frames = read(parts, first_lines, work)
    lines = [frame.attrs.get(LINES_ATTR) for frame in frames]
    repaired = [frame.attrs.get(REPAIRED_ATTR, 0) for frame in frames]
    frames = classify(frames, work.classifiers)
    stats = []
    for part, frame, spanned, fixed in zip(parts, frames, lines, repaired, strict=True):
        frame.attrs[REPAIRED_ATTR] = fixed
        counts = write(frame, part, work.target, work.classifiers, decide(frame, work.flt))
        stats.append({**counts, "lines": spanned})
    return stats
