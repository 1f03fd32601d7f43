"""Truncation follows the reference: each family reads as many tokens as NeMo Curator / CrossFit (or
sentence-transformers) would, derived from the tokenizer and backbone config, unless max_length is set.

Every test runs a document longer than 512 tokens through a shipped classifier config (the YAML the
pipeline uses) pointed at a tiny checkpoint, and counts the tokens the model received.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DebertaV2Config,
    DebertaV2Model,
    RobertaConfig,
)

from curator import pipeline
from curator.classifiers.api import classifier_config
from curator.classifiers.base import DistributedDataClassifier
from curator.classifiers.registry import build_classifier
from curator.classifiers.sequence import SequenceClassifier
from curator.config import InferenceConfig
from curator.errors import ConfigError, UserError
from curator.inference.engine import RunStats
from curator.models.limits import (
    position_limit,
    reference_max_length,
    sentence_transformers_max_length,
)
from tests.conftest import reference_scores, save_tiny_bert
from tests.fixtures_deberta import (
    QUALITY_LABELS,
    TINY_DEBERTA,
    write_mixin_checkpoint,
    write_prompt_task_checkpoint,
    write_tokenizer,
)
from tests.fixtures_llm import save_guard_head

SENTENCE = "Whisk two eggs with sugar, fold in the flour; the vet said 42 puppies need 7 vaccinations. "
LONG = SENTENCE * 200  # 18,000 characters: past 512 tokens (and past 4096 for the LLM) in every tokenizer
SHORT = "The home team won the final."
# A token budget that holds a whole long document, so one row is one batch.
INFERENCE = InferenceConfig(token_budget=8192)


def build(name: str, **overrides: Any) -> DistributedDataClassifier:
    """A shipped classifier config with overrides, built as the pipeline builds it."""
    return build_classifier(name, classifier_config(name, **overrides), "text", INFERENCE)


def tokens_read(clf: DistributedDataClassifier, text: str = LONG) -> tuple[int, dict[str, Any]]:
    """How many tokens the model received for `text` (the engine's count), and the columns."""
    stats = RunStats()
    columns = clf.predict([text], stats)
    return stats.real_tokens, columns


def drop_model_max_length(folder: Path) -> None:
    """Make the tokenizer's limit unset, as deberta-v3-base ships it (HF then reports ~1e30)."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.pop("model_max_length", None)
    path.write_text(json.dumps(config))


# ---- the rule ------------------------------------------------------------------------------------
def test_the_rule_is_crossfits(tmp_path: Path, minilm_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)  # model_max_length 512
    assert reference_max_length(tokenizer, BertConfig(max_position_embeddings=300)) == 512
    write_tokenizer(tmp_path / "unset")
    drop_model_max_length(tmp_path / "unset")
    unset = AutoTokenizer.from_pretrained(tmp_path / "unset")
    assert unset.model_max_length > 1e5  # Hugging Face's "no limit" sentinel
    assert reference_max_length(unset, BertConfig(max_position_embeddings=300)) == 300
    # RoBERTa numbers positions after the padding index: 514 embeddings hold 512 tokens
    assert position_limit(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512
    with pytest.raises(ConfigError, match="max_length"):
        reference_max_length(unset, None)


def test_sentence_transformers_rule(tmp_path: Path, minilm_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = BertConfig(max_position_embeddings=512)
    assert sentence_transformers_max_length(minilm_path, tokenizer, config) == 256
    # without sentence_bert_config.json: the smaller of the tokenizer's and the backbone's limits
    assert (
        sentence_transformers_max_length(tmp_path, tokenizer, BertConfig(max_position_embeddings=128)) == 128
    )


# ---- BERT-family sequence classifiers -------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sequence(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    return save_tiny_bert(
        tmp_path_factory.mktemp("tiny-sequence"),
        BertForSequenceClassification,
        minilm_path,
        seed=5,
        num_labels=3,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )


def sequence_clf(folder: Path, **settings: Any) -> DistributedDataClassifier:
    return SequenceClassifier(
        "toxicity", model=str(folder), pred_column="pred", inference=INFERENCE, **settings
    )


def test_sequence_classifier_reads_the_tokenizers_limit(tiny_sequence: Path) -> None:
    assert tokens_read(sequence_clf(tiny_sequence))[0] == 512  # MiniLM's tokenizer: model_max_length 512
    assert tokens_read(sequence_clf(tiny_sequence, max_length=100))[0] == 100  # the override wins
    probs = sequence_clf(tiny_sequence, keep_prob=True, prob_column="p").predict([LONG])["p"]
    capped = sequence_clf(tiny_sequence, keep_prob=True, prob_column="p", max_length=512).predict([LONG])["p"]
    np.testing.assert_array_equal(probs[0], capped[0])


def test_sequence_classifier_falls_back_to_the_backbone_positions(tmp_path: Path, minilm_path: Path) -> None:
    folder = save_tiny_bert(
        tmp_path / "short-positions",
        BertForSequenceClassification,
        minilm_path,
        num_labels=2,
        id2label={0: "no", 1: "yes"},
        label2id={"no": 0, "yes": 1},
        max_position_embeddings=384,
    )
    drop_model_max_length(folder)
    assert tokens_read(sequence_clf(folder))[0] == 384  # no tokenizer limit: max_position_embeddings


# ---- FineWeb-Edu regression ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fineweb_edu", "fineweb_mixtral_edu"])
def test_fineweb_reads_512_like_the_model_card(name: str, tiny_fineweb: Path) -> None:
    clf = build(name, model=str(tiny_fineweb))
    read, columns = tokens_read(clf)
    assert read == 512
    expected = np.clip(reference_scores(tiny_fineweb, [LONG]), 0, 5)  # the card: truncation at 512
    np.testing.assert_allclose(columns[clf.pred_column], expected, atol=1e-4, rtol=0)
    assert tokens_read(build(name, model=str(tiny_fineweb), max_length=64))[0] == 64


# ---- DeBERTa mixin (domain, quality, content type) -----------------------------------------------
def save_deberta_backbone(folder: Path, positions: int = 512) -> Path:
    """A tiny DeBERTa-v2 backbone like deberta-v3-base, with `positions` max_position_embeddings."""
    vocab_size = write_tokenizer(folder)
    DebertaV2Model(
        DebertaV2Config(vocab_size=vocab_size, **{**TINY_DEBERTA, "max_position_embeddings": positions})
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_quality(tmp_path_factory: pytest.TempPathFactory) -> Path:
    backbone = save_deberta_backbone(tmp_path_factory.mktemp("deberta"))
    return write_mixin_checkpoint(tmp_path_factory.mktemp("quality"), backbone, QUALITY_LABELS, seed=2)


@pytest.mark.parametrize("name", ["quality", "content_type", "domain"])
def test_mixin_classifiers_read_512_not_1024(name: str, tiny_quality: Path) -> None:
    """quality and content_type once read 1024 tokens; NeMo Curator and the cards read 512."""
    clf = build(name, model=str(tiny_quality), keep_prob=True)
    read, columns = tokens_read(clf)
    assert read == 512
    assert len(LONG[: clf.max_chars]) > 1000  # the max_chars cut still leaves a document past 512 tokens
    at_512 = build(name, model=str(tiny_quality), keep_prob=True, max_length=512).predict([LONG])
    at_1024 = build(name, model=str(tiny_quality), keep_prob=True, max_length=1024)
    assert tokens_read(at_1024)[0] == 1024  # relative positions can read more: the override wins
    prob = clf.prob_column
    np.testing.assert_array_equal(columns[prob][0], at_512[prob][0])
    assert not np.allclose(columns[prob][0], at_1024.predict([LONG])[prob][0], atol=1e-4)


def test_mixin_limit_comes_from_the_backbone_when_the_tokenizer_sets_none(tmp_path: Path) -> None:
    backbone = save_deberta_backbone(tmp_path / "backbone", positions=384)
    folder = write_mixin_checkpoint(tmp_path / "quality", backbone, QUALITY_LABELS)
    drop_model_max_length(folder)  # as microsoft/deberta-v3-base's tokenizer_config.json
    assert tokens_read(build("quality", model=str(folder)))[0] == 384


# ---- prompt task and complexity ------------------------------------------------------------------
def test_prompt_task_reads_512(tmp_path: Path) -> None:
    backbone = save_deberta_backbone(tmp_path / "backbone")
    folder = write_prompt_task_checkpoint(tmp_path / "prompt-task", backbone)
    clf = build("prompt_task_complexity", model=str(folder))
    read, columns = tokens_read(clf)
    assert read == 512  # the 2000-character cut leaves ~1250 tokens here
    at_900 = build("prompt_task_complexity", model=str(folder), max_length=900)
    read_900, longer = tokens_read(at_900)
    assert read_900 == 900
    assert columns["prompt_complexity_score"][0] != longer["prompt_complexity_score"][0]


# ---- zero-shot (sentence-transformers) -----------------------------------------------------------
def test_zero_shot_reads_sentence_transformers_max_seq_length() -> None:
    clf = build("zero_shot_domain")
    assert tokens_read(clf)[0] == 256  # all-MiniLM-L6-v2's sentence_bert_config.json
    assert tokens_read(build("zero_shot_domain", max_length=400))[0] == 400


# ---- LLM families: NeMo Curator's own 4096 -------------------------------------------------------
@pytest.fixture(scope="module")
def guard_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_guard_head(tmp_path_factory.mktemp("guard-head"), input_dim=32)


def test_instruction_data_guard_reads_nemo_curators_4096(
    tiny_llama: Path, tiny_adapter: Path, guard_head: Path
) -> None:
    settings = dict(model=str(guard_head), base_model=str(tiny_llama), adapter=str(tiny_adapter))
    clf = build("instruction_data_guard", **settings)
    assert AutoTokenizer.from_pretrained(tiny_llama).model_max_length > 1e5  # as Llama Guard's: unset
    assert tokens_read(clf)[0] == 4096
    assert tokens_read(build("instruction_data_guard", max_length=600, **settings))[0] == 600


def test_aegis_reads_nemo_curators_4096(tiny_llama: Path, tiny_adapter: Path) -> None:
    settings = dict(
        model=str(tiny_adapter), base_model=str(tiny_llama), generation="reference", max_new_tokens=2
    )
    assert (
        tokens_read(build("aegis", **settings))[0] == 4096
    )  # prompt + document, cut at 6000 characters first
    assert tokens_read(build("aegis", max_length=3000, **settings))[0] == 3000


def test_shipped_configs_derive_the_limit_instead_of_typing_it() -> None:
    folder = Path(str(resources.files("curator.conf") / "classifier"))
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    assert len(names) >= 13
    assert {name: classifier_config(name).max_length for name in names} == dict.fromkeys(names)


def test_max_length_beyond_the_models_positions_fails_with_the_setting_named(
    make_config, docs_dir: Path
) -> None:
    """Every document longer than the model's 512 positions was quarantined with an IndexError."""
    cfg = make_config(f"dataset.path={docs_dir}", "classifier.zero_shot_domain.max_length=1024")
    with pytest.raises(UserError, match=r"domain\.max_length=1024 is more than the 512 token positions"):
        pipeline.run(cfg)
