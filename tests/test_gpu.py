"""GPU paths (skipped without CUDA): the same predictions on CUDA, in fp32 and bf16 autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curator.classifiers.zero_shot import ZeroShotClassifier
from curator.config import InferenceConfig
from tests.conftest import DOCS, MINILM

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def classify(**inference) -> dict:
    labels = [(label, label.replace("_", " ")) for label, _ in DOCS]
    clf = ZeroShotClassifier(
        "g",
        model=MINILM,
        labels=labels,
        pred_column="p",
        score_column="s",
        inference=InferenceConfig(**inference),
    )
    return clf.predict([text for _, text in DOCS] * 20)


def test_cuda_fp32_matches_cpu() -> None:
    cpu, gpu = classify(device="cpu"), classify(device="cuda", dtype="float32")
    assert list(cpu["p"]) == list(gpu["p"])
    np.testing.assert_allclose(cpu["s"], gpu["s"], atol=1e-4)


def test_cuda_bf16_autocast_agrees_within_tolerance() -> None:
    cpu, gpu = classify(device="cpu"), classify(device="cuda")
    assert np.mean(np.asarray(cpu["p"]) == np.asarray(gpu["p"])) >= 0.95
    np.testing.assert_allclose(cpu["s"], gpu["s"], atol=0.05)


def test_cuda_budget_is_derived_from_memory() -> None:
    labels = [("a", "cats"), ("b", "dogs")]
    clf = ZeroShotClassifier(
        "g", model=MINILM, labels=labels, pred_column="p", inference=InferenceConfig(device="cuda")
    )
    model, _, device = clf._runtime()
    assert clf.token_budget(model, device, 256) > 16384
