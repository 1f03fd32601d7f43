"""LLM safety: AEGIS (Llama Guard + LoRA, a generated verdict) and Instruction Data Guard (a poisoning score).

Both run meta-llama/LlamaGuard-7b (gated on the hub) with an NVIDIA LoRA adapter merged into its weights.
AEGIS wraps each document in the Llama Guard prompt and parses the greedy reply; Instruction Data Guard
feeds the raw text through once and scores the last token's final hidden state with a small MLP.
AEGIS's default generation (`FastReply`) reuses the prompt's shared prefix and stops once the label is
settled, with the reference's labels and replies; `GreedyReply` is the reference (NeMo Curator's).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from transformers import GenerationConfig, PreTrainedModel

from curator.classifiers.aegis_prompt import AEGIS_LABELS, format_aegis, parse_aegis_reply, settled_label
from curator.classifiers.base import DistributedDataClassifier
from curator.config import ClassifierConfig
from curator.errors import ConfigError
from curator.inference import cache
from curator.inference.engine import BatchPlan, RunStats, resolve_autocast, run_batches, tokenize
from curator.inference.memory import DEFAULT_CPU_TOKEN_BUDGET, cuda_token_budget, llm_bytes_per_token
from curator.models.hub import ModelNotAvailableError
from curator.models.llm import (
    ReplyText,
    cache_argument,
    load_causal_lm,
    load_llm_tokenizer,
    prefilled_cache,
    prefix_kv,
    supports_prefix_cache,
)
from curator.models.weights import load_strict, read_safetensors

LLAMA_GUARD = "meta-llama/LlamaGuard-7b"
AEGIS_DEFENSIVE = "nvidia/Aegis-AI-Content-Safety-LlamaGuard-Defensive-1.0"
# NeMo Curator's AegisConfig.max_length (its AegisHFModel.max_seq_length returns it, for AEGIS and Instruction
# Data Guard alike); also Llama Guard's max_position_embeddings.
NEMO_MAX_LENGTH = 4096

log = logging.getLogger(__name__)


class LlamaGuardClassifier(DistributedDataClassifier):
    """What both classifiers share: the gated base model, its tokenizer and the merged LLM."""

    base_model: str
    adapter: str | None
    adapter_revision: str | None
    allow_pickle: bool
    keeps_kv_cache = True  # generation holds every token's K/V; a single forward pass does not

    def base_folder(self) -> Path:
        """The Llama Guard folder; when it cannot be fetched, say how to get access (it is gated)."""
        try:
            return self.resolve(self.base_model, None, self.allow_pickle)
        except ModelNotAvailableError as err:
            if self.base_model.startswith((".", "/", "~")):
                raise
            raise ModelNotAvailableError(
                f"{err} {self.base_model!r} is the base model of classifier {self.name!r}; Llama Guard is "
                f"gated: request access on https://huggingface.co/{self.base_model}, then set HF_TOKEN "
                "to a token of the account that has it."
            ) from None

    def adapter_folder(self) -> Path | None:
        """The LoRA adapter's folder (None: the base model as is)."""
        return self.resolve(self.adapter, self.adapter_revision, self.allow_pickle) if self.adapter else None

    def load_tokenizer(self) -> Any:
        return load_llm_tokenizer(self.base_folder())

    def reference_length(self, tokenizer: Any) -> int:
        """NeMo Curator's fixed limit for both LLM classifiers (not read from the model)."""
        return NEMO_MAX_LENGTH

    def load_llm(self, device: torch.device) -> PreTrainedModel:
        """Llama Guard with the adapter merged: bf16 on CUDA by default, float32 on the CPU."""
        dtype = resolve_autocast(self.inference.dtype, device) or torch.float32
        return load_causal_lm(self.base_folder(), self.adapter_folder(), dtype, device, self.allow_pickle)

    def token_budget(self, model: torch.nn.Module, device: torch.device, max_length: int) -> int:
        """As configured, else the CPU default, else free CUDA memory over the LLM's bytes per token."""
        if self.inference.token_budget:
            return self.inference.token_budget
        if device.type != "cuda":
            return DEFAULT_CPU_TOKEN_BUDGET
        autocast = resolve_autocast(self.inference.dtype, device)
        dtype_bytes = torch.finfo(autocast).bits // 8 if autocast else 4
        per_token = llm_bytes_per_token(model.config, dtype_bytes, kv_cache=self.keeps_kv_cache)
        cap = self.inference.max_mem_gb
        key = (self.model_key(), str(device), dtype_bytes, cap, "llm_budget")
        return cache.get_or_load(
            key, lambda: cuda_token_budget(model.config, device, max_length, dtype_bytes, cap, per_token)
        )

    def plan(
        self, model: torch.nn.Module, device: torch.device, max_length: int, extra: int = 0
    ) -> BatchPlan:
        """Sorted batches under the token budget, each row charged `extra` generated tokens too."""
        prefetch = self.inference.prefetch
        return BatchPlan(
            token_budget=self.token_budget(model, device, max_length + extra),
            max_rows=self.batch_size,
            sort=self.inference.sort,
            autocast=resolve_autocast(self.inference.dtype, device),
            prefetch=device.type == "cuda" if prefetch is None else prefetch,
            extra_tokens=extra,
        )


