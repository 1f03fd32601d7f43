"""AEGIS's fast generation (cached prompt prefix, stop once the label is settled) against the reference
(`generate(max_new_tokens=100)` on whole prompts + NeMo Curator's decode and parser): the same labels, the
same raw replies, on random and rigged tiny Llama Guard look-alikes; its scoring mode; memory estimates;
Instruction Data Guard's single pass; and the access token kept out of everything a run writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from curator.classifiers.aegis import SCORE_COLUMN, AegisClassifier
from curator.classifiers.aegis_prompt import AEGIS_LABELS, format_aegis, parse_aegis_reply, settled_label
from curator.classifiers.aegis_reply import prompt_layout, raw_reply, shared_prefix
from curator.classifiers.instruction_data_guard import InstructionDataGuardClassifier
from curator.config import InferenceConfig
from curator.errors import ConfigError
from curator.inference.engine import pad_batch
from curator.inference.generation import FastReply, GreedyReply
from curator.inference.kv_cache import prefilled_cache
from curator.inference.memory import (
    CUDA_MEMORY_FRACTION,
    kv_bytes_per_token,
    llm_bytes_per_token,
    llm_weight_bytes,
)
from curator.inference.tokens import tokenize
from curator.models.llm import load_llm_tokenizer
from tests.conftest import write_jsonl
from tests.fixtures_llm import (
    DOCS,
    TRIGGER,
    llama_config,
    rig_llama,
    save_guard_head,
    save_lora_adapter,
)

ROOT = Path(__file__).resolve().parent.parent
# Documents of very different lengths, both verdicts of the rigged models, and one cut by max_length.
FAST_DOCS = [
    *DOCS,
    f"I saw a {TRIGGER} at the zoo.",
    "Nothing to see here. " * 40,
    f"{'padding words ' * 30} and then a {TRIGGER}",
    "word " * 1500,  # 6,000 characters after the cut: the prompt is truncated at 4,096 tokens
]
# A row costs the cached prefix (1,758 fixture tokens) + its suffix + 100 generated tokens: batches of
# 1 to 4 rows of unequal suffixes (so padding sits between prefix and suffix).
FAST_BUDGET = 4 * (1758 + 100 + 110)
REFERENCE_BUDGET = 2 * (2400 + 100)


@pytest.fixture(scope="module")
def tokenizer(tiny_llama: Path):
    return load_llm_tokenizer(tiny_llama)


@pytest.fixture(scope="module")
def rigs(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> dict[str, tuple[Path, Path]]:
    """Rigged bases (+ a small adapter each): verdict then EOS; 'unsafe\\nO10' then EOS; no EOS at all."""
    variants = {"eos": {}, "o10": {"category": "10"}, "ramble": {"ramble": True}}
    rigs = {}
    for name, options in variants.items():
        base = rig_llama(tiny_llama, tmp_path_factory.mktemp(f"rig-{name}"), **options)
        rigs[name] = (base, save_lora_adapter(base, tmp_path_factory.mktemp(f"rig-{name}-lora"), b_std=1e-3))
    return rigs


def aegis(base: Path, adapter: Path, budget: int = FAST_BUDGET, **kwargs: object) -> AegisClassifier:
    inference = InferenceConfig(token_budget=budget)
    return AegisClassifier("aegis", model=str(adapter), base_model=str(base), inference=inference, **kwargs)


def reference(base: Path, adapter: Path, docs: list[str], **kwargs: object) -> dict:
    """The reference path: generate(max_new_tokens=100) on whole prompts, raw replies kept."""
    clf = aegis(base, adapter, REFERENCE_BUDGET, generation="reference", keep_raw_pred=True, **kwargs)
    assert isinstance(clf._runtime()[0], GreedyReply)
    return clf.predict(docs)


def count_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of query positions of every forward pass the fast path makes."""
    calls: list[int] = []
    step = FastReply.step

    def counted(
        self: FastReply, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: object
    ) -> torch.Tensor:
        calls.append(ids.shape[1])
        return step(self, ids, mask, positions, cache)

    monkeypatch.setattr(FastReply, "step", counted)
    return calls


