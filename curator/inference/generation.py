"""Greedy generation for classifiers that read a reply: the reference loop (`GreedyReply`, Hugging Face's
`generate`) and `FastReply`, which computes a shared prompt prefix once and stops rows early. Pure torch."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GenerationConfig

from curator.inference.kv_cache import cache_argument, prefilled_cache, prefix_kv

if TYPE_CHECKING:  # transformers.modeling_utils costs 1.5 s to import: annotations only
    from transformers import PreTrainedModel

_PREFIX_LOCK = threading.Lock()


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
