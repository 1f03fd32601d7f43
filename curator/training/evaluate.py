"""task=evaluate: run the selected classifier(s) on a labelled file and score them against its labels."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pandas as pd

from curator.classifiers.registry import build_classifiers
from curator.config import Config
from curator.errors import ConfigError
from curator.io.paths import absolute
from curator.training import runs
from curator.training.metrics import classification_metrics, regression_metrics
from curator.training.report import finish


def score(frame: pd.DataFrame, gold_field: str, pred_column: str, labels: list[str]) -> dict[str, Any]:
    """One classifier's scores on the rows that carry a gold value (labels, or numbers for scores)."""
    if gold_field not in frame.columns:
        raise ConfigError(
            f"Label field {gold_field!r} is not in the data; columns found: {list(frame.columns)}"
        )
    rows = frame[frame[gold_field].notna() & frame[pred_column].notna()]
    if labels:
        return classification_metrics(
            rows[gold_field].astype(str).tolist(), rows[pred_column].astype(str).tolist(), labels
        )
    return regression_metrics(rows[gold_field].astype(np.float64).to_numpy(), rows[pred_column].to_numpy())


def run_evaluate(cfg: Config, run_dir: str | None = None) -> dict[str, Any]:
    """Classify the labelled data (resumable, like any run), then score each prediction column."""
    from curator import pipeline

    started = time.perf_counter()
    data = cfg.evaluate.data or cfg.dataset.path
    name = "+".join(cfg.classifier)
    root = absolute(cfg.output.path or os.path.join("outputs", "evaluate", cfg.dataset.name, name))
    run = pipeline.run(runs.inner_config(cfg, data, root, cfg.classifier))
    frame = runs.read_outputs(root, cfg.output.storage_options)
    classifiers = build_classifiers(cfg.classifier, cfg.dataset.text_field, cfg.inference)
    results = {
        clf.name: score(frame, cfg.evaluate.label_field, clf.label_column or clf.pred_column, clf.labels)
        for clf in classifiers
    }
    for clf in classifiers:
        cost = run["classifiers"].get(clf.name) or {}
        results[clf.name]["docs_per_task_second"] = cost.get("docs_per_task_second")
    summary = {
        "task": "evaluate",
        "data": data,
        "label_field": cfg.evaluate.label_field,
        "read": run["read"],
        "quarantined": run["quarantined"],
        "output_path": root,
        "classifiers": results,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return finish(summary, [run_dir], cfg.quiet)