# ---- when is the label settled? -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stable", "label"),
    [
        ("", None),
        (" ", None),
        (" sa", None),
        (" safe", None),  # "safer" is still possible
        (" safe ", None),  # so is "safe x"
        (" safe\n", "safe"),
        (" safe\nanything", "safe"),
        (" x", "unknown"),
        (" safex", "unknown"),
        (" unsafe", None),  # "unsafe" alone parses to unknown, "unsafe\nO3" to O3
        (" unsafe\n", None),
        (" unsafe\nO", None),
        (" unsafe\nO1", None),  # O1 is a prefix of O10..O13
        (" unsafe\nO1\n", "O1"),
        (" unsafe\nO13", None),
        (" unsafe\nO13 ", None),
        (" unsafe\nO13\n", "O13"),
        (" unsafe\nO14", "unknown"),
        (" unsafe\nO3,", "unknown"),
        (" unsafe\nS1", "unknown"),
        (" unsafe \r\n O3 \r\n", "O3"),
        (" Safe", "unknown"),
        ("\nsafe", "unknown"),
    ],
)
def test_settled_label(stable: str, label: str | None) -> None:
    assert settled_label(stable) == label


def test_a_settled_label_is_what_every_continuation_parses_to() -> None:
    rng = np.random.default_rng(0)
    pieces = [
        "safe",
        "unsafe",
        "\n",
        "O",
        "1",
        "3",
        "0",
        "4",
        " ",
        "\r",
        ",",
        "x",
        "S",
        "afe",
        "\u2028",
        "\xa0",
    ]
    checked = 0
    for _ in range(3000):
        text = "".join(rng.choice(pieces, size=rng.integers(0, 7)))
        label = settled_label(text)
        if label is None:
            continue
        for _ in range(10):
            more = "".join(rng.choice(pieces, size=rng.integers(0, 7)))
            assert parse_aegis_reply(text + more) == label, (text, more)
            checked += 1
    assert checked > 1000


def test_stable_reply_text_is_final_and_decodes_as_upstream(tokenizer) -> None:
    """Random replies rich in byte pieces, newlines and special tokens: the anchor decode equals upstream's
    in-context decode, and the stable text of every prefix is a prefix of the final text."""
    layout = prompt_layout(tokenizer)
    text = layout.text
    assert text.exact
    prompt = format_aegis("hello")
    prompt_ids = tokenizer(prompt)["input_ids"]
    assert prompt_ids[-1] == layout.anchor
    ids = tokenizer.convert_tokens_to_ids
    tricky = ["▁safe", "▁unsafe", "<0x0A>", "O", "1", "3", "<0xE6>", "<0xB1>", "<0x89>", "<0x80>", "<0xF0>"]
    tricky_ids = [*ids(tricky), 0, 1, 2, 3, 700]  # unk, bos, eos, a byte, a word piece
    rng = np.random.default_rng(1)
    for _ in range(300):
        reply = [int(t) for t in rng.choice(tricky_ids, size=rng.integers(1, 9))]
        final = raw_reply(tokenizer, prompt, prompt_ids, np.asarray(reply))
        assert text.text(reply) == final
        for end in range(len(reply) + 1):
            stable = text.stable(reply[:end])
            assert final.startswith(stable), (reply, end)
            label = settled_label(stable)
            assert label is None or label == parse_aegis_reply(final)


def test_pending_byte_newline_is_not_stable(tokenizer) -> None:
    """A newline byte may still join a later byte into an invalid sequence ('\\ufffd\\ufffd'): not final."""
    text = prompt_layout(tokenizer).text
    ids = tokenizer.convert_tokens_to_ids
    reply = ids(["▁unsafe", "<0x0A>", "O", "3", "<0x0A>"])
    assert text.text(reply) == " unsafe\nO3\n" and text.stable(reply) == " unsafe\nO3"
    assert settled_label(text.stable(reply)) is None
    assert text.text([*reply, ids("<0x80>")]) == " unsafe\nO3\ufffd\ufffd"  # the newline is gone
    assert settled_label(text.stable([*reply, ids("O")])) == "O3"


def test_prompt_layout_finds_a_prefix_every_prompt_shares(tokenizer) -> None:
    layout = prompt_layout(tokenizer)
    prefix_text = tokenizer.decode(layout.prefix, skip_special_tokens=True)
    assert layout.prefix[0] == tokenizer.bos_token_id and len(layout.prefix) > 1500
    assert prefix_text.endswith("<BEGIN CONVERSATION>\n\n") and format_aegis("").startswith(prefix_text)
    for doc in [*FAST_DOCS, ":", "User", "\n\n", "🦓"]:
        assert tokenizer(format_aegis(doc))["input_ids"][: len(layout.prefix)] == layout.prefix
    assert tokenizer.convert_ids_to_tokens([layout.unsafe_id, layout.safe_id]) == ["▁unsafe", "▁safe"]


