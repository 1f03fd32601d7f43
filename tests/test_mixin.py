"""NVIDIA's DeBERTa mixin classifiers (domain, quality, content type): built offline, loaded strictly,
equal to the model card's own code on look-alike checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import numpy as np
import pandas as pd
import pytest
import torch
from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from curator import pipeline
from curator.classifiers.base import ERROR_COLUMN
from curator.classifiers.mixin import MixinClassifier
from curator.config import InferenceConfig
from curator.models.hub import ModelNotAvailableError
from curator.models.mixin import MixinDeberta, backbone_config, build_backbone
from curator.models.weights import CheckpointFormatError, CheckpointMismatchError
from tests.conftest import DOCS, compose_config, renamed_key_copy
from tests.fixtures_deberta import (
    DOMAIN_LABELS,
    QUALITY_LABELS,
    save_backbone,
    texts_of_many_lengths,
    write_mixin_checkpoint,
)

MAX_LENGTH = 48  # below the longest test documents: truncation is exercised too


class CardModel(nn.Module, PyTorchModelHubMixin):
    """The model cards' class, as published (its base model is a local folder here)."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.model = AutoModel.from_pretrained(config["base_model"])
        self.dropout = nn.Dropout(config["fc_dropout"])
        self.fc = nn.Linear(self.model.config.hidden_size, len(config["id2label"]))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        dropped = self.dropout(features)
        outputs = self.fc(dropped)
        return torch.softmax(outputs[:, 0, :], dim=1)


def card_predict(
    folder: Path, texts: list[str], max_length: int = MAX_LENGTH
) -> tuple[list[str], np.ndarray]:
    """The model cards' usage snippet: one padded batch, argmax → config.id2label."""
    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = CardModel.from_pretrained(folder).eval()
    inputs = tokenizer(texts, return_tensors="pt", padding="longest", truncation=True, max_length=max_length)
    with torch.no_grad():
        probs = model(inputs["input_ids"], inputs["attention_mask"])
    return [config.id2label[i] for i in probs.argmax(dim=1).tolist()], probs.numpy()


def make_classifier(folder: Path, **kwargs: object) -> MixinClassifier:
    """A domain-style classifier over `folder`, with a token budget small enough to make many batches."""
    options = dict(
        pred_column="domain_pred",
        prob_column="domain_prob",
        keep_prob=True,
        max_length=MAX_LENGTH,
        inference=InferenceConfig(token_budget=64),
    )
    return MixinClassifier("domain", model=str(folder), **{**options, **kwargs})


@pytest.fixture(scope="session")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_backbone(tmp_path_factory.mktemp("tiny-deberta"))


@pytest.fixture(scope="session")
def domain_ckpt(tmp_path_factory: pytest.TempPathFactory, backbone: Path) -> Path:
    return write_mixin_checkpoint(tmp_path_factory.mktemp("domain"), backbone, DOMAIN_LABELS, seed=1)


@pytest.fixture(scope="session")
def quality_ckpt(tmp_path_factory: pytest.TempPathFactory, backbone: Path) -> Path:
    return write_mixin_checkpoint(tmp_path_factory.mktemp("quality"), backbone, QUALITY_LABELS, seed=2)


@pytest.fixture()
def empty_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No network and an empty Hugging Face cache (the hub edge is the only thing replaced)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return tmp_path / "hf" / "hub"


def test_fixture_tokenizer_loads_as_deberta_v2(domain_ckpt: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(domain_ckpt)
    assert type(tokenizer).__name__ == "DebertaV2Tokenizer"
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id) == (0, 1, 2)
    assert tokenizer.unk_token_id == 3 and tokenizer.model_max_length == 512
    ids = tokenizer("Hello world")["input_ids"]
    assert ids[0] == 1 and ids[-1] == 2


def test_fixture_is_what_the_mixin_writes(domain_ckpt: Path, tmp_path: Path) -> None:
    CardModel.from_pretrained(domain_ckpt).save_pretrained(tmp_path)
    assert (tmp_path / "config.json").read_text() == (domain_ckpt / "config.json").read_text()
    config = json.loads((domain_ckpt / "config.json").read_text())
    assert "num_labels" not in config and "architectures" not in config and config["config_path"] is None
    ours, theirs = (
        load_file(str(domain_ckpt / "model.safetensors")),
        load_file(str(tmp_path / "model.safetensors")),
    )
    assert sorted(ours) == sorted(theirs) and {"fc.weight", "fc.bias"} <= set(ours)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_predictions_equal_the_model_card(domain_ckpt: Path) -> None:
    texts = texts_of_many_lengths()
    expected_labels, expected = card_predict(domain_ckpt, texts)
    clf = make_classifier(domain_ckpt)
    out = clf.predict(texts)
    assert clf.labels == DOMAIN_LABELS
    assert list(out["domain_pred"]) == expected_labels
    assert len(set(expected_labels)) > 1  # the tiny model tells documents apart
    np.testing.assert_allclose(np.stack(out["domain_prob"]), expected, atol=1e-5)
    assert clf.last_stats.batches > 3  # the token budget split and sorted the rows


