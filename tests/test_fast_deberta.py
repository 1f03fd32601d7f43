"""The lean DeBERTa forward: Hugging Face's numbers for every DeBERTa family, with clean fallbacks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2Model

from curator.classifiers.sequence import build_sequence_model
from curator.inference.engine import pad_batch, quantize_int8
from curator.models.fast_deberta import (
    FastDebertaEncoder,
    FastDebertaSequenceClassifier,
    lean_deberta,
    log_bucket,
    unsupported,
)
from curator.models.mixin import load_mixin_classifier, load_multihead_classifier
from tests.fixtures_deberta import (
    DOMAIN_LABELS,
    PROMPT_HEADS,
    QUALITY_LABELS,
    TINY_DEBERTA,
    write_mixin_checkpoint,
    write_prompt_task_checkpoint,
    write_tokenizer,
)

# deberta-v3-base's kind of attention with 8 buckets over 32 positions: distances past 4 are
# log-bucketed and past ~32 clamped, so short test rows reach both regimes.
SMALL_BUCKETS = dict(position_buckets=8, max_relative_positions=32)
ATOL = 1e-5


def save_variant(folder: Path, seed: int = 0, **overrides: object) -> Path:
    """A tiny DebertaV2Model backbone like the fixtures' (tokenizer included), with config `overrides`."""
    vocab_size = write_tokenizer(folder)
    torch.manual_seed(seed)
    DebertaV2Model(DebertaV2Config(vocab_size=vocab_size, **{**TINY_DEBERTA, **overrides})).save_pretrained(
        folder
    )
    return folder


