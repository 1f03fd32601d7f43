"""AEGIS and Instruction Data Guard on tiny Llama Guard look-alikes: equal to NeMo Curator's own path
(PEFT adapter on the base model, its prompt, generate, its parser), end to end through the pipeline."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from curator import pipeline
from curator.classifiers.aegis import AegisClassifier
from curator.classifiers.aegis_prompt import AEGIS_LABELS, UNSAFE_CATEGORIES, format_aegis, parse_aegis_reply
from curator.classifiers.aegis_reply import raw_reply
from curator.classifiers.base import ERROR_COLUMN
from curator.classifiers.instruction_data_guard import InstructionDataGuardClassifier
from curator.config import InferenceConfig
from curator.inference.engine import BatchPlan, RunStats, run_batches
from curator.models.hub import ModelNotAvailableError
from curator.models.llm import AdapterError, load_causal_lm, load_llm_tokenizer
from tests.conftest import renamed_key_copy, write_jsonl
from tests.fixtures_llm import (
    DOCS,
    TRIGGER,
    rig_llama,
    save_guard_head,
    save_lora_adapter,
)

# Two ~2,000-token prompts per batch: several batches form, and generation is charged to the budget.
BUDGET = 2 * (2000 + 100)


@pytest.fixture(scope="module")
def rigged(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> tuple[Path, Path]:
    """A base that answers safe / unsafe O3 by the trigger word, and a small adapter on it."""
    base = rig_llama(tiny_llama, tmp_path_factory.mktemp("rigged-guard"))
    return base, save_lora_adapter(base, tmp_path_factory.mktemp("rigged-adapter"), b_std=1e-3)


@pytest.fixture(scope="module")
def guard_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_guard_head(tmp_path_factory.mktemp("instruction-data-guard"), input_dim=32)


def peft_reference(base: Path, adapter: Path) -> tuple[torch.nn.Module, object]:
    """NeMo Curator's model and tokenizer: PeftModel over the base; left padding with the unk token."""
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()
    tokenizer = AutoTokenizer.from_pretrained(base, padding_side="left")
    tokenizer.pad_token = tokenizer.unk_token
    return model, tokenizer


def reference_replies(base: Path, adapter: Path, docs: list[str], max_chars: int = 6000) -> list[str]:
    """NeMo Curator's AEGIS path per document: cut, prompt, generate 100 tokens, decode, cut at the prompt."""
    model, tokenizer = peft_reference(base, adapter)
    replies = []
    for doc in docs:
        prompt = format_aegis(doc[:max_chars])
        batch = tokenizer([prompt], return_tensors="pt", truncation=True, max_length=4096)
        with torch.no_grad():
            generated = model.generate(**batch, max_new_tokens=100, pad_token_id=0)
        replies.append(tokenizer.batch_decode(generated, skip_special_tokens=True)[0][len(prompt) :])
    return replies


def aegis(base: Path, adapter: Path, **kwargs: object) -> AegisClassifier:
    settings = dict(keep_raw_pred=True, inference=InferenceConfig(token_budget=BUDGET))
    return AegisClassifier("aegis", model=str(adapter), base_model=str(base), **{**settings, **kwargs})


# ---- prompt and parser ---------------------------------------------------------------------------


def test_prompt_is_nemo_curators_template_byte_for_byte() -> None:
    prompt = format_aegis("DOC")
    assert prompt.startswith(
        "[INST] Task: Check if there is unsafe content in 'User' messages in conversations according our "
        "safety policy with the below categories.\n\n    <BEGIN UNSAFE CONTENT CATEGORIES>\n    O1: Violence."
    )
    assert (
        "categorie described above.\n\n    <END UNSAFE CONTENT CATEGORIES>\n\n    <BEGIN CONVERSATION>"
        in prompt
    )
    assert "\n\n    User: DOC\n\n<END CONVERSATION>\n\n    Provide your safety assessment for User" in prompt
    assert prompt.endswith("a comma-separated list of violated categories. [/INST]")
    headers = [line.split(":")[0] for line in UNSAFE_CATEGORIES.splitlines() if line[:1] == "O"]
    assert headers == AEGIS_LABELS[2:]
    # Pinned once checked against upstream: nemo_curator/utils/aegis_utils.py rebuilt around this text
    # has the published file's exact length (10,123 characters) and its format_aegis gives this prompt.
    assert len(UNSAFE_CATEGORIES) == 8721
    assert hashlib.sha256(prompt.encode()).hexdigest() == PROMPT_SHA256