def test_no_line_boundary_means_no_prefix(tokenizer) -> None:
    """If the shared ids never end a line of the prompt's text, nothing is cached (the plain path)."""
    ids = [tokenizer(format_aegis(d))["input_ids"] for d in ("a", "b")]
    assert shared_prefix(tokenizer, ids, "a different prompt") == []
    assert shared_prefix(tokenizer, [ids[0], [ids[0][0] + 1, *ids[0][1:]]], format_aegis("a")) == []


# ---- the same output as the reference ------------------------------------------------------------


def same(out: dict, expected: dict, raw: bool) -> None:
    """The same labels and, when kept, the same raw replies."""
    assert list(out["aegis_pred"]) == list(expected["aegis_pred"])
    if raw:
        assert list(out["_aegis_raw_pred"]) == list(expected["_aegis_raw_pred"])
    else:
        assert "_aegis_raw_pred" not in out


def decode_steps(steps: list[int]) -> int:
    """Forward passes over one new token per row (the prefills run the suffixes)."""
    return sum(width == 1 for width in steps)


@pytest.mark.parametrize("keep_raw_pred", [True, False])
def test_random_model_equals_the_reference(
    tiny_llama: Path, tiny_adapter: Path, keep_raw_pred: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = reference(tiny_llama, tiny_adapter, FAST_DOCS)
    assert all(len(r) > 40 for r in expected["_aegis_raw_pred"][:-1])  # random replies run to 100 tokens
    clf = aegis(tiny_llama, tiny_adapter, keep_raw_pred=keep_raw_pred)
    same(clf.predict(FAST_DOCS), expected, keep_raw_pred)
    stats = clf.last_stats
    assert stats.batches >= 3 and stats.real_tokens < 0.3 * sum(prompt_lengths(tiny_llama, FAST_DOCS))
    assert stats.padded_tokens > stats.real_tokens  # rows of unequal suffixes shared batches
    steps = count_steps(monkeypatch)
    clf.predict(FAST_DOCS[:-1])  # whole prompts only: labels may settle
    if keep_raw_pred:
        assert decode_steps(steps) == 99 * clf.last_stats.batches  # no EOS: to max_new_tokens, as upstream
    else:
        assert decode_steps(steps) <= 3 * clf.last_stats.batches  # random replies are 'unknown' at once


def prompt_lengths(base: Path, docs: list[str]) -> list[int]:
    """Whole-prompt token counts, as the reference computes them."""
    tokenizer = load_llm_tokenizer(base)
    return [
        len(tokenizer(format_aegis(d[:6000]), truncation=True, max_length=4096)["input_ids"]) for d in docs
    ]


RIGGED_LABELS = {
    "eos": ["safe"] * 6 + ["O3", "safe", "O3", "unknown"],
    "o10": ["safe"] * 6 + ["O10", "safe", "O10", "unknown"],
    "ramble": ["safe"] * 6 + ["O3", "safe", "O3", "unknown"],
}


@pytest.mark.parametrize("variant", ["eos", "o10", "ramble"])
@pytest.mark.parametrize("keep_raw_pred", [True, False])
def test_rigged_models_equal_the_reference(
    rigs: dict, variant: str, keep_raw_pred: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, adapter = rigs[variant]
    expected = reference(base, adapter, FAST_DOCS)
    assert list(expected["aegis_pred"]) == RIGGED_LABELS[variant]
    clf = aegis(base, adapter, keep_raw_pred=keep_raw_pred)
    same(clf.predict(FAST_DOCS), expected, keep_raw_pred)
    steps = count_steps(monkeypatch)
    clf.predict(FAST_DOCS[:-1])  # the truncated prompt's reply never ends (no rigged token after it)
    if variant == "ramble" and keep_raw_pred:
        assert decode_steps(steps) == 99 * clf.last_stats.batches  # the raw reply is kept: all of it
    else:  # EOS or a settled label: at most 'unsafe' '\n' 'O' '1' '0' and one more token
        assert decode_steps(steps) <= 5 * clf.last_stats.batches


def test_rows_without_the_shared_prefix_take_the_plain_path(
    rigs: dict, tiny_llama: Path, tiny_adapter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prompts cut inside the prefix, no prefix at all, and a prefix only one row shares: same output."""
    docs = FAST_DOCS[5:]
    expected = reference(tiny_llama, tiny_adapter, docs, max_length=1000)
    steps = count_steps(monkeypatch)
    same(aegis(tiny_llama, tiny_adapter, keep_raw_pred=True, max_length=1000).predict(docs), expected, True)
    assert steps[0] == 1000  # whole (truncated) prompts, not suffixes
    expected = reference(tiny_llama, tiny_adapter, FAST_DOCS)
    clf = aegis(tiny_llama, tiny_adapter, keep_raw_pred=True)
    model, tokenizer, _ = clf._runtime()
    layout = clf.layout(tokenizer)
    monkeypatch.setattr(layout, "prefix", [])
    same(clf.predict(FAST_DOCS), expected, True)
    assert clf.last_stats.real_tokens == sum(prompt_lengths(tiny_llama, FAST_DOCS))
    longer = tokenizer(format_aegis(FAST_DOCS[0]))["input_ids"][: len(model.prefix_ids) + 8]
    monkeypatch.setattr(layout, "prefix", longer)  # only the first document's prompt starts with this
    monkeypatch.setattr(model, "prefix_ids", longer)
    monkeypatch.setattr(model, "_prefix", None)
    same(clf.predict(FAST_DOCS), expected, True)
    assert clf.last_stats.real_tokens == sum(prompt_lengths(tiny_llama, FAST_DOCS)) - len(longer)


def test_cached_prefix_gives_the_whole_prompt_logits(tiny_llama: Path, tiny_adapter: Path) -> None:
    """Padding between the cached prefix and the suffixes, positions that skip it: the logits of the
    prompt's last token and of a decode step equal a left-padded whole-prompt forward (as generate runs)."""
    clf = aegis(tiny_llama, tiny_adapter)
    model, tokenizer, device = clf._runtime()
    ids = tokenize(tokenizer, [format_aegis(d) for d in FAST_DOCS[:8]], 4096)
    size = len(model.prefix_ids)
    assert all(row[:size] == model.prefix_ids for row in ids)
    with torch.inference_mode():
        suffix, mask = pad_batch([row[size:] for row in ids], tokenizer.pad_token_id, left=True)
        assert (mask == 0).any()  # unequal suffixes: padding between prefix and suffix
        cache = prefilled_cache(model.lm, model.prefix(device), size + suffix.shape[1] + 1)
        mask = torch.cat([torch.ones(len(ids), size, dtype=mask.dtype), mask], dim=1)
        positions = (mask.cumsum(-1) - 1)[:, size:]
        fast = [model.step(suffix, mask, positions, cache)]
        nxt = fast[0].argmax(-1)
        mask = torch.cat([mask, torch.ones(len(ids), 1, dtype=mask.dtype)], dim=1)
        fast.append(model.step(nxt[:, None], mask, positions[:, -1:] + 1, cache))
        whole, whole_mask = pad_batch(ids, tokenizer.pad_token_id, left=True)
        for logits in fast:
            positions = (whole_mask.cumsum(-1) - 1).clamp(min=0)
            expected = model.lm(input_ids=whole, attention_mask=whole_mask, position_ids=positions).logits
            scale = float(expected[:, -1].abs().max())
            np.testing.assert_allclose(logits, expected[:, -1].float(), atol=2e-5 * scale, rtol=0)
            whole = torch.cat([whole, nxt[:, None]], dim=1)
            whole_mask = torch.cat([whole_mask, torch.ones(len(ids), 1, dtype=whole_mask.dtype)], dim=1)


def test_unknown_decoders_never_stop_early(rigs: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the SentencePiece decoder the reply text cannot be known early: only EOS stops a row."""
    base, adapter = rigs["ramble"]
    clf = aegis(base, adapter)
    layout = clf.layout(clf._runtime()[1])
    monkeypatch.setattr(layout.text, "exact", False)
    steps = count_steps(monkeypatch)
    out = clf.predict(FAST_DOCS[6:9])
    assert list(out["aegis_pred"]) == ["O3", "safe", "O3"]
    assert decode_steps(steps) == 99 * clf.last_stats.batches


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fast_equals_reference_on_cuda(rigs: dict, dtype: str) -> None:
    base, adapter = rigs["eos"]
    runs = {}
    for generation in ("reference", "fast"):
        inference = InferenceConfig(device="cuda", dtype=dtype)
        clf = AegisClassifier(
            "aegis", model=str(adapter), base_model=str(base), inference=inference, generation=generation
        )
        runs[generation] = list(clf.predict(FAST_DOCS)["aegis_pred"])
    assert runs["fast"] == runs["reference"] == RIGGED_LABELS["eos"]


# ---- scoring: P("unsafe") of the first reply token -------------------------------------------------


def test_unsafe_probability_is_the_first_step_distribution(tiny_llama: Path, tiny_adapter: Path) -> None:
    docs = FAST_DOCS[:4]
    expected = reference(tiny_llama, tiny_adapter, docs, score_unsafe=True)[SCORE_COLUMN]
    out = aegis(tiny_llama, tiny_adapter, score_unsafe=True).predict(docs)
    assert out[SCORE_COLUMN].dtype == np.float32
    np.testing.assert_allclose(out[SCORE_COLUMN], expected, rtol=1e-4, atol=1e-9)
    # by hand: softmax of the last prompt position's logits, at the '▁unsafe' token
    from curator.models.llm import load_causal_lm

    lm, tokenizer = load_causal_lm(tiny_llama, tiny_adapter), load_llm_tokenizer(tiny_llama)
    unsafe = tokenizer.convert_tokens_to_ids("▁unsafe")
    with torch.no_grad():
        for doc, prob in zip(docs, out[SCORE_COLUMN]):
            logits = lm(**tokenizer(format_aegis(doc), return_tensors="pt")).logits[0, -1]
            assert prob == pytest.approx(float(torch.softmax(logits, -1)[unsafe]), rel=1e-4)


def test_rigged_scores_and_threshold(rigs: dict) -> None:
    base, adapter = rigs["eos"]
    docs = ["A recipe for lemon cake.", f"I saw a {TRIGGER}.", "Go for a walk."]
    out = aegis(base, adapter, score_unsafe=True).predict(docs)
    assert list(out["aegis_pred"]) == ["safe", "O3", "safe"]
    assert out[SCORE_COLUMN][1] > 0.99 and max(out[SCORE_COLUMN][[0, 2]]) < 1e-6
    assert list(aegis(base, adapter, unsafe_threshold=0.5).predict(docs)["aegis_pred"]) == [
        "safe",
        "O3",
        "safe",
    ]
    forced = aegis(base, adapter, unsafe_threshold=0.0, keep_raw_pred=True).predict(docs)
    assert list(forced["aegis_pred"]) == ["O3"] * 3  # P >= 0 always: every reply starts 'unsafe'
    assert list(forced["_aegis_raw_pred"]) == [" unsafe\nO3"] * 3


def test_generation_settings_are_checked(rigs: dict) -> None:
    base, adapter = rigs["eos"]
    with pytest.raises(ConfigError, match="generation='greedy'"):
        aegis(base, adapter, generation="greedy")
    with pytest.raises(ConfigError, match="unsafe_threshold must lie in"):
        aegis(base, adapter, unsafe_threshold=1.5)
    with pytest.raises(ConfigError, match="unsafe_threshold needs generation=fast"):
        aegis(base, adapter, unsafe_threshold=0.5, generation="reference")
    clf = aegis(base, adapter, score_unsafe=True, score_column="p_unsafe")
    assert list(clf.output_types()) == ["aegis_pred", "p_unsafe"] and clf.score_column == "p_unsafe"
    assert aegis(base, adapter).score_column is None
    assert clf.labels == AEGIS_LABELS


def test_shipped_configs_default_to_fast_generation(make_config) -> None:
    cfg = make_config("classifier=[aegis,aegis_permissive]", "filter=safe")
    for name in ("aegis", "aegis_permissive"):
        settings = cfg.classifier[name]
        assert (settings.generation, settings.max_new_tokens, settings.score_unsafe) == ("fast", 100, False)
        assert settings.unsafe_threshold is None


def test_score_column_feeds_the_score_filter(make_config, rigs: dict, tmp_path: Path) -> None:
    from curator import pipeline

    base, adapter = rigs["eos"]
    texts = ["Bake the bread.", f"The {TRIGGER} escaped.", "Go for a walk."]
    write_jsonl(tmp_path / "in" / "docs.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    cfg = make_config(
        "classifier=aegis",
        f"classifier.aegis.model={adapter}",
        f"classifier.aegis.base_model={base}",
        "classifier.aegis.score_unsafe=true",
        "filter.max_score=0.5",
        f"dataset.path={tmp_path / 'in'}",
    )
    summary = pipeline.run(cfg)
    assert (summary["read"], summary["written"], summary["filtered"]) == (3, 2, 1)


# ---- memory estimates ------------------------------------------------------------------------------


LLAMA_GUARD_7B = dict(
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
)


def test_llm_memory_estimates_from_the_llama_config() -> None:
    from transformers import LlamaConfig

    config = LlamaConfig(**LLAMA_GUARD_7B)
    assert kv_bytes_per_token(config, 2) == 2 * 32 * 32 * 128 * 2 == 524288  # 0.5 MiB per token in bf16
    assert llm_weight_bytes(config, 2) == pytest.approx(2 * 6_738_415_616, rel=1e-6)  # Llama-2-7B's count
    assert llm_bytes_per_token(config, 2, kv_cache=False) == 2 * (6 * 4096 + 2 * 11008)
    gqa = LlamaConfig(**{**LLAMA_GUARD_7B, "num_key_value_heads": 8})
    assert kv_bytes_per_token(gqa, 2) == 524288 // 4


def test_cuda_budget_uses_the_llm_estimate(
    rigs: dict, tiny_llama: Path, tiny_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = 80 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    model = torch.nn.Module()
    model.config = llama_config(1200)
    base, adapter = rigs["eos"]
    clf = AegisClassifier("aegis", model=str(adapter), base_model=str(base))
    budget = clf.token_budget(model, torch.device("cuda"), 4096)
    assert budget == int(free * CUDA_MEMORY_FRACTION / llm_bytes_per_token(model.config, 2))
    head = save_guard_head(tmp_path / "head", input_dim=32)
    guard = InstructionDataGuardClassifier(
        "g", model=str(head), base_model=str(tiny_llama), adapter=str(tiny_adapter)
    )
    no_kv = guard.token_budget(model, torch.device("cuda"), 4096)
    assert no_kv == int(free * CUDA_MEMORY_FRACTION / llm_bytes_per_token(model.config, 2, kv_cache=False))
    assert no_kv > budget


# ---- Instruction Data Guard: one pass, no output head, no cache -------------------------------------


def test_guard_runs_the_decoder_once_without_head_or_cache(
    tiny_llama: Path, tiny_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers.models.llama.modeling_llama as modeling_llama

    head = save_guard_head(tmp_path / "head", input_dim=32)
    clf = InstructionDataGuardClassifier(
        "g", model=str(head), base_model=str(tiny_llama), adapter=str(tiny_adapter)
    )
    model = clf._runtime()[0]
    calls = {"head": 0, "decoder": 0}
    model.lm.lm_head.register_forward_hook(lambda *_: calls.__setitem__("head", calls["head"] + 1))
    model.lm.model.register_forward_hook(lambda *_: calls.__setitem__("decoder", calls["decoder"] + 1))

    def no_cache(*args: object, **kwargs: object) -> None:
        raise AssertionError("Instruction Data Guard must not build a KV cache")

    monkeypatch.setattr(modeling_llama, "DynamicCache", no_cache)
    out = clf.predict(["Instruction: say hi. Response: hi.", "short"])
    assert calls == {"head": 0, "decoder": clf.last_stats.batches}
    assert out["instruction_data_guard_poisoning_score"].shape == (2,)


# ---- the access token stays out of every file a run writes ----------------------------------------


@pytest.mark.slow
def test_hf_token_never_reaches_logs_configs_or_outputs(rigs: dict, tmp_path: Path) -> None:
    base, adapter = rigs["eos"]
    marker = "hf_SECRETMARKER0123456789"
    control = "control-7f3a"  # written to the output: proves the scan below reads what the run wrote
    data = write_jsonl(tmp_path / "in" / "docs.jsonl", [{"text": t} for t in (control, f"A {TRIGGER}.")])
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "run.py"),
            "classifier=aegis",
            f"classifier.aegis.model={adapter}",
            f"classifier.aegis.base_model={base}",
            "classifier.aegis.keep_raw_pred=true",
            "classifier.aegis.score_unsafe=true",
            f"dataset.path={data.parent}",
            "dataset.name=secret",
            "cluster.n_workers=1",
            "cluster.torch_threads=1",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "HF_TOKEN": marker},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert any(".hydra" in p.parts for p in written) and any(p.suffix == ".jsonl" for p in written)
    assert any(p.name.endswith(".log") for p in written)
    leaks = [p for p in written if marker.encode() in p.read_bytes()]
    assert leaks == [] and marker not in result.stdout + result.stderr
    assert any(control.encode() in p.read_bytes() for p in written if "data" in p.parts)
