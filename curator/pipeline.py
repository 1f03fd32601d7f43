"""The flow: config → cluster → read → classify → filter → write → report. Tests call `run` directly."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import dask
import dask.dataframe as dd
import pandas as pd

from curator.classifiers.base import DistributedDataClassifier
from curator.classifiers.registry import build_classifiers
from curator.cluster import connect
from curator.config import Config
from curator.errors import ConfigError
from curator.filters import build_filter
from curator.io.files import InputFile, discover
from curator.io.readers import HIDDEN_PREFIX, read_file
from curator.io.writers import OutputTarget, write_partition
from curator.report import format_summary, save_summary, summarise

log = logging.getLogger(__name__)


def output_path(cfg: Config) -> str:
    """The data folder: configured, or derived from dataset + classifiers (no timestamp: reruns resume)."""
    if cfg.output.path:
        return os.path.abspath(os.path.expanduser(cfg.output.path))
    return os.path.abspath(os.path.join("outputs", "data", cfg.dataset.name, "+".join(cfg.classifier)))


def check_inputs(first: pd.DataFrame, path: str, classifiers: list[DistributedDataClassifier]) -> None:
    """Fail before any work when the first records lack a classifier's text field."""
    columns = [c for c in first.columns if not str(c).startswith(HIDDEN_PREFIX)]
    for clf in classifiers:
        if clf.text_field not in columns:
            raise ConfigError(
                f"Text field {clf.text_field!r} is not in {path}; columns found: {columns}. "
                "Set dataset.text_field to the column that holds the text."
            )


def classify_dataset(
    inputs: list[InputFile],
    classifiers: list[DistributedDataClassifier],
    text_field: str,
    id_field: str,
    meta: pd.DataFrame | None = None,
) -> dd.DataFrame:
    """A lazy Dask DataFrame, one partition per input file, with every classifier's columns added."""
    if meta is None:  # from the first rows of the first file, never the whole file
        meta = read_file(inputs[0], text_field, id_field, limit=100).iloc[:0]
    frame = dd.from_map(
        read_file, inputs, text_field=text_field, id_field=id_field, meta=meta, enforce_metadata=False
    )
    for clf in classifiers:
        frame = frame.map_partitions(
            clf.classify_partition, meta=clf.meta(frame._meta), enforce_metadata=False
        )
    return frame


def run(cfg: Config, run_dir: str | None = None) -> dict[str, Any]:
    """Classify, filter and write a dataset as configured; return (and save) the summary."""
    started = time.perf_counter()
    inputs = discover(cfg.dataset.path, cfg.dataset.format)
    classifiers = build_classifiers(cfg.classifier, cfg.dataset.text_field, cfg.inference)
    flt = build_filter(cfg.filter, classifiers)
    first = read_file(inputs[0], cfg.dataset.text_field, cfg.dataset.id_field, limit=100)
    check_inputs(first, inputs[0].path, classifiers)
    target = OutputTarget(output_path(cfg), cfg.output.format, cfg.filter.write_filtered)
    log.info("%d input file(s) → %s", len(inputs), target.path)
    # Input columns pass through as read: no object → string conversion by Dask.
    with connect(cfg.cluster), dask.config.set({"dataframe.convert-string": False}):
        frame = classify_dataset(
            inputs, classifiers, cfg.dataset.text_field, cfg.dataset.id_field, meta=first.iloc[:0]
        )
        writes = [
            dask.delayed(write_partition)(part, spec, target, flt, classifiers)
            for part, spec in zip(frame.to_delayed(), inputs, strict=True)
        ]
        stats = list(dask.compute(*writes))
    summary = summarise(stats, time.perf_counter() - started, target.path)
    if run_dir:
        summary["report"] = save_summary(summary, run_dir)
    log.info(
        "Done: read %d, written %d, filtered %d, quarantined %d in %.1f s → %s",
        *(summary[k] for k in ("read", "written", "filtered", "quarantined", "seconds", "output_path")),
    )
    if not cfg.quiet:
        print(format_summary(summary))
    return summary
