"""How many tokens fit in a batch: from free device memory and a per-model activation estimate."""

from __future__ import annotations

from typing import Any

import torch

DEFAULT_CPU_TOKEN_BUDGET = 16384  # rows x padded length: keeps CPU matmuls efficient and in cache
CUDA_MEMORY_FRACTION = 0.7  # of the memory free after the weights are loaded


def bytes_per_token(config: Any, length: int, dtype_bytes: int) -> float:
    """Peak activation bytes per token of a batch padded to `length`, for a transformer encoder.

    At inference only one layer's activations are alive: the hidden state and its residual, Q/K/V and
    the attention output (~6 x hidden), the feed-forward intermediate (~2 x intermediate, before and
    after the activation) and the attention scores and probabilities (2 x heads x length per token).
    """
    hidden = getattr(config, "hidden_size", 768)
    intermediate = getattr(config, "intermediate_size", 4 * hidden)
    heads = getattr(config, "num_attention_heads", 12)
    return float(dtype_bytes * (6 * hidden + 2 * intermediate + 2 * heads * length))


def cuda_token_budget(
    config: Any, device: torch.device, max_length: int, dtype_bytes: int, max_mem_gb: float | None = None
) -> int:
    """Tokens per batch that fit in the free memory of `device` (at most max_mem_gb) at the longest length."""
    free, _total = torch.cuda.mem_get_info(device)
    if max_mem_gb is not None:
        free = min(free, int(max_mem_gb * 2**30))
    per_token = bytes_per_token(config, max_length, dtype_bytes)
    return max(max_length, int(free * CUDA_MEMORY_FRACTION / per_token))
