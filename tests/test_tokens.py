"""Tokenising from a prefix gives exactly the ids of tokenising the whole text and truncating, for real
tokenizers (MiniLM's WordPiece, a DeBERTa-v3-like Unigram, a Llama-like byte-fallback BPE, a GPT-2-like
byte-level BPE) over long, unusual texts; windows come back in order."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from curator.inference import tokens
from tests.fixtures_deberta import write_tokenizer
from tests.fixtures_llm import write_llama_tokenizer


def unusual_texts() -> list[str]:
    """Long texts whose words can straddle any cut: no spaces, long words, CJK, emoji, newlines, runs
    of spaces, combining marks, digits, and ordinary prose, each several thousand characters."""
    rng = random.Random(7)
    prose = "The committee reviewed the proposal, and (after some debate) approved it unanimously. "
    pieces = [
        prose * 80,
        "a" * 9000,
        "supercalifragilisticexpialidocious" * 300,
        "数据清洗是训练大型语言模型的重要步骤。" * 400,
        "日本語のテキストと English mixed 123 together. " * 200,
        "🙂🚀👩‍👩‍👧‍👦 emoji🙃run " * 500,
        ("line\n" * 3 + "\n\n\n  \t ") * 900,
        "word   " * 1500,
        "e\u0301" * 4000 + " tail",
        "".join(rng.choice("ab cd\n\tξψ😀") for _ in range(12000)),
        "x" * 3000 + " " + "y" * 3000 + " end",
        "3.14159" * 1500,
    ]
    cuts = []
    for text in pieces:  # the same text cut at many lengths, so the prefix boundary lands everywhere
        cuts.extend(text[: 2000 + 397 * k] for k in range(6))
    return pieces + cuts


def byte_level_bpe(folder: Path) -> Path:
    """A GPT-2-like byte-level BPE (regex pre-tokenizer with a whitespace lookahead) trained here."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"], show_progress=False)
    tokenizer.train_from_iterator(unusual_texts()[:12] * 2, trainer)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    folder.mkdir(parents=True, exist_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizers_under_test(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> dict[str, object]:
    root = tmp_path_factory.mktemp("tokenizers")
    write_tokenizer(root / "deberta")
    write_llama_tokenizer(root / "llama")
    return {
        "minilm": AutoTokenizer.from_pretrained(minilm_path),
        "deberta": AutoTokenizer.from_pretrained(root / "deberta"),
        "llama": AutoTokenizer.from_pretrained(root / "llama"),
        "bytelevel": AutoTokenizer.from_pretrained(byte_level_bpe(root / "bytelevel")),
    }


@pytest.mark.parametrize("name", ["minilm", "deberta", "llama", "bytelevel"])
@pytest.mark.parametrize("max_length", [16, 128, 512])
def test_prefix_ids_equal_whole_text_ids(tokenizers_under_test: dict, name: str, max_length: int) -> None:
    tokenizer = tokenizers_under_test[name]
    texts = unusual_texts()
    expected = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    assert tokens.tokenize(tokenizer, texts, max_length) == expected


def test_prefix_is_used_for_prose_and_widened_where_a_word_spans_the_cut(
    tokenizers_under_test: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prose is taken from its first prefix; one long word is widened to the whole text (and is exact)."""
    tokenizer = tokenizers_under_test["minilm"]
    seen: list[int] = []
    real = tokens._from_prefix
    monkeypatch.setattr(
        tokens, "_from_prefix", lambda enc, keep: seen.append(len(enc.ids)) or real(enc, keep)
    )
    prose = "The committee reviewed the proposal and approved it. " * 400
    assert (
        tokens.tokenize(tokenizer, [prose], 64)
        == tokenizer([prose], truncation=True, max_length=64)["input_ids"]
    )
    assert len(seen) == 1 and seen[0] < len(tokenizer(prose)["input_ids"]) // 10  # a short prefix only
    seen.clear()
    word = "z" * 5000
    assert (
        tokens.tokenize(tokenizer, [word], 64)
        == tokenizer([word], truncation=True, max_length=64)["input_ids"]
    )
    assert len(seen) >= 2  # refused, widened, refused again: then the whole text


def test_windows_come_back_in_order_and_count_host_seconds(tokenizers_under_test: dict) -> None:
    tokenizer = tokenizers_under_test["deberta"]
    texts = [f"document number {i} " * (1 + i % 7) for i in range(103)]
    timing: dict[str, float] = {}
    windows = list(tokens.tokenize_windows(tokenizer, texts, 32, window=10, threads=3, timing=timing))
    assert [len(w) for w in windows] == [10] * 10 + [3]
    assert [row for w in windows for row in w] == tokenizer(texts, truncation=True, max_length=32)[
        "input_ids"
    ]
    assert timing["tokenise"] > 0


def test_a_ramp_of_windows_doubles_up_to_the_window_and_keeps_every_row_in_order(
    tokenizers_under_test: dict,
) -> None:
    """`first` (a starving device): 3, 6, 10, 10 … texts; the same ids as one whole-unit window."""
    assert tokens.window_starts(40, 10, first=3) == [0, 3, 9, 19, 29, 39]
    assert tokens.window_starts(5, None, first=64) == [0]  # one window: the ramp is capped by the unit
    assert tokens.window_starts(0, 10, first=3) == []
    tokenizer = tokenizers_under_test["minilm"]
    texts = [f"row {i} " + "word " * (i % 13) for i in range(45)]
    timing: dict[str, float] = {}
    windows = list(
        tokens.tokenize_windows(tokenizer, texts, 16, window=10, threads=2, timing=timing, first=3)
    )
    assert [len(w) for w in windows] == [3, 6, 10, 10, 10, 6]
    assert [row for w in windows for row in w] == tokenizer(texts, truncation=True, max_length=16)[
        "input_ids"
    ]


def test_tasks_side_by_side_share_one_pool_of_tokenising_threads_and_each_gets_its_own_ids(
    tokenizers_under_test: dict,
) -> None:
    """Four tasks tokenise at once through the process's one pool (no oversubscription); none gets
    another's rows."""
    tokenizer = tokenizers_under_test["deberta"]
    assert tokens.host_pool(2) is tokens.host_pool(2)
    corpora = [[f"task {t} text {i} " * (1 + (i + t) % 5) for i in range(60)] for t in range(4)]
    results: dict[int, list[list[int]]] = {}

    def task(t: int) -> None:
        windows = tokens.tokenize_windows(tokenizer, corpora[t], 24, window=7, threads=2, timing={})
        results[t] = [row for w in windows for row in w]

    threads = [threading.Thread(target=task, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for t in range(4):
        assert results[t] == tokenizer(corpora[t], truncation=True, max_length=24)["input_ids"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_tokenises_with_its_own_threads(tokenizers_under_test: dict) -> None:
    """A pool's threads do not survive fork: a child that used its parent's pool would wait forever."""
    tokenizer = tokenizers_under_test["minilm"]
    texts = [f"fork test {i}" for i in range(20)]
    expected = tokenizer(texts, truncation=True, max_length=16)["input_ids"]
    assert [r for w in tokens.tokenize_windows(tokenizer, texts, 16, 5, 2, {}) for r in w] == expected
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if it tokenised the same ids
        try:
            rows = [r for w in tokens.tokenize_windows(tokenizer, texts, 16, 5, 2, {}) for r in w]
            os.write(writer, b"1" if rows == expected else b"0")
        finally:
            os._exit(0)
    os.close(writer)
    deadline = time.monotonic() + 30
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child never finished tokenising")
        time.sleep(0.05)
    assert os.read(reader, 1) == b"1"
