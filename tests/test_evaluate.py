"""task=evaluate and the metrics behind it, checked against hand computations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curator import pipeline
from curator.errors import ConfigError
from curator.training.metrics import classification_metrics, regression_metrics
from tests.conftest import DOCS, write_jsonl


def test_classification_metrics_by_hand() -> None:
    gold = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", "a"]
    m = classification_metrics(gold, pred, ["a", "b", "c"])
    assert m["accuracy"] == 0.6  # 3 of 5
    assert m["macro_recall"] == 0.5  # (1/2 + 2/2 + 0/1) / 3
    # precision a 1/2, b 2/3, c 0 → F1 a 0.5, b 0.8, c 0
    assert m["macro_f1"] == round((0.5 + 0.8 + 0) / 3, 4)
    assert m["confusion"] == {"labels": ["a", "b", "c"], "matrix": [[1, 1, 0], [0, 2, 0], [1, 0, 0]]}
    assert m["per_label"]["b"] == {"support": 2, "recall": 1.0, "f1": 0.8}


def test_regression_metrics_by_hand() -> None:
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.4, 2.0, 2.0]))
    assert m["mae"] == round(1.4 / 3, 4) and m["rmse"] == round(np.sqrt((0.16 + 0 + 1) / 3), 4)
    assert m["rounded_agreement"] == round(2 / 3, 4)  # rounded: 1|1 agree, 2|2 agree, 3|2 differ


def test_evaluate_task_scores_the_classifier(tmp_path: Path, make_config) -> None:
    """The real MiniLM gets these six right; one gold label is deliberately wrong (Sports → Games)."""
    records = [{"id": f"e{i}", "text": text, "gold": label} for i, (label, text) in enumerate(DOCS)]
    records[0]["gold"] = "Games"
    data = write_jsonl(tmp_path / "gold.jsonl", records)
    run_dir = tmp_path / "run"
    cfg = make_config("task=evaluate", f"evaluate.data={data}", "evaluate.label_field=gold")
    summary = pipeline.run(cfg, run_dir=str(run_dir))
    m = summary["classifiers"]["zero_shot_domain"]
    assert m["rows"] == 6 and summary["read"] == 6
    assert m["accuracy"] == round(5 / 6, 4)
    # recall: Games 0/1, the five others 1/1; Sports was never gold, so it is not averaged
    assert m["macro_recall"] == round(5 / 6, 4) and m["macro_f1"] == round(5 / 6, 4)
    labels, matrix = m["confusion"]["labels"], np.array(m["confusion"]["matrix"])
    assert matrix[labels.index("Games"), labels.index("Sports")] == 1 and np.trace(matrix) == 5
    assert json.loads((run_dir / "summary.json").read_text())["classifiers"]["zero_shot_domain"] == m
    assert "Confusion matrix" in (run_dir / "report.html").read_text()


def test_evaluate_without_the_label_field_fails_clearly(tmp_path: Path, make_config, tiny_model) -> None:
    data = write_jsonl(tmp_path / "gold.jsonl", [{"id": "x", "text": "Some text."}])
    with pytest.raises(ConfigError, match="Label field 'label' is not in the data"):
        pipeline.run(make_config(tiny_model, "task=evaluate", f"evaluate.data={data}"))