def ragged(lengths: list[int], seed: int = 0, vocab: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of these lengths, [CLS]=1 first, right-padded with 0: padding and rows of different lengths."""
    rng = np.random.default_rng(seed)
    return pad_batch([[1, *rng.integers(5, vocab, size=n - 1).tolist()] for n in lengths], pad_id=0)


SHORT = [1, 3, 9, 17, 40]  # one-token row, rows under and over the small bucket range
LONG = [600, 5, 140, 300]  # past the fixtures' 128 exact distances and past the 256-bucket clamp


@pytest.fixture(scope="session")
def backbones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """deberta-v3-base-like (the fixtures'), an mdeberta-like one (other seed and vocabulary weights),
    one with small buckets, one without a shared attention key (separate position projections)."""
    make = lambda name, **kw: save_variant(tmp_path_factory.mktemp(name), **kw)  # noqa: E731
    return {
        "v3": make("v3"),
        "mdeberta": make("mdeberta", seed=7),
        "small-buckets": make("small", seed=2, **SMALL_BUCKETS),
        "separate-keys": make("separate", seed=3, share_att_key=False, position_buckets=16),
    }


def both(load, folder: Path):
    """The family's loader on the lean path and on Hugging Face's modules."""
    return load(folder, fast=True).eval(), load(folder, fast=False).eval()


@pytest.mark.parametrize("backbone", ["v3", "mdeberta", "small-buckets", "separate-keys"])
@pytest.mark.parametrize(
    ("family", "lengths"),
    [("domain", SHORT), ("quality", LONG), ("multilingual domain", SHORT), ("prompt task", [*SHORT, 260])],
)
def test_every_family_equals_hugging_face(
    family: str, lengths: list[int], backbone: str, backbones: dict[str, Path], tmp_path: Path
) -> None:
    if family == "prompt task":
        folder = write_prompt_task_checkpoint(tmp_path / "ckpt", backbones[backbone], seed=5)
        load = lambda f, fast: load_multihead_classifier(f, list(PROMPT_HEADS.values()), fast=fast)  # noqa: E731
    else:
        labels = QUALITY_LABELS if family == "quality" else DOMAIN_LABELS
        source = backbones["mdeberta" if family == "multilingual domain" else backbone]
        folder = write_mixin_checkpoint(tmp_path / "ckpt", source, labels, seed=4)
        load = lambda f, fast: load_mixin_classifier(f, fast=fast)  # noqa: E731
    lean, reference = both(load, folder)
    backbone_module = lean.backbone if family == "prompt task" else lean.model
    assert isinstance(backbone_module, FastDebertaEncoder)
    input_ids, mask = ragged(lengths, seed=len(lengths), vocab=lean.config.vocab_size)
    with torch.inference_mode():
        ours, theirs = lean(input_ids, mask), reference(input_ids, mask)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=ATOL)
    assert ours.shape == theirs.shape and float(theirs.std(0).max()) > 1e-3  # rows differ: a real check


@pytest.mark.parametrize("overrides", [{}, SMALL_BUCKETS, {"pos_att_type": ["c2p"], "share_att_key": False}])
def test_hidden_states_equal_on_real_tokens_and_first_only(overrides: dict) -> None:
    torch.manual_seed(1)
    config = DebertaV2Config(vocab_size=300, **{**TINY_DEBERTA, **overrides})
    model = DebertaV2Model(config).eval()
    lean = lean_deberta(lambda encoder: encoder, config, model.state_dict(), "")
    input_ids, mask = ragged([1, 33, 520, 7], seed=2)
    with torch.inference_mode():
        theirs = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        ours, first = lean(input_ids, mask), lean(input_ids, mask, first_only=True)
    real = mask.bool()
    np.testing.assert_allclose(ours[real].numpy(), theirs[real].numpy(), atol=ATOL)
    assert first.shape == (4, 1, config.hidden_size)
    np.testing.assert_allclose(first[:, 0].numpy(), theirs[:, 0].numpy(), atol=ATOL)
    assert torch.isfinite(ours).all()  # padding rows too: mean pooling multiplies them by 0


def test_log_buckets_equal_hugging_face() -> None:
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    relative = torch.arange(-700, 701)
    for buckets, max_position in ((256, 512), (8, 32), (16, 512)):
        assert torch.equal(
            log_bucket(relative, buckets, max_position),
            make_log_bucket_position(relative, buckets, max_position),
        )


def test_sequence_classification_deberta_runs_lean(tmp_path: Path) -> None:
    torch.manual_seed(4)
    config = DebertaV2Config(vocab_size=300, num_labels=5, **{**TINY_DEBERTA, **SMALL_BUCKETS})
    DebertaV2ForSequenceClassification(config).save_pretrained(tmp_path)
    lean, reference = both(lambda f, fast: build_sequence_model(f, fast=fast), tmp_path)
    assert isinstance(lean, FastDebertaSequenceClassifier)
    input_ids, mask = ragged([2, 30, 11])
    with torch.inference_mode():
        theirs = reference(input_ids=input_ids, attention_mask=mask).logits
        np.testing.assert_allclose(lean(input_ids, mask).numpy(), theirs.numpy(), atol=ATOL)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"conv_kernel_size": 3}, "convolution"),
        ({"embedding_size": 16}, "embedding projection"),
        ({"hidden_act": "silu"}, "activation"),
        ({"pos_att_type": ["p2p", "c2p"]}, "pos_att_type"),
    ],
)
def test_unrecognised_configs_fall_back_to_hugging_face(
    overrides: dict, reason: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backbone = save_variant(tmp_path / "backbone", **overrides)
    folder = write_mixin_checkpoint(tmp_path / "ckpt", backbone, QUALITY_LABELS)
    with caplog.at_level(logging.INFO, logger="curator.models.fast_deberta"):
        model = load_mixin_classifier(folder, fast=True)
    assert reason in unsupported(model.config)
    assert isinstance(model.model, DebertaV2Model)
    assert "Lean DeBERTa forward not used" in caplog.text and reason in caplog.text
    input_ids, mask = ragged([3, 12], vocab=model.config.vocab_size)
    with torch.inference_mode():
        np.testing.assert_allclose(
            model(input_ids, mask).numpy(), load_mixin_classifier(folder)(input_ids, mask).numpy(), atol=ATOL
        )


def test_tensors_that_do_not_fit_fall_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    config = DebertaV2Config(vocab_size=300, **TINY_DEBERTA)
    state = DebertaV2Model(config).state_dict()
    del state["encoder.rel_embeddings.weight"]
    with caplog.at_level(logging.INFO, logger="curator.models.fast_deberta"):
        assert lean_deberta(lambda encoder: encoder, config, state, "") is None
    assert "tensors differ" in caplog.text


def test_int8_quantises_the_lean_projections(backbones: dict[str, Path], tmp_path: Path) -> None:
    folder = write_mixin_checkpoint(tmp_path / "ckpt", backbones["v3"], DOMAIN_LABELS, seed=4)
    lean = load_mixin_classifier(folder, fast=True)
    input_ids, mask = ragged([4, 20, 35, 9, 14, 28], seed=9, vocab=lean.config.vocab_size)
    with torch.inference_mode():
        reference = lean(input_ids, mask)
        quantized = quantize_int8(lean, torch.device("cpu"))
        approx = quantized(input_ids, mask)
    assert "quantized" in type(quantized.model.layers[0].qkv).__module__
    assert float((approx - reference).abs().max()) < 0.2  # int8 rounding, not a different model
