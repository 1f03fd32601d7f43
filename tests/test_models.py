"""Model loading: strict safetensors, sharded checkpoints, offline resolution with clear errors."""

from __future__ import annotations

import importlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from curator.models.encoder import load_encoder
from curator.models.hub import ModelNotAvailableError, resolve_model
from curator.models.llm import load_causal_lm
from curator.models.weights import CheckpointMismatchError, read_safetensors, skip_random_init
from tests.conftest import renamed_key_copy


def test_embedded_model_resolves_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()


def test_missing_hub_model_offline_says_what_and_how(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelNotAvailableError) as err:
        resolve_model("nvidia/some-model-that-is-not-cached")
    message = str(err.value)
    assert "nvidia/some-model-that-is-not-cached" in message
    assert "local folder" in message and "HF_TOKEN" in message


@pytest.mark.parametrize(
    ("error", "says"),
    [
        ("RepositoryNotFoundError", "no such repository, or a private or gated one: check the name"),
        ("GatedRepoError", "it is gated: request access on its Hugging Face page"),
    ],
)
def test_a_hub_refusal_says_whether_the_name_may_be_wrong(
    error: str, says: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The Hub answers 401 for a mistyped name as for a gated model: that was reported as gated only.
    (The Hub cannot be reached here: its answer is raised where the download would be.)"""
    import huggingface_hub
    import huggingface_hub.errors

    http = importlib.import_module(huggingface_hub.errors.Response.__module__.split(".")[0])  # httpx(2)
    response = http.Response(401, request=http.Request("GET", "https://huggingface.co/api/models/x"))

    def refused(*args, **kwargs):
        raise getattr(huggingface_hub.errors, error)("401 Client Error", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refused)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelNotAvailableError, match=re.escape(says)):
        resolve_model("nvidia/domian-classifier")


def test_missing_local_path_is_named() -> None:
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        resolve_model("./no/such/model")


def test_tiny_bert_loads_strictly(tiny_bert: Path) -> None:
    model = load_encoder(tiny_bert)
    saved = load_file(str(tiny_bert / "model.safetensors"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_key_mismatch_is_an_error_naming_the_keys(tiny_bert: Path, tmp_path: Path) -> None:
    old = "encoder.layer.0.attention.self.query.weight"
    broken = renamed_key_copy(tiny_bert, tmp_path / "broken", old, old.replace("query", "qeury"))
    with pytest.raises(CheckpointMismatchError) as err:
        load_encoder(broken)
    assert "encoder.layer.0.attention.self.query.weight" in str(err.value)
    assert "qeury" in str(err.value)


def test_sharded_checkpoint_reads_like_a_single_file(tiny_bert: Path, tmp_path: Path) -> None:
    sharded = tmp_path / "sharded"
    shutil.copytree(tiny_bert, sharded)
    state = load_file(str(sharded / "model.safetensors"))
    (sharded / "model.safetensors").unlink()
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in halves.items():
        save_file({k: state[k] for k in part}, str(sharded / name))
    index = {"metadata": {}, "weight_map": {k: n for n, ks in halves.items() for k in ks}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    assert read_safetensors(sharded).keys() == state.keys()
    single, split = load_encoder(tiny_bert), load_encoder(sharded)
    for key, value in single.state_dict().items():
        assert torch.equal(value, split.state_dict()[key])


def test_pickle_only_checkpoint_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickle"
    shutil.copytree(tiny_bert, folder)
    (folder / "model.safetensors").unlink()
    torch.save({}, folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="pickle checkpoints are not loaded"):
        load_encoder(folder)


TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


@pytest.mark.parametrize(
    ("factory", "config"),
    [
        ("AutoModelForSequenceClassification", transformers.BertConfig(**TINY)),
        ("AutoModelForSequenceClassification", transformers.RobertaConfig(**TINY)),
        ("AutoModelForSequenceClassification", transformers.XLMRobertaConfig(**TINY)),
        ("AutoModel", transformers.DebertaV2Config(**TINY, relative_attention=True, position_buckets=16)),
        ("AutoModelForCausalLM", transformers.LlamaConfig(**TINY, num_key_value_heads=2, vocab_size=64)),
    ],
    ids=["bert", "roberta", "xlm-roberta", "deberta-v2", "llama"],
)
def test_skipping_random_init_keeps_every_buffer_a_checkpoint_lacks(factory: str, config: object) -> None:
    """Only saved tensors may be left uninitialised: position ids, token types, rotary frequencies are not."""
    build = getattr(transformers, factory).from_config
    reference = build(config)
    with skip_random_init():
        skipped = build(config)
    saved = set(skipped.state_dict())
    unsaved = {name: b for name, b in skipped.named_buffers() if name not in saved}
    expected = dict(reference.named_buffers())
    assert set(dict(skipped.named_parameters())) | set(dict(skipped.named_buffers())) == set(
        dict(reference.named_parameters())
    ) | set(expected)
    assert unsaved  # each of these models keeps some (BERT: position ids, token types; Llama: rotary)
    for name, buffer in unsaved.items():
        assert torch.equal(buffer, expected[name]), name


def test_tied_embeddings_load_from_the_one_tensor_safetensors_keeps(tmp_path: Path) -> None:
    """`tie_word_embeddings`: HF saves embed_tokens only; lm_head is that tensor, as in from_pretrained."""
    config = transformers.LlamaConfig(**TINY, num_key_value_heads=2, vocab_size=64, tie_word_embeddings=True)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "tied")
    assert "lm_head.weight" not in read_safetensors(tmp_path / "tied")
    model = load_causal_lm(tmp_path / "tied")
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "tied").eval()
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0)
    state = load_file(tmp_path / "tied" / "model.safetensors")
    del state["model.embed_tokens.weight"]  # neither name of the tied pair: still an error naming both
    save_file(state, tmp_path / "tied" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError, match=r"missing \['lm_head\.weight', 'model\.embed_tokens"):
        load_causal_lm(tmp_path / "tied")