PROMPT_SHA256 = "7ecdd24bc81ce3898b79ccfeb8f0e2ba9e586221955f78d9b01391e76666ef2e"


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("safe", "safe"),
        (" safe", "safe"),
        ("safe \n", "safe"),
        ("safe\nO3", "safe"),
        ("unsafe\nO3", "O3"),
        (" unsafe\nO3", "O3"),
        ("unsafe\n O10 ", "O10"),
        ("unsafe\nO13\nmore text", "O13"),
        ("unsafe\nO14", "unknown"),
        ("unsafe\nO3,O5", "unknown"),  # a list of categories is not one label
        ("unsafe\no3", "unknown"),
        ("unsafe", "unknown"),
        ("unsafe\n", "unknown"),
        ("", "unknown"),
        ("\nsafe", "unknown"),  # the first line decides
        ("Safe", "unknown"),
        ("safe.", "unknown"),
        ("unsafe\r\nO3", "O3"),
    ],
)
def test_reply_parser_follows_upstream(reply: str, label: str) -> None:
    assert parse_aegis_reply(reply) == label


def test_raw_reply_is_decoded_in_context_like_upstream(tiny_llama: Path) -> None:
    """Upstream decodes prompt + reply and cuts at the prompt's length; decoding only the new tokens
    loses the space SentencePiece writes before the first word (same label, different raw text)."""
    tokenizer = load_llm_tokenizer(tiny_llama)
    prompt = format_aegis("hello")
    ids = tokenizer(prompt)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == prompt  # the prompt round-trips
    for pieces, expected in ((["▁safe"], " safe"), (["▁unsafe", "<0x0A>", "O", "3"], " unsafe\nO3")):
        new = np.asarray([*tokenizer.convert_tokens_to_ids([*pieces, "</s>"]), 0, 0])  # EOS, then pads
        assert raw_reply(tokenizer, prompt, ids, new) == expected
        alone = tokenizer.decode(new.tolist(), skip_special_tokens=True)
        assert alone == expected.lstrip(" ") and parse_aegis_reply(alone) == parse_aegis_reply(expected)


# ---- the LLM: offline build and LoRA merge -------------------------------------------------------


def test_tokenizer_pads_left_with_unk(tiny_llama: Path) -> None:
    tokenizer = load_llm_tokenizer(tiny_llama)
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token == tokenizer.unk_token == "<unk>" and tokenizer.pad_token_id == 0


def assert_same_logits(model: torch.nn.Module, reference: PeftModel, ids: torch.Tensor) -> None:
    """Equal to PEFT's own merge, and to the unmerged adapter up to float32 rounding (1e-5 of the scale)."""
    with torch.no_grad():
        unmerged = reference(input_ids=ids).logits  # W x + s B A x
        logits = model(input_ids=ids).logits
        scale = float(unmerged.abs().max())
        np.testing.assert_allclose(logits, unmerged, atol=1e-5 * scale, rtol=0)
        np.testing.assert_allclose(
            logits, reference.merge_and_unload()(input_ids=ids).logits, atol=1e-6, rtol=0
        )


def test_merged_lora_equals_peft(tiny_llama: Path, tiny_adapter: Path) -> None:
    ids = torch.randint(3, 1000, (2, 40), generator=torch.Generator().manual_seed(0))
    reference, _ = peft_reference(tiny_llama, tiny_adapter)
    with torch.no_grad():
        plain = load_causal_lm(tiny_llama)(input_ids=ids).logits
        assert (plain - reference(input_ids=ids).logits).abs().max() > 1e-2  # the adapter matters
    assert_same_logits(load_causal_lm(tiny_llama, tiny_adapter), reference, ids)


def test_rank_stabilised_lora_scale(tiny_llama: Path, tiny_adapter: Path, tmp_path: Path) -> None:
    adapter = shutil.copytree(tiny_adapter, tmp_path / "rslora")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_rslora": True}))
    reference, _ = peft_reference(tiny_llama, adapter)
    assert_same_logits(load_causal_lm(tiny_llama, adapter), reference, torch.arange(3, 43).unsqueeze(0))


def test_saved_embedding_layers_replace_the_base_ones(
    tiny_llama: Path, tiny_adapter: Path, tmp_path: Path
) -> None:
    """PEFT saves the whole lm_head when it is a target; loading puts it under the LoRA, as here."""
    adapter = shutil.copytree(tiny_adapter, tmp_path / "new-head")
    state = load_file(str(adapter / "adapter_model.safetensors"))
    key = "base_model.model.lm_head.base_layer.weight"
    state[key] = torch.randn(state[key].shape, generator=torch.Generator().manual_seed(1))
    save_file(state, str(adapter / "adapter_model.safetensors"))
    reference, _ = peft_reference(tiny_llama, adapter)
    assert_same_logits(load_causal_lm(tiny_llama, adapter), reference, torch.arange(3, 43).unsqueeze(0))