SCORE_COLUMN = "aegis_unsafe_prob"
GENERATIONS = ("fast", "reference")
# Documents whose prompts show which leading tokens every prompt shares (the prefix worth caching).
PREFIX_PROBES = ["", "x", " ", "\n", "User", ": x", "[/INST]", "日本語", "🦓 zebra", "0", "\t"]
MIN_PREFIX = 16  # a shorter shared prefix is not worth a cache
UNLIMITED = 10**9  # tokenise the probes whole
_PREFIX_LOCK = threading.Lock()
_LAYOUTS: dict[str, PromptLayout] = {}  # base model -> its prompt layout, per process
_LAYOUT_LOCK = threading.Lock()


def float_bits(values: torch.Tensor) -> torch.Tensor:
    """float32 values as int64 (their bit pattern): a score rides exactly beside integer token ids."""
    return values.float().contiguous().view(torch.int32).long()


def bits_float(column: np.ndarray) -> np.ndarray:
    """The inverse of `float_bits`."""
    return column.astype(np.int32).view(np.float32)


class GreedyReply(torch.nn.Module):
    """NeMo Curator's generation (the reference): `generate(max_new_tokens)` on whole left-padded prompts.

    Returns the new token ids padded to `max_new_tokens`, plus P(`unsafe_id`) at the first step (as
    `float_bits`) when `unsafe_id` is set.
    """

    def __init__(
        self, lm: PreTrainedModel, max_new_tokens: int, pad_id: int, unsafe_id: int | None = None
    ) -> None:
        super().__init__()
        self.lm = lm
        self.config = lm.config  # for the engine's memory estimate
        self.max_new_tokens = max_new_tokens
        self.pad_id = pad_id
        self.unsafe_id = unsafe_id
        self.generation = GenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
            bos_token_id=lm.generation_config.bos_token_id,
            eos_token_id=lm.generation_config.eos_token_id,
            output_logits=unsafe_id is not None,
            return_dict_in_generate=True,
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.lm.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=self.generation
        )
        new = out.sequences[:, input_ids.shape[1] :]
        new = F.pad(new, (0, self.max_new_tokens - new.shape[1]), value=self.pad_id)
        if self.unsafe_id is None:
            return new
        prob = torch.softmax(out.logits[0].float(), dim=-1)[:, self.unsafe_id]
        return torch.cat([new, float_bits(prob)[:, None]], dim=1)