def test_classify_partition_equals_the_model_card(domain_ckpt: Path) -> None:
    texts = texts_of_many_lengths()
    frame = pd.DataFrame({"text": texts, ERROR_COLUMN: None})
    frame.loc[2, ERROR_COLUMN] = "bad record"  # quarantined rows get nulls and are never classified
    out = make_classifier(domain_ckpt, score_column="domain_score").classify_partition(frame)
    good = [i for i in range(len(texts)) if i != 2]
    labels, probs = card_predict(domain_ckpt, [texts[i] for i in good])
    assert out["domain_pred"].isna().tolist() == [i == 2 for i in range(len(texts))]
    assert out.loc[good, "domain_pred"].tolist() == labels
    np.testing.assert_allclose(np.stack(out.loc[good, "domain_prob"]), probs, atol=1e-5)
    np.testing.assert_allclose(out.loc[good, "domain_score"], probs.max(axis=1), atol=1e-5)
    assert out["domain_score"].dtype == np.float32


def test_pipeline_run_with_the_domain_config(
    make_config, docs_dir: Path, tmp_path: Path, domain_ckpt: Path
) -> None:
    cfg = make_config(
        f"dataset.path={docs_dir}",
        "classifier=domain",
        f"classifier.domain.model={domain_ckpt}",
        f"classifier.domain.max_length={MAX_LENGTH}",
        "classifier.domain.keep_prob=true",
        "inference.token_budget=64",
    )
    summary = pipeline.run(cfg)
    frame = pd.concat(pd.read_json(p, lines=True) for p in sorted((tmp_path / "out").glob("*.jsonl*")))
    frame = frame.set_index("id").loc[[f"d{i}" for i in range(len(DOCS))]]
    labels, probs = card_predict(domain_ckpt, [text for _, text in DOCS])
    assert frame["domain_pred"].tolist() == labels
    np.testing.assert_allclose(np.stack(frame["domain_prob"]), probs, atol=1e-5)
    assert summary["written"] == len(DOCS)


def test_labels_follow_label2id_not_the_alphabet(quality_ckpt: Path) -> None:
    config = json.loads((quality_ckpt / "config.json").read_text())
    assert list(config["label2id"]) == sorted(QUALITY_LABELS) != QUALITY_LABELS  # sorted keys on disk
    texts = texts_of_many_lengths()
    labels, probs = card_predict(quality_ckpt, texts)
    clf = make_classifier(quality_ckpt, pred_column="quality_pred", prob_column="quality_prob")
    out = clf.predict(texts)
    assert clf.labels == QUALITY_LABELS
    assert list(out["quality_pred"]) == labels
    np.testing.assert_allclose(np.stack(out["quality_prob"]), probs, atol=1e-5)


def test_a_wrong_key_is_an_error_naming_it(domain_ckpt: Path, tmp_path: Path) -> None:
    old = "model.encoder.layer.0.attention.self.query_proj.weight"
    broken = renamed_key_copy(domain_ckpt, tmp_path / "broken", old, old.replace("query", "qeury"))
    with pytest.raises(CheckpointMismatchError) as err:
        make_classifier(broken).predict(["some text"])
    assert "qeury_proj" in str(err.value) and "query_proj" in str(err.value)


def test_pickle_checkpoint_only_with_allow_pickle(domain_ckpt: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    shutil.copytree(domain_ckpt, folder)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "model.pth")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointFormatError, match="allow_pickle"):
        make_classifier(folder).predict(["some text"])
    texts = texts_of_many_lengths()
    expected = make_classifier(domain_ckpt).predict(texts)
    out = make_classifier(folder, allow_pickle=True).predict(texts)
    assert list(out["domain_pred"]) == list(expected["domain_pred"])
    np.testing.assert_allclose(np.stack(out["domain_prob"]), np.stack(expected["domain_prob"]), atol=1e-6)


def test_a_missing_backbone_fails_at_construction_naming_it(
    backbone: Path, tmp_path: Path, empty_hub_cache: Path
) -> None:
    folder = write_mixin_checkpoint(
        tmp_path / "c", backbone, QUALITY_LABELS, base_model="acme/no-such-backbone"
    )
    with pytest.raises(ModelNotAvailableError) as err:
        make_classifier(folder)
    message = str(err.value)
    assert "acme/no-such-backbone" in message and "base_model" in message and "config.json" in message
    missing_path = write_mixin_checkpoint(tmp_path / "d", backbone, QUALITY_LABELS, base_model="/no/such/dir")
    with pytest.raises(ModelNotAvailableError, match="/no/such/dir"):
        make_classifier(missing_path)