@pytest.mark.parametrize(
    ("option", "value"), [("use_dora", True), ("bias", "all"), ("modules_to_save", ["score"])]
)
def test_adapter_options_that_change_the_forward_are_refused(
    tiny_llama: Path, tiny_adapter: Path, tmp_path: Path, option: str, value: object
) -> None:
    adapter = shutil.copytree(tiny_adapter, tmp_path / "odd")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, option: value}))
    with pytest.raises(AdapterError, match=option):
        load_causal_lm(tiny_llama, adapter)


def test_adapter_keys_that_fit_no_module_are_named(
    tiny_llama: Path, tiny_adapter: Path, tmp_path: Path
) -> None:
    key = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"
    shifted = key.replace("layers.1", "layers.7")
    adapter = renamed_key_copy(tiny_adapter, tmp_path / "shifted", key, shifted, "adapter_model.safetensors")
    with pytest.raises(AdapterError) as err:
        load_causal_lm(tiny_llama, adapter)
    message = str(err.value)
    assert "layers.7.self_attn.q_proj.lora_A.weight" in message  # the key that fits nowhere
    assert "layers.1.self_attn.q_proj.weight" in message  # and the weight left with half a LoRA pair


# ---- AEGIS ---------------------------------------------------------------------------------------


def test_replies_and_labels_equal_nemo_curators_path(tiny_llama: Path, tiny_adapter: Path) -> None:
    # cut to max_chars before wrapping; then truncated at 4,096 tokens: the prompt loses its end
    docs = [*DOCS, "word " * 1500, "x" * 7000]
    expected = reference_replies(tiny_llama, tiny_adapter, docs)
    clf = aegis(tiny_llama, tiny_adapter)
    out = clf.predict(docs)
    assert list(out["_aegis_raw_pred"]) == expected and expected[-1] == ""  # nothing after a cut prompt
    assert list(out["aegis_pred"]) == [parse_aegis_reply(r) for r in expected]
    assert clf.labels == AEGIS_LABELS and set(out["aegis_pred"]) <= set(AEGIS_LABELS)
    stats = clf.last_stats
    assert stats.batches >= len(docs) // 2 and 0 < stats.real_tokens <= stats.padded_tokens


def test_rigged_model_gives_safe_and_unsafe_verdicts(rigged: tuple[Path, Path]) -> None:
    base, adapter = rigged
    docs = [
        "A recipe for lemon cake.",
        f"I saw a {TRIGGER} at the zoo.",
        "Nothing to see here. " * 20,
        f"{'padding words ' * 30} and then a {TRIGGER}",
        f"{'a' * 50} {TRIGGER}",  # the trigger lies past max_chars: cut before the prompt, so safe
    ]
    out = aegis(base, adapter, max_chars=40).predict(docs)
    assert list(out["aegis_pred"]) == ["safe", "O3", "safe", "safe", "safe"]
    out = aegis(base, adapter).predict(docs)
    assert list(out["aegis_pred"]) == ["safe", "O3", "safe", "O3", "O3"]
    assert list(out["_aegis_raw_pred"]) == [" safe", " unsafe\nO3", " safe", " unsafe\nO3", " unsafe\nO3"]
    assert list(out["_aegis_raw_pred"]) == reference_replies(base, adapter, docs)


def test_empty_and_bad_partitions_get_typed_empty_columns(rigged: tuple[Path, Path]) -> None:
    clf = aegis(*rigged)
    frame = pd.DataFrame({"text": ["x", "y"], ERROR_COLUMN: ["bad json", "bad json"]})
    out = clf.classify_partition(frame)
    assert out["aegis_pred"].isna().all() and out["_aegis_raw_pred"].isna().all()
    assert str(out["aegis_pred"].dtype) == "string"
    assert list(clf.meta(frame).columns) == [*frame.columns, "aegis_pred", "_aegis_raw_pred"]


def test_raw_reply_column_only_when_asked(rigged: tuple[Path, Path]) -> None:
    clf = aegis(*rigged, keep_raw_pred=False)
    assert list(clf.output_types()) == ["aegis_pred"]
    assert list(clf.predict(["hello"])) == ["aegis_pred"]
    renamed = aegis(*rigged, raw_pred_column="reply")
    assert list(renamed.output_types()) == ["aegis_pred", "reply"]


