"""task=train: embed a labelled dataset, fit a head, write it as a classifier (folder + YAML), report.

Labels may be a teacher's column in a previous run's output folder (distillation): the summary then
says how often the head agrees with the teacher on held-out rows and how much faster it is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from curator.classifiers.head import HeadSpec
from curator.config import Config, TrainConfig
from curator.io.paths import absolute
from curator.training import runs
from curator.training.fit import fit_head, predict, save_head, split
from curator.training.metrics import classification_metrics, regression_metrics
from curator.training.report import finish

VALIDATION = "_validation.parquet"  # beside the cached embeddings: held-out rows, gold and prediction


@dataclasses.dataclass
class Trained:
    """A fitted head with its data: what the folder must reproduce."""

    spec: HeadSpec
    head: torch.nn.Module
    held: np.ndarray  # validation mask over the labelled rows
    outputs: np.ndarray  # the in-memory head's outputs for the validation rows
    predictions: list[Any]  # labels (classification) or scores (regression) of the validation rows
    metrics: dict[str, Any]


def resolve_kind(kind: str, values: pd.Series) -> str:
    """auto: float values are a regression target, anything else (strings, ints, bools) labels."""
    if kind != "auto":
        return kind
    return "regression" if pd.api.types.is_float_dtype(values) else "classification"


def train_head(rows: pd.DataFrame, t: TrainConfig, label_field: str) -> Trained:
    """Split, fit and score a head on labelled rows that carry their embeddings."""
    x = np.stack(rows[runs.EMBEDDING].to_numpy()).astype(np.float32)
    kind = resolve_kind(t.kind, rows[label_field])
    if kind == "classification":
        gold = rows[label_field].astype(str).to_numpy()
        labels = sorted(set(gold))
        y = np.searchsorted(labels, gold)
        held = split(y, len(rows), t.validation, t.seed)
        spec = HeadSpec(kind, t.encoder, x.shape[1], labels, t.hidden)
    else:
        y = rows[label_field].astype(np.float64).to_numpy()
        held = split(None, len(rows), t.validation, t.seed)
        spec = HeadSpec(
            kind, t.encoder, x.shape[1], hidden=t.hidden, score_range=[float(y.min()), float(y.max())]
        )
    head = fit_head(spec, x[~held], y[~held], t.epochs, t.weight_decay, t.seed, t.class_weights)
    outputs = predict(head, spec, x[held])
    if kind == "classification":
        predictions = [labels[i] for i in outputs.argmax(axis=1)] if len(outputs) else []
        metrics = classification_metrics(gold[held], predictions, labels)
    else:
        predictions = outputs.tolist()
        metrics = regression_metrics(y[held], outputs)
    return Trained(spec, head, held, outputs, predictions, metrics)


def write_yaml(output: Path, name: str, folder: Path, spec: HeadSpec, t: TrainConfig) -> Path:
    """The classifier's YAML, so that `classifier=<name>` runs it (with `output` on Hydra's search path)."""
    columns = (
        {"pred_column": f"{name}_pred", "score_column": f"{name}_score", "prob_column": f"{name}_prob"}
        if spec.kind == "classification"
        else {"pred_column": f"{name}_score"}
    )
    values = {
        "family": "head",
        "model": str(folder),
        **columns,
        "max_chars": t.max_chars,
        "max_length": t.max_length,
        "batch_size": 256,
    }
    lines = [
        f"# @package classifier.{name}",
        f"# A {spec.kind} head on {spec.encoder} trained by task=train (see {folder}/head.json).",
        *(f"{key}: {json.dumps(value)}" for key, value in values.items()),
    ]
    path = output / "classifier" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_train(cfg: Config, run_dir: str | None = None) -> dict[str, Any]:
    """Embed (resumable), fit, write the classifier and report validation scores (and distillation)."""
    from curator import pipeline

    started, t = time.perf_counter(), cfg.train
    data = t.data or cfg.dataset.path
    root = absolute(cfg.output.path or os.path.join("outputs", "train", str(t.name)))
    inner = runs.inner_config(cfg, data, root, {"embed": runs.embedding_classifier(cfg)})
    embedded = pipeline.run(inner)
    rows = runs.labelled_rows(
        runs.read_outputs(root, cfg.output.storage_options), t.label_field, cfg.dataset.id_field
    )
    trained = train_head(rows, t, t.label_field)
    output = Path(absolute(t.output))
    folder = output / str(t.name)
    summary: dict[str, Any] = {
        "task": "train",
        "name": t.name,
        "kind": trained.spec.kind,
        "data": data,
        "label_field": t.label_field,
        "encoder": t.encoder,
        "rows": {"read": embedded["read"], "quarantined": embedded["quarantined"], "labelled": len(rows)},
        "embedding": {"output_path": root, "units": embedded["units"]},  # cached per input unit, resumable
        "train_rows": int((~trained.held).sum()),
        "validation_rows": int(trained.held.sum()),
        "validation": trained.metrics,
    }
    source = runs.teacher(data, t.label_field, cfg.dataset.storage_options)
    if source:
        student = runs.per_document(embedded["classifiers"].get("embed"))
        teacher = runs.per_document(source)
        agreement = trained.metrics.get("accuracy", trained.metrics.get("rounded_agreement"))
        summary["distillation"] = {
            **source,
            "agreement": agreement,
            "student_seconds_per_document": student,
            "speed_ratio": round(teacher / student, 2) if teacher and student else None,
        }
    if "://" not in root:  # held-out rows with gold and predicted values, for error analysis
        held = rows[trained.held]
        columns = {"id": held[cfg.dataset.id_field].astype(str), "gold": held[t.label_field]}
        pd.DataFrame({**columns, "pred": trained.predictions}).to_parquet(os.path.join(root, VALIDATION))
    save_head(folder, trained.spec, trained.head, {"training": summary})
    summary["classifier_folder"] = str(folder)
    summary["classifier_yaml"] = str(write_yaml(output, str(t.name), folder, trained.spec, t))
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return finish(summary, [str(folder), run_dir], cfg.quiet)
