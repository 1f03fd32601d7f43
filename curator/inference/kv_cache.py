"""A KV cache for a batch whose rows share a prompt prefix: the prefix's K/V computed once and copied in,
new tokens written in place, finished rows dropped (what AEGIS's fast generation needs)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

if TYPE_CHECKING:  # transformers.modeling_utils costs 1.5 s to import: annotations only
    from transformers import PreTrainedModel


def cache_argument(lm: PreTrainedModel) -> str:
    """The forward's KV-cache keyword: `cache` in recent transformers, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"


def supports_prefix_cache(lm: PreTrainedModel) -> bool:
    """Only plain full-attention layers (Llama): their cache is one growing K/V tensor per layer."""
    try:
        layers = DynamicCache(config=lm.config).layers
    except Exception:  # an architecture this cache API does not know
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class PrefilledLayer(DynamicLayer):
    """One layer's K/V for a batch: preallocated for the whole run, the shared prefix copied in once.

    DynamicLayer concatenates on every step (copying the whole cache each token); here new tokens are
    written in place, and rows that finished can be dropped (`batch_select_indices`).
    """

    def __init__(self, keys: torch.Tensor | None, values: torch.Tensor | None, capacity: int) -> None:
        super().__init__()
        self.prefix = (keys, values)  # [1, kv_heads, P, head_dim] each, or None: no prefix
        self.capacity = capacity
        self.length = 0
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate rows x capacity positions and copy the prefix into every row."""
        rows, heads, _, dim = key_states.shape
        self.device = key_states.device
        self.key_buffer = key_states.new_empty((rows, heads, self.capacity, dim))
        self.value_buffer = value_states.new_empty(
            (rows, value_states.shape[1], self.capacity, value_states.shape[-1])
        )
        keys, values = self.prefix
        if keys is not None:
            self.length = keys.shape[-2]
            self.key_buffer[:, :, : self.length] = keys
            self.value_buffer[:, :, : self.length] = values
        self.prefix = (None, None)
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions in place; return views of every position so far."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded ({end} positions)")
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        if not self.is_initialized:
            keys = self.prefix[0]
            return 0 if keys is None else keys.shape[-2]
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only these rows (ascending): moved to the front in place, so no second buffer is needed."""
        if not self.is_initialized:
            return
        filled = slice(0, self.length)
        for row, source in enumerate(indices.tolist()):
            if source < row:
                raise ValueError("batch_select_indices needs ascending row indices")
            if source != row:
                self.key_buffer[row, :, filled].copy_(self.key_buffer[source, :, filled])
                self.value_buffer[row, :, filled].copy_(self.value_buffer[source, :, filled])
        self.key_buffer, self.value_buffer = (
            self.key_buffer[: len(indices)],
            self.value_buffer[: len(indices)],
        )
        self.keys, self.values = self.key_buffer[:, :, filled], self.value_buffer[:, :, filled]


def prefilled_cache(
    lm: PreTrainedModel, prefix: list[tuple[torch.Tensor, torch.Tensor]] | None, capacity: int
) -> DynamicCache:
    """A cache whose every row starts with the shared `prefix` K/V (None: empty), room for `capacity`."""
    cache = DynamicCache(config=lm.config)
    layers = len(cache.layers)
    pairs = prefix if prefix is not None else [(None, None)] * layers
    cache.layers = [PrefilledLayer(keys, values, capacity) for keys, values in pairs]
    return cache


def prefix_kv(
    lm: PreTrainedModel, ids: list[int], device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The K/V of every layer for `ids` at positions 0..len-1 (each [1, kv_heads, len, head_dim])."""
    cache = DynamicCache(config=lm.config)
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    lm(input_ids=input_ids, use_cache=True, logits_to_keep=1, **{cache_argument(lm): cache})
    return [(layer.keys, layer.values) for layer in cache.layers]