def test_missing_gated_base_says_request_access_and_hf_token(
    tiny_adapter: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    secret = "hf_do_not_print_me"
    with pytest.raises(ModelNotAvailableError) as err:
        AegisClassifier("aegis", model=str(tiny_adapter), base_model="meta-llama/LlamaGuard-7b", token=secret)
    message = str(err.value)
    assert "meta-llama/LlamaGuard-7b" in message and "request access" in message and "HF_TOKEN" in message
    assert secret not in message


def test_pipeline_keeps_safe_documents(make_config, rigged: tuple[Path, Path], tmp_path: Path) -> None:
    base, adapter = rigged
    texts = ["Bake the bread.", f"The {TRIGGER} escaped.", "Go for a walk.", f"Feed the {TRIGGER}.", "Read."]
    write_jsonl(tmp_path / "in" / "docs.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    cfg = make_config(
        "classifier=aegis",
        f"classifier.aegis.model={adapter}",
        f"classifier.aegis.base_model={base}",
        "classifier.aegis.keep_raw_pred=true",
        "filter=safe",
        "filter.write_filtered=true",
        f"inference.token_budget={BUDGET}",
        f"dataset.path={tmp_path / 'in'}",
    )
    summary = pipeline.run(cfg)
    assert (summary["read"], summary["written"], summary["filtered"]) == (5, 3, 2)
    assert summary["labels"]["aegis_pred"] == {"safe": 3, "O3": 2}
    kept = pd.read_json(tmp_path / "out" / "docs.jsonl", lines=True, dtype=False)
    dropped = pd.read_json(tmp_path / "out" / "_filtered" / "docs.jsonl", lines=True, dtype=False)
    assert list(kept["id"]) == ["d0", "d2", "d4"] and set(kept["aegis_pred"]) == {"safe"}
    assert list(dropped["_aegis_raw_pred"]) == [" unsafe\nO3"] * 2


def test_shipped_configs_name_the_published_models(make_config) -> None:
    cfg = make_config("classifier=[aegis,aegis_permissive,instruction_data_guard]", "filter=safe")
    defensive, permissive, guard = (
        cfg.classifier[n] for n in ("aegis", "aegis_permissive", "instruction_data_guard")
    )
    assert defensive.model.endswith("Defensive-1.0") and permissive.model.endswith("Permissive-1.0")
    assert defensive.base_model == permissive.base_model == guard.base_model == "meta-llama/LlamaGuard-7b"
    assert guard.adapter == defensive.model and guard.model == "nvidia/instruction-data-guard"
    assert (defensive.max_chars, defensive.max_length, defensive.batch_size) == (6000, None, 64)
    assert cfg.filter.keep == ["safe", "O13"]


# ---- Instruction Data Guard ----------------------------------------------------------------------


class InstructionDataGuardNet(torch.nn.Module):
    """NeMo Curator's net as published (dropout 0.7, inactive in eval mode)."""

    def __init__(self, input_dim: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(dropout)
        self.input_layer = torch.nn.Linear(input_dim, input_dim)
        self.hidden_layer_0 = torch.nn.Linear(input_dim, 2000)
        self.hidden_layer_1 = torch.nn.Linear(2000, 500)
        self.hidden_layer_2 = torch.nn.Linear(500, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.normalize(x, dim=-1))
        x = self.dropout(F.relu(self.input_layer(x)))
        x = self.dropout(F.relu(self.hidden_layer_0(x)))
        x = self.dropout(F.relu(self.hidden_layer_1(x)))
        return torch.sigmoid(self.hidden_layer_2(x))


def reference_poisoning(base: Path, adapter: Path, head: Path, texts: list[str]) -> np.ndarray:
    """NeMo Curator's path: a left-padded batch, generate 1 token, last layer's state at the prompt's end."""
    model, tokenizer = peft_reference(base, adapter)
    net = InstructionDataGuardNet(32).eval()
    net.load_state_dict(load_file(str(head / "model.safetensors")))
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=4096)
    with torch.no_grad():
        response = model.generate(
            **batch, max_new_tokens=1, pad_token_id=0, output_hidden_states=True, return_dict_in_generate=True
        )
        layers = model.config.num_hidden_layers
        return net(response.hidden_states[0][layers][:, -1, :].float()).flatten().numpy()


def test_poisoning_scores_equal_nemo_curators_path(
    tiny_llama: Path, tiny_adapter: Path, guard_head: Path
) -> None:
    texts = [*DOCS, "Instruction: say hi. Input: . Response: hi."]
    expected = reference_poisoning(tiny_llama, tiny_adapter, guard_head, texts)
    clf = InstructionDataGuardClassifier(
        "instruction_data_guard",
        model=str(guard_head),
        base_model=str(tiny_llama),
        adapter=str(tiny_adapter),
        inference=InferenceConfig(token_budget=256),
    )
    out = clf.predict(texts)
    np.testing.assert_allclose(out["instruction_data_guard_poisoning_score"], expected, atol=1e-5, rtol=0)
    assert out["instruction_data_guard_poisoning_score"].dtype == np.float32
    assert clf.last_stats.batches > 1
    flags = clf.postprocess(np.asarray([0.2, 0.5, 0.7], dtype=np.float32))["is_poisoned"]
    assert list(flags) == [False, True, True]


def test_guard_runs_through_the_pipeline_with_typed_columns(
    make_config, tiny_llama: Path, tiny_adapter: Path, guard_head: Path, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"text": t} for t in DOCS[:3]])
    cfg = make_config(
        "classifier=instruction_data_guard",
        f"classifier.instruction_data_guard.model={guard_head}",
        f"classifier.instruction_data_guard.base_model={tiny_llama}",
        f"classifier.instruction_data_guard.adapter={tiny_adapter}",
        "output.format=parquet",
        f"dataset.path={tmp_path / 'in'}",
    )
    summary = pipeline.run(cfg)
    frame = pd.read_parquet(tmp_path / "out" / "a.parquet")
    assert summary["written"] == 3
    scores = frame["instruction_data_guard_poisoning_score"]
    assert str(scores.dtype) == "float32" and str(frame["is_poisoned"].dtype) in {"bool", "boolean"}
    assert (frame["is_poisoned"] == (scores >= 0.5)).all()
    assert sum(summary["labels"]["is_poisoned"].values()) == 3


