"""AEGIS content safety (Llama Guard + an NVIDIA LoRA adapter): each document wrapped in the Llama Guard
prompt, a greedy reply, parsed into safe, O1..O13 or unknown.

The default generation (`FastReply`) reuses the prompt's shared prefix and stops once the label is settled,
with the reference's labels and replies; `GreedyReply` is the reference (NeMo Curator's).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterator
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from curator.classifiers.aegis_prompt import AEGIS_LABELS, format_aegis, parse_aegis_reply
from curator.classifiers.aegis_reply import (
    PromptLayout,
    prompt_layout,
    raw_reply,
    reply_settled,
    round_trips,
)
from curator.classifiers.llama_guard import (
    AEGIS_DEFENSIVE,
    LLAMA_GUARD,
    LlamaGuardClassifier,
)
from curator.classifiers.schemas import AegisConfig
from curator.errors import ConfigError
from curator.inference.engine import RunStats, run_batches
from curator.inference.generation import FastReply, GreedyReply, bits_float
from curator.inference.kv_cache import supports_prefix_cache
from curator.inference.tokens import tokenize
from curator.validate import at_least, choice

SCORE_COLUMN = "aegis_unsafe_prob"
GENERATIONS = ("fast", "reference")
_LAYOUTS: dict[str, PromptLayout] = {}  # base model -> its prompt layout, per process
_LAYOUT_LOCK = threading.Lock()

log = logging.getLogger(__name__)


class AegisClassifier(LlamaGuardClassifier):
    """AEGIS content safety: Llama Guard + an NVIDIA LoRA adapter, greedy reply parsed into a label."""

    schema = AegisConfig
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
    def config_columns(cls, cfg: AegisConfig) -> list[str]:
        raw = cfg.raw_pred_column
        note = "" if cfg.keep_raw_pred else " (with keep_raw_pred=true)"
        score = cfg.score_column or SCORE_COLUMN  # written only with score_unsafe, as __init__ decides
        scored = [score + ("" if cfg.score_unsafe else " (with score_unsafe=true)")]
        return [cfg.pred_column, *scored, *([raw + note] if raw else [])]

    @classmethod
    def config_labels(cls, cfg: AegisConfig) -> tuple[list[str], str] | None:
        return list(AEGIS_LABELS), "reply parser"

    @classmethod
    def config_problems(cls, key: str, cfg: AegisConfig) -> Iterator[str]:
        yield from at_least(f"{key}.max_new_tokens", cfg.max_new_tokens, 1)
        yield from choice(f"{key}.generation", cfg.generation, GENERATIONS)
        if cfg.unsafe_threshold is not None and not 0 <= cfg.unsafe_threshold <= 1:
            yield f"{key}.unsafe_threshold={cfg.unsafe_threshold}: must lie in [0, 1] (or null)"

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
