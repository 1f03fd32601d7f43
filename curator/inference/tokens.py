"""Tokenising what the model reads, in host threads, window by window.

Ids are made by copies of the tokenizer's Rust backend, configured once (truncation as Hugging Face
sets it for `tokenizer(texts, truncation=True, max_length=L)`) and never changed again, so several
threads may encode at once: the library releases the GIL while it encodes a batch.

A long document is tokenised from a character prefix. The prefix's result is kept only where it is
provably the whole text's: the first L content tokens all lie in words (pre-tokenizer pieces) that end
at least two words before the prefix does, so the cut could not have changed them (a word's
segmentation depends on the whole word, and a pre-tokenizer boundary on a character or two of
context). Otherwise the prefix doubles, up to the whole text.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tokenizers import Tokenizer

PREFIX_CHARS_PER_TOKEN = 8  # the first prefix: this many code points per token kept (widened if short)
SAFE_WORDS = 2  # words between the last kept token and the prefix's end


def _backend(tokenizer: Any, max_length: int | None) -> Tokenizer:
    """A private copy of the fast tokenizer's backend: truncated at `max_length` (None: not at all)."""
    cache = tokenizer.__dict__.setdefault("_curator_backends", {})
    if max_length not in cache:
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_padding()
        if max_length is None:
            backend.no_truncation()
        else:
            direction = getattr(tokenizer, "truncation_side", "right")
            backend.enable_truncation(max_length, stride=0, strategy="longest_first", direction=direction)
        cache[max_length] = backend
    return cache[max_length]


def _encode_whole(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Hugging Face's `tokenizer(texts, truncation=True, max_length=...)["input_ids"]`."""
    if not getattr(tokenizer, "is_fast", False):
        out = tokenizer(texts, truncation=True, max_length=max_length, padding=False)
        return out["input_ids"]
    return [e.ids for e in _backend(tokenizer, max_length).encode_batch(texts)]


def _from_prefix(encoding: Any, keep: int) -> list[int] | None:
    """The truncated ids, if the prefix's `encoding` (untruncated) proves them; else None.

    Special tokens must sit only before and after the text (as every single-sequence template puts
    them); word ids rise through the text, so its last token has the last word.
    """
    special = encoding.special_tokens_mask
    n = len(special)
    front = 0
    while front < n and special[front]:
        front += 1
    back = 0
    while back < n - front and special[n - 1 - back]:
        back += 1
    if keep <= 0 or n - front - back <= keep or sum(special) != front + back:
        return None
    words = encoding.word_ids
    kept_word, last_word = words[front + keep - 1], words[n - back - 1]
    if kept_word is None or last_word is None or kept_word > last_word - SAFE_WORDS:
        return None
    ids = encoding.ids
    return ids[: front + keep] + ids[n - back :]


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, exactly those of tokenising the whole text and truncating to `max_length`
    (unpadded), with long texts tokenised from a prefix where that is provably the same."""
    texts = list(texts)
    if not texts:
        return []
    keep = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    prefix_ok = getattr(tokenizer, "is_fast", False) and getattr(tokenizer, "truncation_side", "") == "right"
    chars = PREFIX_CHARS_PER_TOKEN * max(keep, 1)
    ids: list[list[int] | None] = [None] * len(texts)
    todo = list(range(len(texts)))
    while todo:
        whole = [i for i in todo if not prefix_ok or len(texts[i]) <= chars]
        for i, row in zip(whole, _encode_whole(tokenizer, [texts[i] for i in whole], max_length)):
            ids[i] = row
        long = [i for i in todo if prefix_ok and len(texts[i]) > chars]
        encoded = _backend(tokenizer, None).encode_batch([texts[i][:chars] for i in long]) if long else []
        todo = []
        for i, encoding in zip(long, encoded):
            ids[i] = _from_prefix(encoding, keep)
            if ids[i] is None:
                todo.append(i)  # widen: the next round tokenises a longer prefix (or the whole text)
        chars *= 2
    return ids  # type: ignore[return-value]


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def host_pool(threads: int) -> ThreadPoolExecutor:
    """This process's tokenising threads, shared by the tasks it runs side by side: one first-come queue,
    so the earliest unit is tokenised on all the cores first (the device starts after one unit's host
    work, not after every unit in flight has shared the cores) and tasks never oversubscribe them."""
    key = (os.getpid(), threads)  # a forked child inherits the pool but not its threads: it makes its own
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokenise")
        return _POOLS[key]


def window_starts(n: int, window: int | None, first: int | None = None) -> list[int]:
    """Where each window of `n` texts starts: windows of `window` texts (None: one window), or, with
    `first`, a ramp of `first`, 2·first, 4·first … texts up to `window`."""
    size = window or max(1, n)
    step = min(first, size) if first else size
    starts, start = [], 0
    while start < n:
        starts.append(start)
        start += step
        step = min(2 * step, size)
    return starts


def tokenize_windows(
    tokenizer: Any,
    texts: Sequence[str],
    max_length: int,
    window: int | None,
    threads: int,
    timing: dict,
    first: int | None = None,
) -> Iterator[list[list[int]]]:
    """Each window of texts tokenised, in order (see `window_starts`; `first` starts a ramp of small
    windows, so that an idle device gets its first batch after a few texts' host work); the next window
    is tokenised (by this process's `threads` host threads, see `host_pool`) while the caller runs
    this one. `timing["tokenise"]` adds up the host seconds."""
    bounds = [*window_starts(len(texts), window, first), len(texts)]
    threads = max(1, threads)

    def encode(chunk: Sequence[str]) -> tuple[list[list[int]], float]:
        began = time.perf_counter()
        return tokenize(tokenizer, chunk, max_length), time.perf_counter() - began

    def submit(pool: ThreadPoolExecutor, k: int) -> list[Future]:
        chunk = texts[bounds[k] : bounds[k + 1]]
        step = -(-len(chunk) // threads)
        return [pool.submit(encode, chunk[i : i + step]) for i in range(0, len(chunk), step)]

    windows = len(bounds) - 1
    pool = host_pool(threads)
    ahead = submit(pool, 0) if windows else []
    try:
        for k in range(windows):
            current = ahead
            ahead = submit(pool, k + 1) if k + 1 < windows else []
            rows: list[list[int]] = []
            for future in current:
                part, seconds = future.result()
                rows.extend(part)
                timing["tokenise"] = timing.get("tokenise", 0.0) + seconds
            yield rows
    finally:  # a caller that stops early (an error downstream) leaves no queued work behind
        for future in ahead:
            future.cancel()