# ---- the engine's generation budget --------------------------------------------------------------


def test_generated_tokens_are_charged_to_the_budget_and_ids_stay_integers() -> None:
    ids = [[5] * 10 for _ in range(6)]
    widths: list[int] = []

    def forward(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        widths.append(input_ids.shape[0])
        return input_ids[:, -2:] + 2**24  # 2**24 + 5 has no float32: integer outputs must stay integers

    plan = BatchPlan(token_budget=60, max_rows=64, extra_tokens=20)
    stats = RunStats()
    out = run_batches(ids, forward, plan, pad_id=0, device=torch.device("cpu"), left_pad=True, stats=stats)
    assert widths == [2, 2, 2]  # 2 rows x (10 + 20) = 60 tokens; without the extra, 6 rows would fit
    assert out.dtype == np.int64 and (out == 2**24 + 5).all()


def test_the_aegis_seed_example_runs_with_only_imports_changed(
    rigged: tuple[Path, Path], tmp_path: Path
) -> None:
    from distributed import Client, LocalCluster

    from curator.classifiers import AegisClassifier as SeedAegisClassifier
    from curator.datasets import DocumentDataset
    from curator.utils.file_utils import get_all_files_paths_under

    base, adapter = rigged
    texts = ["Bake the bread.", f"The {TRIGGER} escaped.", "Go for a walk.", f"Feed the {TRIGGER}."]
    write_jsonl(tmp_path / "docs" / "a.jsonl", [{"text": t} for t in texts])
    secret = "hf_never_in_outputs"
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        # --- the seed's example (plus base_model= for the local fixture) ---
        files = get_all_files_paths_under(str(tmp_path / "docs"))
        input_dataset = DocumentDataset.read_json(files, backend="pandas")
        safety_classifier = SeedAegisClassifier(
            aegis_variant=str(adapter),
            token=secret,
            filter_by=["safe", "O13"],
            keep_raw_pred=True,
            raw_pred_column="raw_predictions",
            base_model=str(base),
        )
        result_dataset = safety_classifier(dataset=input_dataset)
        result_dataset.to_json(str(tmp_path / "safe"))
    written = pd.read_json(tmp_path / "safe" / "a.jsonl", lines=True, dtype=False)
    assert list(written["text"]) == ["Bake the bread.", "Go for a walk."]
    assert set(written["aegis_pred"]) == {"safe"} and set(written["raw_predictions"]) == {" safe"}
    assert all(secret not in p.read_text() for p in (tmp_path / "safe").rglob("*") if p.is_file())