def test_base_model_override_wins(
    backbone: Path, tmp_path: Path, quality_ckpt: Path, empty_hub_cache: Path
) -> None:
    folder = tmp_path / "renamed"
    shutil.copytree(quality_ckpt, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "base_model": "acme/no-such-backbone"}))
    texts = texts_of_many_lengths()
    out = make_classifier(folder, base_model=str(backbone)).predict(texts)
    labels, probs = card_predict(quality_ckpt, texts)
    assert list(out["domain_pred"]) == labels
    np.testing.assert_allclose(np.stack(out["domain_prob"]), probs, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "vocab"),
    [
        ("microsoft/deberta-v3-base", 128100),
        ("microsoft/DeBERTa-v3-base", 128100),  # as the prompt classifier's config spells it
        ("Microsoft/mDeBERTa-v3-base", 251000),
    ],
)
def test_shipped_backbone_config_when_not_cached(name: str, vocab: int, empty_hub_cache: Path) -> None:
    config = backbone_config(name)
    assert config.model_type == "deberta-v2" and config.vocab_size == vocab
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert (config.intermediate_size, config.max_position_embeddings) == (3072, 512)
    assert config.relative_attention and config.position_buckets == 256 and config.share_att_key
    assert config.pos_att_type == ["p2c", "c2p"] and config.norm_rel_ebd == "layer_norm"
    assert not config.position_biased_input and config.type_vocab_size == 0
    assert config.layer_norm_eps == 1e-7 and config.hidden_act == "gelu"
    with torch.device("meta"):  # the published layout, without allocating 184M parameters
        shapes = {k: tuple(v.shape) for k, v in MixinDeberta(build_backbone(config), 26).state_dict().items()}
    assert shapes["model.embeddings.word_embeddings.weight"] == (vocab, 768)
    assert shapes["model.encoder.rel_embeddings.weight"] == (512, 768)
    assert shapes["fc.weight"] == (26, 768)
    assert not any("position_embeddings" in k or "token_type" in k for k in shapes)


def test_cached_backbone_config_wins_over_the_shipped_copy(empty_hub_cache: Path, backbone: Path) -> None:
    repo = empty_hub_cache / "models--microsoft--deberta-v3-base"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copy(backbone / "config.json", snapshot / "config.json")
    assert backbone_config("microsoft/deberta-v3-base").hidden_size == 32
    assert backbone_config("microsoft/DeBERTa-v3-base").hidden_size == 32  # cache looked up in lower case too


@pytest.mark.parametrize(
    ("option", "model", "pred", "prob", "keep_prob", "max_chars", "max_length"),
    [
        ("domain", "nvidia/domain-classifier", "domain_pred", "domain_prob", False, 2000, None),
        (
            "multilingual_domain",
            "nvidia/multilingual-domain-classifier",
            "domain_pred",
            "domain_prob",
            False,
            2000,
            None,
        ),
        ("quality", "nvidia/quality-classifier-deberta", "quality_pred", "quality_prob", True, 6000, None),
        (
            "content_type",
            "nvidia/content-type-classifier-deberta",
            "content_pred",
            "content_prob",
            False,
            5000,
            None,
        ),
    ],
)
def test_configs_match_nemo_curator(
    option: str, model: str, pred: str, prob: str, keep_prob: bool, max_chars: int, max_length: None
) -> None:
    """max_length is derived from the checkpoint (512 for all four, as NeMo Curator), not typed."""
    cfg = compose_config([f"classifier={option}"]).classifier[option]
    assert (cfg.family, cfg.model, cfg.pred_column, cfg.prob_column) == ("deberta_mixin", model, pred, prob)
    assert (cfg.keep_prob, cfg.max_chars, cfg.max_length, cfg.batch_size) == (
        keep_prob,
        max_chars,
        max_length,
        256,
    )


def test_python_api_builds_the_same_classifier(quality_ckpt: Path) -> None:
    from curator.classifiers import QualityClassifier

    api = QualityClassifier(model=str(quality_ckpt), max_length=MAX_LENGTH, device_type="cpu")
    assert isinstance(api.classifier, MixinClassifier) and api.labels == QUALITY_LABELS
    texts = texts_of_many_lengths()
    out = api.classifier.predict(texts)
    labels, probs = card_predict(quality_ckpt, texts)
    assert list(out["quality_pred"]) == labels
    np.testing.assert_allclose(np.stack(out["quality_prob"]), probs, atol=1e-5)  # on by default
