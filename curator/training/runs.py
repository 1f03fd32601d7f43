"""Inner classify runs of task=train / task=evaluate: the same engine, cluster, progress and resume."""

from __future__ import annotations

import dataclasses
import json
import posixpath
from typing import Any

import numpy as np
import pandas as pd

from curator.config import ClassifierConfig, Config, FilterConfig
from curator.errors import ConfigError
from curator.io.files import discover
from curator.io.lock import MANIFEST
from curator.io.manifest import SUMMARY
from curator.io.paths import url_to_fs

EMBEDDING = "curator_embedding"  # the embedding column of task=train's cached embeddings


def inner_config(cfg: Config, data: Any, root: str, classifiers: dict[str, ClassifierConfig]) -> Config:
    """A classify run of `classifiers` over `data` into `root`: Parquet, every row, no filter."""
    return dataclasses.replace(
        cfg,
        task="classify",
        dataset=dataclasses.replace(cfg.dataset, path=data),
        classifier=classifiers,
        filter=FilterConfig(),
        output=dataclasses.replace(cfg.output, path=root, format="parquet", content="all", compression=None),
    )  # quiet as the run: its progress bar and counts show unless quiet=true


def embedding_classifier(cfg: Config) -> ClassifierConfig:
    """The sentence encoder of task=train as a classifier that writes the embedding column."""
    t = cfg.train
    return ClassifierConfig(
        family="embedding",
        model=t.encoder,
        pred_column=EMBEDDING,
        max_chars=t.max_chars,
        max_length=t.max_length,
    )


def read_outputs(root: str, options: dict[str, Any]) -> pd.DataFrame:
    """Every row an inner run wrote (its Parquet files; hidden files and folders are not data)."""
    files = discover(root, "parquet", options)
    frames = [pd.read_parquet(f.path, storage_options=options or None) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def labelled_rows(frame: pd.DataFrame, label_field: str, id_field: str) -> pd.DataFrame:
    """Rows that carry a label, sorted by id (so the seeded split does not depend on file order)."""
    if label_field not in frame.columns:
        shown = [c for c in frame.columns if c != EMBEDDING]
        raise ConfigError(f"Label field {label_field!r} is not in the data; columns found: {shown}")
    rows = frame[frame[label_field].notna()]
    order = np.argsort(rows[id_field].astype(str).to_numpy(), kind="stable")
    return rows.iloc[order].reset_index(drop=True)


def teacher(data: Any, label_field: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """When `data` is a previous run's output folder: which classifier wrote `label_field`, and its cost."""
    if not isinstance(data, str):
        return None
    fs, root = url_to_fs(data, options)
    manifest, summary = posixpath.join(root, MANIFEST), posixpath.join(root, SUMMARY)
    if not (fs.isfile(manifest) and fs.isfile(summary)):
        return None
    with fs.open(manifest, "rt", encoding="utf-8") as handle:
        settings = json.loads(handle.readline()).get("settings", {})
    with fs.open(summary, "rt", encoding="utf-8") as handle:
        costs = json.load(handle).get("classifiers", {})
    for name, clf in settings.get("classifiers", {}).items():
        if label_field in [v for k, v in clf.items() if k.endswith("_column")]:
            cost = costs.get(name) or {}
            return {
                "classifier": name,
                "model": clf.get("model"),
                "seconds": cost.get("seconds"),
                "documents": cost.get("documents"),
            }
    return None


def per_document(cost: dict[str, Any] | None) -> float | None:
    """Task seconds per document of a classifier's summary entry (None when it ran on nothing here)."""
    if not cost or not cost.get("documents") or not cost.get("seconds"):
        return None
    return cost["seconds"] / cost["documents"]
