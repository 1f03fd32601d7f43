"""Sequence-classification checkpoints: built offline, loaded strictly, equal to transformers' own path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertForSequenceClassification,
)

from curator.classifiers.sequence import SequenceClassifier, labels_from_config
from curator.config import InferenceConfig
from tests.conftest import DOCS, save_tiny_bert

LABELS = ["High", "Medium", "Low"]


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    return save_tiny_bert(
        tmp_path_factory.mktemp("tiny-seq"),
        BertForSequenceClassification,
        minilm_path,
        seed=1,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={n: i for i, n in enumerate(LABELS)},
    )


def test_labels_follow_label2id_order(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"label2id": {"b": 1, "a": 0, "c": 2}}))
    assert labels_from_config(tmp_path) == ["a", "b", "c"]


def test_predictions_equal_the_transformers_reference(tiny_classifier: Path) -> None:
    texts = [text for _, text in DOCS] + ["tiny", "a much longer document " * 40]
    reference = AutoModelForSequenceClassification.from_pretrained(tiny_classifier).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier)
    with torch.no_grad():
        batch = tokenizer(texts, padding="longest", truncation=True, max_length=128, return_tensors="pt")
        expected = torch.softmax(reference(**batch).logits, dim=-1).numpy()
    clf = SequenceClassifier(
        "q",
        model=str(tiny_classifier),
        pred_column="quality_pred",
        score_column="quality_score",
        prob_column="quality_prob",
        keep_prob=True,
        max_length=128,
        inference=InferenceConfig(token_budget=256),
    )
    out = clf.predict(texts)
    assert clf.labels == LABELS
    assert list(out["quality_pred"]) == [LABELS[i] for i in expected.argmax(1)]
    np.testing.assert_allclose(np.stack(out["quality_prob"]), expected, atol=1e-5)
    assert clf.last_stats.batches > 1  # the budget really split the rows
