"""What a Llama tokenizer makes of the AEGIS prompt and reply: the prefix every prompt shares, the verdict
tokens, and a reply's text as the reference decodes it (and the part of it later tokens cannot change)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from curator.classifiers.aegis_prompt import format_aegis, settled_label
from curator.inference.tokens import tokenize

# Documents whose prompts show which leading tokens every prompt shares (the prefix worth caching).
PREFIX_PROBES = ["", "x", " ", "\n", "User", ": x", "[/INST]", "日本語", "🦓 zebra", "0", "\t"]
MIN_PREFIX = 16  # a shorter shared prefix is not worth a cache
UNLIMITED = 10**9  # tokenise the probes whole

# The decoder transformers' LlamaTokenizer builds (SentencePiece byte-fallback BPE).
LLAMA_DECODER = [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
    {"type": "ByteFallback"},
    {"type": "Fuse"},
]
LLAMA_STRIP = {"type": "Strip", "content": " ", "start": 1, "stop": 0}
BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def is_llama_decoder(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether decoding is the SentencePiece chain whose text only grows, except over pending byte runs."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return False
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    steps = decoder.get("decoders") if decoder.get("type") == "Sequence" else None
    return steps in (LLAMA_DECODER, [*LLAMA_DECODER, LLAMA_STRIP])


class ReplyText:
    """A reply's text as the reference decodes it after its prompt, and the part later tokens cannot change.

    The reference decodes prompt + reply and cuts at the prompt's length. When the prompt decodes back to
    itself and ends in a closing token (one that is neither a byte piece nor special), that is the text of
    `anchor + reply` after the anchor's text, for the SentencePiece decoder (`exact`). Text before the last
    closing token of the reply is final: only a pending run of byte pieces (an unfinished UTF-8 character,
    or bytes a skipped special token may join) can still change.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, anchor: int) -> None:
        self.tokenizer = tokenizer
        self.anchor = anchor
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        closes = np.asarray([p is not None and not BYTE_PIECE.fullmatch(p) for p in pieces], dtype=bool)
        closes[[i for i in getattr(tokenizer, "added_tokens_decoder", {}) if i < len(closes)]] = False
        closes[[i for i in tokenizer.all_special_ids if i < len(closes)]] = False
        self.closes = closes  # ids past the tokenizer's vocabulary (a padded head) never close
        self.anchor_text = self.decode([anchor])
        self.exact = is_llama_decoder(tokenizer) and anchor < len(closes) and bool(closes[anchor])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def text(self, reply: list[int]) -> str:
        """The reply's text in context (valid when `exact` and the prompt ends with the anchor)."""
        return self.decode([self.anchor, *reply])[len(self.anchor_text) :]

    def stable(self, reply: list[int]) -> str:
        """The reply's text up to its last closing token: no later token changes it."""
        ids = np.asarray(reply, dtype=np.int64)
        known = ids < len(self.closes)
        closing = np.flatnonzero(known & self.closes[np.where(known, ids, 0)])
        return self.text(reply[: int(closing[-1]) + 1]) if len(closing) else ""


@dataclass
class PromptLayout:
    """What a tokenizer makes of the AEGIS prompt: the shared prefix, the last token, the verdict tokens."""

    prefix: list[int]  # ids every prompt starts with (BOS included), ending a line; [] if none found
    anchor: int  # the last token of every whole prompt
    unsafe_id: int | None  # the first token of the reply " unsafe" after a prompt
    safe_id: int | None
    text: ReplyText


def shared_prefix(tokenizer: Any, ids: list[list[int]], text: str) -> list[int]:
    """The longest leading ids all probe prompts share whose text is the prompt's up to a newline."""
    common = 0
    while all(len(row) > common and row[common] == ids[0][common] for row in ids):
        common += 1
    first = ids[0]
    for end in range(common, MIN_PREFIX - 1, -1):
        if not tokenizer.decode([first[end - 1]]).endswith("\n"):
            continue
        decoded = tokenizer.decode(first[:end], skip_special_tokens=True)
        if decoded.endswith("\n") and text.startswith(decoded):
            return first[:end]
    return []


def first_reply_token(tokenizer: Any, prompt: str, prompt_ids: list[int], word: str) -> int | None:
    """The token a reply starting with `word` begins with, tokenised after the prompt (None: unclear)."""
    ids = tokenize(tokenizer, [f"{prompt} {word}"], UNLIMITED)[0]
    fits = ids[: len(prompt_ids)] == prompt_ids and len(ids) > len(prompt_ids)
    return ids[len(prompt_ids)] if fits else None


def prompt_layout(tokenizer: Any) -> PromptLayout:
    """Locate the cacheable prefix and the verdict tokens of the AEGIS prompt for this tokenizer."""
    prompts = [format_aegis(doc) for doc in PREFIX_PROBES]
    ids = tokenize(tokenizer, prompts, UNLIMITED)
    prefix = shared_prefix(tokenizer, ids, prompts[0])
    unsafe = first_reply_token(tokenizer, prompts[0], ids[0], "unsafe")
    safe = first_reply_token(tokenizer, prompts[0], ids[0], "safe")
    if unsafe is None or safe is None or unsafe == safe:
        unsafe = safe = None  # the first token cannot tell them apart
    return PromptLayout(prefix, ids[0][-1], unsafe, safe, ReplyText(tokenizer, ids[0][-1]))


def raw_reply(tokenizer: Any, prompt: str, prompt_ids: list[int], new_ids: np.ndarray) -> str:
    """NeMo Curator's raw reply: prompt + new tokens decoded together, cut at the prompt's length.

    Decoding in context keeps the space a SentencePiece tokenizer writes before the first reply word
    (' safe'), which decoding the new tokens alone strips; the parsed label is the same either way.
    """
    text = tokenizer.decode([*prompt_ids, *new_ids.tolist()], skip_special_tokens=True)
    return text[len(prompt) :]


def round_trips(tokenizer: Any, prompt: str, ids: list[int], anchor: int) -> bool:
    """Whether the prompt's ids decode back to it and end with the usual last token (not truncated)."""
    return ids[-1] == anchor and tokenizer.decode(ids, skip_special_tokens=True) == prompt


def reply_settled(text: ReplyText, reply: list[int]) -> bool:
    """Whether the reply's final text already fixes the label (see `settled_label`)."""
    return settled_label(text.stable(reply)) is not None
