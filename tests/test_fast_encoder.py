"""The fast BERT-family forward: same numbers as Hugging Face's modules, less work, clean fallbacks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from curator.classifiers.sequence import RegressionClassifier, SequenceClassifier, build_sequence_model
from curator.classifiers.zero_shot import ZeroShotClassifier
from curator.config import InferenceConfig
from curator.inference.engine import pad_batch, quantize_int8
from curator.inference.memory import cpu_token_budget
from curator.models.fast_encoder import (
    FastEncoder,
    FastSequenceClassifier,
    fast_encoder,
    fast_sequence_classifier,
)
from curator.models.weights import CheckpointMismatchError
from tests.conftest import DOCS, MINILM, save_tiny_bert

SHAPE = dict(
    vocab_size=300,
    hidden_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=96,
    max_position_embeddings=130,
)


def ragged_batch(seed: int = 0, rows: int = 7, vocab: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths (1 to 100 tokens), right-padded, first token a [CLS]-like id."""
    rng = np.random.default_rng(seed)
    ids = [[2, *rng.integers(5, vocab, size=int(n) - 1).tolist()] for n in rng.integers(1, 100, size=rows)]
    ids[0] = [2]  # a one-token row: attention over itself only
    return pad_batch(ids, pad_id=1)


def random_model(model_class: type, config: object, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():  # larger weights than the init so differences are not hidden by tiny values
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    return model


@pytest.mark.parametrize(
    ("model_class", "config"),
    [
        (BertForSequenceClassification, BertConfig(**SHAPE, num_labels=5)),
        (BertForSequenceClassification, BertConfig(**SHAPE, num_labels=1, hidden_act="gelu_new")),
        (RobertaForSequenceClassification, RobertaConfig(**SHAPE, num_labels=3, pad_token_id=1)),
        (XLMRobertaForSequenceClassification, XLMRobertaConfig(**SHAPE, num_labels=4, hidden_act="relu")),
    ],
    ids=["bert", "bert-gelu-tanh-regression", "roberta", "xlm-roberta-relu"],
)
def test_logits_equal_hugging_face(model_class: type, config: object) -> None:
    model = random_model(model_class, config, seed=3)
    fast = fast_sequence_classifier(model.config, model.state_dict())
    assert isinstance(fast, FastSequenceClassifier)
    input_ids, mask = ragged_batch()
    with torch.inference_mode():
        expected = model(input_ids=input_ids, attention_mask=mask).logits
        got = fast(input_ids, mask)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert expected.std() > 0.01  # the comparison is between real, distinct outputs


def test_full_hidden_states_equal_hugging_face_where_tokens_are_real() -> None:
    model = random_model(BertModel, BertConfig(**SHAPE), seed=4)
    input_ids, mask = ragged_batch(seed=1)
    with torch.inference_mode():
        expected = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        got = fast_encoder(model.config, model.state_dict())(input_ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)


def fast_bert(seed: int, labels: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A random BERT classifier's fast path and a ragged batch for it."""
    model = random_model(BertForSequenceClassification, BertConfig(**SHAPE, num_labels=labels), seed=seed)
    return (fast_sequence_classifier(model.config, model.state_dict()), *ragged_batch(seed=seed))


def test_a_row_does_not_depend_on_its_batch_neighbours() -> None:
    fast, input_ids, mask = fast_bert(seed=5, labels=3)
    with torch.inference_mode():
        together = fast(input_ids, mask)
        alone = torch.cat(
            [fast(input_ids[i : i + 1, : int(m.sum())], m[None, : int(m.sum())]) for i, m in enumerate(mask)]
        )
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "config",
    [
        BertConfig(**SHAPE, position_embedding_type="relative_key"),
        BertConfig(**SHAPE, hidden_act="silu"),
        BertConfig(**SHAPE, is_decoder=True),
    ],
    ids=["relative-positions", "other-activation", "decoder"],
)
def test_unsupported_bert_variants_fall_back(config: BertConfig) -> None:
    model = BertForSequenceClassification(config)
    assert fast_sequence_classifier(model.config, model.state_dict()) is None


def test_deberta_falls_back() -> None:
    config = DebertaV2Config(**SHAPE, num_labels=2, relative_attention=True, pos_att_type=["p2c", "c2p"])
    model = DebertaV2ForSequenceClassification(config)
    assert fast_sequence_classifier(model.config, model.state_dict()) is None


def test_int8_quantises_the_fused_projections() -> None:
    fast, input_ids, mask = fast_bert(seed=6, labels=5)
    with torch.inference_mode():
        reference = fast(input_ids, mask)
        quantized = quantize_int8(fast, torch.device("cpu"))
        approx = quantized(input_ids, mask)
    qkv = quantized.encoder.layers[0].qkv
    assert "quantized" in type(qkv).__module__
    assert (approx.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.7
    assert not torch.equal(approx, reference)  # int8 really ran


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    return save_tiny_bert(
        tmp_path_factory.mktemp("tiny-fast"), BertForSequenceClassification, minilm_path, seed=7, num_labels=4
    )


def test_classifier_fast_path_equals_hugging_face_path(tiny_classifier: Path) -> None:
    texts = [text for _, text in DOCS] + ["tiny", "", "a much longer document " * 40]
    outputs = {}
    for fast in (True, False):
        clf = SequenceClassifier(
            "c",
            model=str(tiny_classifier),
            pred_column="pred",
            keep_prob=True,
            prob_column="prob",
            max_length=128,
            inference=InferenceConfig(token_budget=300, fast_encoder=fast),
        )
        model, _, _ = clf._runtime()
        assert model.fast is fast
        outputs[fast] = clf.predict(texts)
    assert list(outputs[True]["pred"]) == list(outputs[False]["pred"])
    np.testing.assert_allclose(np.stack(outputs[True]["prob"]), np.stack(outputs[False]["prob"]), atol=1e-5)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda state: state.pop("bert.encoder.layer.1.attention.self.key.bias"), "attention.self.key.bias"),
        (lambda state: state.update(extra=torch.zeros(2)), "extra"),
        (lambda state: state.update({"classifier.bias": torch.zeros(7)}), "classifier.bias"),
    ],
    ids=["missing", "unexpected", "wrong-shape"],
)
def test_a_checkpoint_that_does_not_fit_is_still_refused_by_name(
    tiny_classifier: Path, tmp_path: Path, edit, named: str
) -> None:
    """The fast build never loads a partial checkpoint: the strict loader then refuses it, naming the key."""
    folder = tmp_path / "edited"
    shutil.copytree(tiny_classifier, folder)
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors")
    with pytest.raises((CheckpointMismatchError, RuntimeError), match=named.replace(".", r"\.")):
        build_sequence_model(folder, fast=True)


