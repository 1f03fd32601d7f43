"""Tasks: each reads, classifies and writes its own unit(s) — a file, a part of a large file, or a group
of small files — and hands back only small counts, so memory per worker stays bounded whatever the
dataset size. Outcomes are yielded as tasks finish, so the caller can record each one at once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import pandas as pd
from distributed import Client, as_completed

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
from curator.io.partitions import Part, count_lines
from curator.io.readers import mark_bad_text, read_file
from curator.io.writers import OutputTarget, write_partition


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


def classify_frames(
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


def check_columns(frame: pd.DataFrame, part: Part, classifiers: Sequence[DistributedDataClassifier]) -> None:
    """Refuse a unit whose input has a column a classifier would write (it would be overwritten)."""
    outputs = {c for clf in classifiers for c in clf.output_types()}
    clash = sorted(outputs & {unescape(str(c)) for c in data_columns(frame.columns)})
    if clash:
        raise ConfigError(
            f"{part.path} has input column(s) {clash} that a classifier would overwrite; "
            "give the classifier other column names (e.g. classifier.<name>.pred_column=...)."
        )


def process(parts: list[Part], first_lines: list[int], work: Work) -> list[dict[str, Any]]:
    """Read, classify and write one task's units; return each unit's small counts (never rows)."""
    frames = []
    for part, first in zip(parts, first_lines, strict=True):
        frame = work.reader(
            part, work.text_field, work.id_field, first_line=first, invalid_text=work.invalid_text
        )
        check_columns(frame, part, work.classifiers)
        frames.append(frame)
    lines = [frame.attrs.get(LINES_ATTR) for frame in frames]
    repaired = [frame.attrs.get(REPAIRED_ATTR, 0) for frame in frames]
    frames = classify_frames(frames, work.classifiers)
    for frame, count in zip(frames, repaired, strict=True):
        frame.attrs[REPAIRED_ATTR] = count
    stats = []
    for part, frame, spanned in zip(parts, frames, lines, strict=True):
        counts = write_partition(frame, part, work.target, work.flt, work.classifiers)
        stats.append({**counts, "lines": spanned})
    return stats


# ---- running the tasks -------------------------------------------------------------------------
Outcome = tuple[list[Part], Any]  # the task's units, and their counts or the exception that failed it


def _jsonl_lines(parts: Sequence[Part], known: dict[str, int]) -> Callable[[Part], int]:
    """First line number of a part: 1 + the lines of its file's earlier parts (known, else counted)."""
    siblings: dict[str, list[Part]] = {}
    for part in parts:
        siblings.setdefault(part.path, []).append(part)

    def lines(part: Part) -> int:
        if part.name not in known:
            known[part.name] = count_lines(part)
        return known[part.name]

    def first_line(part: Part) -> int:
        if not part.counted:
            return 1
        return 1 + sum(lines(p) for p in siblings[part.path][: part.index])

    return first_line


def _delayed_first_lines(parts: Sequence[Part], known: dict[str, int], run_id: str) -> dict[str, Any]:
    """First line numbers as a chain of small counting tasks that runs alongside the classification."""
    firsts: dict[str, Any] = {}
    running: Any = 1
    for part in parts:
        if not part.counted:
            running = 1
        firsts[part.name] = running
        if part.format == "jsonl" and part.index is not None and part.index < part.count - 1:
            spanned = known.get(part.name)
            if spanned is None:
                key = f"lines-{part.name}-{run_id}"
                spanned = dask.delayed(count_lines, pure=True)(part, dask_key_name=key)
            running = running + spanned
    return firsts


def run_sync(
    groups: list[list[Part]], parts: Sequence[Part], work: Work, known: dict[str, int]
) -> Iterator[Outcome]:
    """In this process, in order (cluster=sync): each task's outcome as it finishes."""
    first_line = _jsonl_lines(parts, known)
    for group in groups:
        try:
            stats = process(group, [first_line(p) for p in group], work)
        except Exception as err:  # recorded and reported; the other units still run
            yield group, err
            continue
        known.update({s["unit"]: s["lines"] for s in stats if s.get("lines") is not None})
        yield group, stats


def run_distributed(
    client: Client,
    groups: list[list[Part]],
    parts: Sequence[Part],
    work: Work,
    known: dict[str, int],
    retries: int,
) -> Iterator[Outcome]:
    """On the cluster: each task's outcome as it completes (lost workers' tasks run again elsewhere)."""
    run_id = uuid.uuid4().hex[:8]
    firsts = _delayed_first_lines(parts, known, run_id)
    shared = dask.delayed(work, name=f"curator-work-{run_id}")
    tasks = [
        dask.delayed(process, pure=False)(
            group, [firsts[p.name] for p in group], shared, dask_key_name=f"classify-{group[0].name}-{run_id}"
        )
        for group in groups
    ]
    futures = client.compute(tasks, retries=retries)
    by_key = {future.key: group for future, group in zip(futures, groups, strict=True)}
    for future in as_completed(futures):
        group = by_key.pop(future.key)
        try:
            yield group, future.result()
        except Exception as err:
            yield group, err
        finally:
            future.release()
