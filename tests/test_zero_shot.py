"""The zero-shot classifier on the real all-MiniLM-L6-v2: embeddings, predictions, label sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curator.classifiers.zero_shot import ZeroShotClassifier
from curator.config import InferenceConfig
from curator.inference.engine import BatchPlan, run_batches
from curator.inference.tokens import tokenize
from tests.conftest import DOCS, MINILM, compose_config


def domain_classifier(**overrides) -> ZeroShotClassifier:
    cfg = compose_config().classifier["zero_shot_domain"]
    kwargs = dict(
        model=MINILM,
        labels=[(lab.name, lab.description) for lab in cfg.labels],
        temperature=cfg.temperature,
        pred_column="domain_pred",
        score_column="domain_score",
        prob_column="domain_prob",
        max_chars=cfg.max_chars,
        max_length=cfg.max_length,
    )
    kwargs.update(overrides)
    return ZeroShotClassifier("zero_shot_domain", **kwargs)


def test_embeddings_equal_sentence_transformers(minilm_path) -> None:
    from sentence_transformers import SentenceTransformer

    texts = [text for _, text in DOCS] + ["short", "a" * 3000]
    reference = SentenceTransformer(str(minilm_path), device="cpu").encode(texts, convert_to_numpy=True)
    model, tokenizer, device = domain_classifier()._runtime()
    ids = tokenize(tokenizer, texts, 256)
    ours = run_batches(ids, model.embed, BatchPlan(token_budget=512, max_rows=4), 0, device)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_obvious_documents_get_their_domain() -> None:
    out = domain_classifier(keep_prob=True).predict([text for _, text in DOCS])
    assert list(out["domain_pred"]) == [label for label, _ in DOCS]
    assert out["domain_score"].dtype == np.float32
    probs = np.stack(out["domain_prob"])
    assert probs.shape == (len(DOCS), 26)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs.max(1), out["domain_score"])


def test_batching_does_not_change_results() -> None:
    texts = [text for _, text in DOCS] * 3
    small = domain_classifier(inference=InferenceConfig(token_budget=64), batch_size=2).predict(texts)
    large = domain_classifier(inference=InferenceConfig(token_budget=100000), batch_size=256).predict(texts)
    assert list(small["domain_pred"]) == list(large["domain_pred"])
    np.testing.assert_allclose(small["domain_score"], large["domain_score"], atol=1e-5)


def test_temperature_sharpens_the_distribution() -> None:
    texts = [DOCS[0][1]]
    sharp = domain_classifier(temperature=0.01).predict(texts)["domain_score"][0]
    flat = domain_classifier(temperature=1.0).predict(texts)["domain_score"][0]
    assert sharp > flat
    assert flat < 0.1  # 26 labels with cosine similarities in [-1, 1]: close to uniform


def test_user_defined_label_set() -> None:
    clf = ZeroShotClassifier(
        "mood",
        model=MINILM,
        pred_column="mood",
        labels=[("happy", "joyful, delighted, great news"), ("sad", "grief, loss, heartbroken, crying")],
    )
    out = clf.predict(
        ["We won the lottery and everyone is celebrating!", "She cried at her father's funeral."]
    )
    assert list(out["mood"]) == ["happy", "sad"]
    assert clf.labels == ["happy", "sad"]


def test_label_sets_are_validated() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        ZeroShotClassifier("x", model=MINILM, labels=[("a", ""), ("a", "")], pred_column="p")
    with pytest.raises(ValueError, match="at least one label"):
        ZeroShotClassifier("x", model=MINILM, labels=[], pred_column="p")


def test_different_label_sets_do_not_share_a_cached_model() -> None:
    a = ZeroShotClassifier("x", model=MINILM, labels=[("a", "cats"), ("b", "dogs")], pred_column="p")
    b = ZeroShotClassifier("x", model=MINILM, labels=[("a", "cars"), ("b", "boats")], pred_column="p")
    assert a.model_key() != b.model_key()
    assert not torch.equal(a._runtime()[0].label_embeddings, b._runtime()[0].label_embeddings)