def test_the_fast_build_never_imports_hugging_faces_modelling_code(tiny_classifier: Path) -> None:
    """Seconds of every worker's start: transformers' modelling code (and torch._dynamo) stay unimported."""
    script = f"""
import sys
from curator.classifiers.sequence import SequenceClassifier
clf = SequenceClassifier("c", model={str(tiny_classifier)!r}, pred_column="p", max_length=64)
model, _, _ = clf._runtime()
assert model.fast
print(clf.predict(["a short text", "another one"])["p"])
heavy = ("transformers.modeling_utils", "transformers.models.bert.modeling_bert", "torch._dynamo")
print([name for name in heavy if name in sys.modules])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"


def test_zero_shot_fast_path_equals_hugging_face_path() -> None:
    labels = [("Science", "physics and biology"), ("Sports", "football and tennis"), ("Food", "recipes")]
    texts = [text for _, text in DOCS]
    probs = {}
    for fast in (True, False):
        clf = ZeroShotClassifier(
            "z",
            model=MINILM,
            labels=labels,
            pred_column="z",
            keep_prob=True,
            prob_column="zp",
            inference=InferenceConfig(fast_encoder=fast),
        )
        model, _, _ = clf._runtime()
        assert isinstance(model.encoder, FastEncoder) is fast
        probs[fast] = np.stack(clf.predict(texts)["zp"])
    np.testing.assert_allclose(probs[True], probs[False], atol=1e-5)


def test_cpu_budget_keeps_the_widest_activation_near_cache_size() -> None:
    minilm = BertConfig(hidden_size=384, intermediate_size=1536)
    base = BertConfig(hidden_size=768, intermediate_size=3072)
    assert cpu_token_budget(minilm, 512) == 2048
    assert cpu_token_budget(base, 512) == 1024
    assert cpu_token_budget(BertConfig(hidden_size=4096, intermediate_size=16384), 512) == 512  # one row fits
    assert cpu_token_budget(minilm, 512, dtype_bytes=2) == 4096  # bf16 activations: twice the tokens
    assert cpu_token_budget(base, 512, dtype_bytes=2) == 2048


def test_a_bf16_run_on_cpu_gets_twice_the_float32_token_budget(tiny_fineweb: Path) -> None:
    """bf16 autocast halves the activations; the budget was the float32 one (DeBERTa-v3-base in bf16 ran
    1.2x faster at 2048 tokens than at 1024 on the AMX Xeon). int8 keeps float32 activations."""
    budgets = {}
    for dtype, quantize in (("float32", None), ("bfloat16", None), ("float32", "int8")):
        clf = RegressionClassifier(
            "b", model=str(tiny_fineweb), inference=InferenceConfig(dtype=dtype, quantize=quantize)
        )
        model, _, device = clf._runtime()
        budgets[dtype, quantize] = clf.token_budget(model, device, 512)
    plain = budgets["float32", None]
    assert budgets["bfloat16", None] == 2 * plain and budgets["float32", "int8"] == plain


def test_real_minilm_tokenizer_and_weights_run_through_the_fast_path(minilm_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    model = BertModel.from_pretrained(minilm_path).eval()
    batch = tokenizer([text for _, text in DOCS], padding="longest", return_tensors="pt")
    with torch.inference_mode():
        expected = model(**batch).last_hidden_state
        got = fast_encoder(model.config, model.state_dict())(batch["input_ids"], batch["attention_mask"])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=1e-4)