class FastReply(torch.nn.Module):
    """The same greedy replies as `GreedyReply`, computing only what differs between documents.

    The prompt's shared prefix runs once per worker (its K/V kept with the model) and is copied into
    each batch's cache; a batch runs only its rows' suffixes, left-padded *between* prefix and suffix,
    with positions that skip the padding (as `generate` numbers a left-padded prompt), so every real
    token sees exactly the keys it sees in the reference. Rows stop at end-of-sequence, at
    `max_new_tokens`, or once `settle(reply_ids)` says no later token can change the label; stopped
    rows are dropped from the batch. Returns ids padded to `max_new_tokens` (+ P("unsafe") bits).
    """

    def __init__(
        self,
        lm: PreTrainedModel,
        prefix_ids: list[int],
        max_new_tokens: int,
        pad_id: int,
        verdict_ids: tuple[int | None, int | None] = (None, None),
        score: bool = False,
        threshold: float | None = None,
    ) -> None:
        super().__init__()
        self.lm = lm
        self.config = lm.config
        self.prefix_ids = list(prefix_ids)
        self.max_new_tokens = max_new_tokens
        self.pad_id = pad_id
        eos = lm.generation_config.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        self.unsafe_id, self.safe_id = verdict_ids
        self.score = score
        self.threshold = threshold
        self.cache_kw = cache_argument(lm)
        self._prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def prefix(self, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The prefix's K/V, computed on first use (inside the engine's autocast, after any quantisation)."""
        if self._prefix is None:
            with _PREFIX_LOCK:
                if self._prefix is None:
                    self._prefix = prefix_kv(self.lm, self.prefix_ids, device)
        return self._prefix

    def step(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """Next-token logits (float32, as generate takes them) of the last column."""
        out = self.lm(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_kw: cache},
        )
        return out.logits[:, -1].float()

    def first_tokens(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Greedy first tokens and P("unsafe"); with a threshold the reply starts "unsafe" iff P >= it."""
        tokens = logits.argmax(dim=-1)
        if self.unsafe_id is None:
            return tokens, None
        prob = torch.softmax(logits, dim=-1)[:, self.unsafe_id]
        if self.threshold is not None:
            flipped = torch.where(tokens == self.unsafe_id, self.safe_id, tokens)
            tokens = torch.where(prob >= self.threshold, self.unsafe_id, flipped)
        return tokens, prob

    @staticmethod
    def settled(
        replies: torch.Tensor, finished: torch.Tensor, settle: Callable[[list[int]], bool]
    ) -> torch.Tensor:
        """Which unfinished rows' replies so far already fix their label."""
        flags = [not f and settle(r) for f, r in zip(finished.tolist(), replies.tolist())]
        return torch.tensor(flags, dtype=torch.bool, device=finished.device)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        use_prefix: bool = False,
        settle: Callable[[list[int]], bool] | None = None,
    ) -> torch.Tensor:
        rows, width = input_ids.shape
        device = input_ids.device
        prefix = self.prefix(device) if use_prefix and self.prefix_ids else None
        offset = len(self.prefix_ids) if prefix is not None else 0
        cache = prefilled_cache(self.lm, prefix, offset + width + self.max_new_tokens)
        mask = torch.cat([attention_mask.new_ones((rows, offset)), attention_mask], dim=1)
        positions = offset + (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        tokens, prob = self.first_tokens(self.step(input_ids, mask, positions, cache))
        out = torch.full((rows, self.max_new_tokens), self.pad_id, dtype=torch.long, device=device)
        eos = torch.tensor(self.eos_ids, dtype=torch.long, device=device)
        live = torch.arange(rows, device=device)  # batch row -> output row
        finished = torch.zeros(rows, dtype=torch.bool, device=device)
        position = positions[:, -1]
        for step in range(self.max_new_tokens):
            tokens = torch.where(finished, self.pad_id, tokens)  # as generate pads finished rows
            out[live, step] = tokens
            finished |= torch.isin(tokens, eos)
            if settle is not None:
                finished |= self.settled(out[live, : step + 1], finished, settle)
            if step + 1 == self.max_new_tokens or bool(finished.all()):
                break
            if int(finished.sum()) * 4 >= len(live):  # drop finished rows once a quarter of the batch
                keep = torch.nonzero(~finished).flatten()
                cache.batch_select_indices(keep)
                live, mask, position, tokens = live[keep], mask[keep], position[keep], tokens[keep]
                finished = finished[keep]
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
            position = position + 1
            tokens = self.step(tokens[:, None], mask, position[:, None], cache).argmax(dim=-1)
        if not self.score:
            return out
        return torch.cat([out, float_bits(prob)[:, None]], dim=1)


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


class AegisClassifier(LlamaGuardClassifier):
    """AEGIS content safety: Llama Guard + an NVIDIA LoRA adapter, greedy reply parsed into a label."""

    generates = True

    def __init__(
        self,
        name: str,
        model: str = AEGIS_DEFENSIVE,
        base_model: str | None = None,
        revision: str | None = None,
        keep_raw_pred: bool = False,
        raw_pred_column: str | None = None,
        max_new_tokens: int = 100,
        allow_pickle: bool = False,
        generation: str = "fast",
        score_unsafe: bool = False,
        unsafe_threshold: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pred_column", "aegis_pred")
        kwargs.setdefault("max_chars", 6000)
        score_column = kwargs.pop("score_column", None)
        super().__init__(name, **kwargs)
        check_generation(name, max_new_tokens, generation, unsafe_threshold)
        self.adapter = model
        self.base_model = base_model or LLAMA_GUARD
        self.adapter_revision = revision  # the revision pins the adapter, this classifier's `model`
        self.keep_raw_pred = keep_raw_pred
        self.raw_pred_column = raw_pred_column or "_aegis_raw_pred"
        self.max_new_tokens = max_new_tokens
        self.allow_pickle = allow_pickle
        self.generation = generation
        self.unsafe_threshold = unsafe_threshold
        self.score_column = (score_column or SCORE_COLUMN) if score_unsafe else None
        self.adapter_folder(), self.base_folder()  # fail on the client, before any cluster starts

    @classmethod
    def from_config(cls, name: str, cfg: ClassifierConfig, **common: Any) -> AegisClassifier:
        return cls(
            name,
            model=cfg.model,
            base_model=cfg.base_model,
            revision=cfg.revision,
            keep_raw_pred=cfg.keep_raw_pred,
            raw_pred_column=cfg.raw_pred_column,
            max_new_tokens=cfg.max_new_tokens,
            allow_pickle=cfg.allow_pickle,
            generation=cfg.generation,
            score_unsafe=cfg.score_unsafe,
            unsafe_threshold=cfg.unsafe_threshold,
            **common,
        )

    @property
    def labels(self) -> list[str]:
        return list(AEGIS_LABELS)

    def model_key(self) -> Hashable:
        return (
            "llm_guard",
            self.base_model,
            self.adapter,
            self.adapter_revision,
            self.max_new_tokens,
            self.generation,
            self.score_column is not None,
            self.unsafe_threshold,
        )

    def output_types(self) -> dict[str, pa.DataType]:
        types = {self.pred_column: pa.string()}
        if self.keep_raw_pred:
            types[self.raw_pred_column] = pa.string()
        if self.score_column:
            types[self.score_column] = pa.float32()
        return types

    def format_text(self, text: str) -> str:
        return format_aegis(text)

    def layout(self, tokenizer: Any) -> PromptLayout:
        """The prompt's layout for this base model's tokenizer, worked out once per process.

        Not in `cache`: `load_model` runs under that cache's lock and needs the layout too.
        """
        with _LAYOUT_LOCK:
            if self.base_model not in _LAYOUTS:
                _LAYOUTS[self.base_model] = prompt_layout(tokenizer)
            return _LAYOUTS[self.base_model]

    def load_model(self, device: torch.device) -> torch.nn.Module:
        tokenizer = self.load_tokenizer()
        layout = self.layout(tokenizer)
        needs_verdict = self.score_column is not None or self.unsafe_threshold is not None
        if needs_verdict and layout.unsafe_id is None:
            raise ConfigError(
                f"Classifier {self.name!r}: this tokenizer starts 'safe' and 'unsafe' replies with the same "
                "token, so P('unsafe') is undefined; unset score_unsafe and unsafe_threshold."
            )
        lm = self.load_llm(device)
        pad_id = tokenizer.pad_token_id
        if self.generation == "fast" and supports_prefix_cache(lm):
            verdict = (layout.unsafe_id, layout.safe_id)
            score = self.score_column is not None
            return FastReply(
                lm, layout.prefix, self.max_new_tokens, pad_id, verdict, score, self.unsafe_threshold
            )
        if self.generation == "fast":
            log.warning(
                "%s: %s has no plain KV cache; generating the reference way", self.name, type(lm).__name__
            )
        unsafe = layout.unsafe_id if self.score_column else None
        return GreedyReply(lm, self.max_new_tokens, pad_id, unsafe).to(device)

    def predict(self, texts: list[str], stats: RunStats | None = None) -> dict[str, Any]:
        """Generate a reply per document (sorted, batched, left-padded) and parse it; rows in input order."""
        model, tokenizer, device = self._runtime()
        prompts = self.model_texts(texts)
        max_length = self.token_limit(tokenizer)
        ids = tokenize(tokenizer, prompts, max_length)
        self.last_stats = stats = stats if stats is not None else RunStats()
        if isinstance(model, FastReply):
            return self.predict_fast(model, tokenizer, device, prompts, ids, stats)
        plan = self.plan(model, device, max_length, extra=self.max_new_tokens)
        new = run_batches(ids, model, plan, tokenizer.pad_token_id, device, left_pad=True, stats=stats)
        replies = [raw_reply(tokenizer, p, i, n[: self.max_new_tokens]) for p, i, n in zip(prompts, ids, new)]
        return self.columns(replies, bits_float(new[:, -1]) if self.score_column else None)

    def predict_fast(
        self,
        model: FastReply,
        tokenizer: Any,
        device: torch.device,
        prompts: list[str],
        ids: list[list[int]],
        stats: RunStats,
    ) -> dict[str, Any]:
        """Rows that start with the cached prefix run their suffix only; rows whose reply text is known
        exactly (`exact`) may stop once their label is settled and decode their reply without the prompt."""
        layout = self.layout(tokenizer)
        size = len(layout.prefix)
        shared = [size > 0 and len(row) > size and row[:size] == layout.prefix for row in ids]
        exact = [
            not self.keep_raw_pred and layout.text.exact and round_trips(tokenizer, p, i, layout.anchor)
            for p, i in zip(prompts, ids)
        ]
        width = self.max_new_tokens + (1 if self.score_column else 0)
        new = np.full((len(ids), width), tokenizer.pad_token_id, dtype=np.int64)
        for use_prefix, settles in ((True, True), (True, False), (False, True), (False, False)):
            rows = [i for i in range(len(ids)) if shared[i] == use_prefix and exact[i] == settles]
            if rows:
                part = [ids[i][size:] if use_prefix else ids[i] for i in rows]
                settle = partial(reply_settled, layout.text) if settles else None
                new[rows] = self.run_group(model, tokenizer, device, part, size * use_prefix, settle, stats)
        replies = [
            layout.text.text(n[: self.max_new_tokens].tolist())
            if e
            else raw_reply(tokenizer, p, i, n[: self.max_new_tokens])
            for p, i, n, e in zip(prompts, ids, new, exact)
        ]
        return self.columns(replies, bits_float(new[:, -1]) if self.score_column else None)

    def run_group(
        self,
        model: FastReply,
        tokenizer: Any,
        device: torch.device,
        ids: list[list[int]],
        prefix: int,
        settle: Callable[[list[int]], bool] | None,
        stats: RunStats,
    ) -> np.ndarray:
        """One kind of rows through the engine: sorted, under the budget, each row charged the `prefix`
        it holds a copy of (and attends to) and `max_new_tokens`."""
        plan = self.plan(model, device, self.token_limit(tokenizer), extra=self.max_new_tokens + prefix)
        forward = partial(model, use_prefix=prefix > 0, settle=settle)
        return run_batches(ids, forward, plan, tokenizer.pad_token_id, device, left_pad=True, stats=stats)

    def columns(self, replies: list[str], scores: np.ndarray | None) -> dict[str, Any]:
        """The label column and, if asked, the raw replies and P("unsafe")."""
        columns: dict[str, Any] = {
            self.pred_column: np.asarray([parse_aegis_reply(r) for r in replies], dtype=object)
        }
        if self.keep_raw_pred:
            columns[self.raw_pred_column] = np.asarray(replies, dtype=object)
        if self.score_column:
            columns[self.score_column] = (
                np.full(len(replies), np.nan, np.float32) if scores is None else scores.astype(np.float32)
            )
        return columns

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        """Raw replies (empty for an empty partition) → the label column and, if kept, the replies."""
        return self.columns([str(r) for r in outputs.reshape(-1)], None)


def check_generation(name: str, max_new_tokens: int, generation: str, threshold: float | None) -> None:
    """Refuse generation settings that cannot work, naming the classifier."""
    if max_new_tokens < 1:
        raise ConfigError(f"Classifier {name!r}: max_new_tokens must be at least 1, got {max_new_tokens}.")
    if generation not in GENERATIONS:
        raise ConfigError(
            f"Classifier {name!r}: generation={generation!r}; choose one of {list(GENERATIONS)}."
        )
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"Classifier {name!r}: unsafe_threshold must lie in [0, 1], got {threshold}.")
    if threshold is not None and generation != "fast":
        raise ConfigError(f"Classifier {name!r}: unsafe_threshold needs generation=fast.")


def round_trips(tokenizer: Any, prompt: str, ids: list[int], anchor: int) -> bool:
    """Whether the prompt's ids decode back to it and end with the usual last token (not truncated)."""
    return ids[-1] == anchor and tokenizer.decode(ids, skip_special_tokens=True) == prompt


def reply_settled(text: ReplyText, reply: list[int]) -> bool:
    """Whether the reply's final text already fixes the label (see `settled_label`)."""
    return settled_label(text.stable(reply)) is not None


class GuardHead(torch.nn.Module):
    """nvidia/instruction-data-guard's MLP (NeMo Curator's InstructionDataGuardNet; dropout is off here)."""

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.input_layer = torch.nn.Linear(input_dim, input_dim)
        self.hidden_layer_0 = torch.nn.Linear(input_dim, 2000)
        self.hidden_layer_1 = torch.nn.Linear(2000, 500)
        self.hidden_layer_2 = torch.nn.Linear(500, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = F.normalize(hidden, dim=-1)  # the published net normalises its input itself
        x = F.relu(self.input_layer(x))
        x = F.relu(self.hidden_layer_0(x))
        x = F.relu(self.hidden_layer_1(x))
        return torch.sigmoid(self.hidden_layer_2(x)).flatten()


def load_guard_head(folder: Path, hidden_size: int, allow_pickle: bool = False) -> GuardHead:
    """The MLP from its mixin folder (config.json: input_dim), loaded strictly, in float32."""
    input_dim = json.loads((folder / "config.json").read_text()).get("input_dim", hidden_size)
    if input_dim != hidden_size:
        raise ConfigError(
            f"{folder}: the guard head takes {input_dim}-dim inputs; the LLM's hidden size is {hidden_size}."
        )
    head = GuardHead(input_dim)
    load_strict(head, read_safetensors(folder, allow_pickle))
    return head.eval()


class PoisonScore(torch.nn.Module):
    """One forward pass: the final (normed) hidden state of the last token → the guard head's score."""

    def __init__(self, lm: PreTrainedModel, head: GuardHead) -> None:
        super().__init__()
        self.lm = lm
        self.head = head
        self.config = lm.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # positions count real tokens only, as generate() numbers a left-padded prompt
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        states = self.lm.base_model(  # the decoder alone: no output head over the vocabulary, no cache
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False
        )
        last = states.last_hidden_state[:, -1, :].float()  # left padding: the last column is the last token
        with torch.autocast(device_type=last.device.type, enabled=False):
            return self.head(last)


class InstructionDataGuardClassifier(LlamaGuardClassifier):
    """Instruction Data Guard: a poisoning score (and is_poisoned = score ≥ 0.5) per instruction sample."""

    keeps_kv_cache = False

    def __init__(
        self,
        name: str,
        model: str = "nvidia/instruction-data-guard",
        base_model: str | None = None,
        adapter: str | None = AEGIS_DEFENSIVE,
        revision: str | None = None,
        allow_pickle: bool = False,
        threshold: float = 0.5,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pred_column", "is_poisoned")
        kwargs["score_column"] = kwargs.get("score_column") or "instruction_data_guard_poisoning_score"
        super().__init__(name, **kwargs)
        self.model = model
        self.base_model = base_model or LLAMA_GUARD
        self.adapter = adapter
        self.adapter_revision = None
        self.revision = revision  # pins `model`, the guard head
        self.allow_pickle = allow_pickle
        self.threshold = threshold
        self.head_folder(), self.adapter_folder(), self.base_folder()  # fail on the client

    @classmethod
    def from_config(cls, name: str, cfg: ClassifierConfig, **common: Any) -> InstructionDataGuardClassifier:
        return cls(
            name,
            model=cfg.model,
            base_model=cfg.base_model,
            adapter=cfg.adapter,
            revision=cfg.revision,
            allow_pickle=cfg.allow_pickle,
            **common,
        )

    def head_folder(self) -> Path:
        """The guard head's folder (config.json + model.safetensors)."""
        return self.resolve(self.model, self.revision, self.allow_pickle)

    @property
    def label_column(self) -> str | None:
        return None  # a score, not labels: filter with min_score/max_score

    @property
    def report_columns(self) -> list[str]:
        return [self.pred_column]

    def model_key(self) -> Hashable:
        return ("instruction_data_guard", self.base_model, self.adapter, self.model, self.revision)

    def output_types(self) -> dict[str, pa.DataType]:
        return {self.score_column: pa.float32(), self.pred_column: pa.bool_()}

    def load_model(self, device: torch.device) -> torch.nn.Module:
        lm = self.load_llm(device)
        head = load_guard_head(self.head_folder(), lm.config.hidden_size, self.allow_pickle)
        return PoisonScore(lm, head.to(device))

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        scores = outputs.reshape(-1).astype(np.float32)
        return {self.score_column: scores, self.pred_column: scores >= self.threshold}
