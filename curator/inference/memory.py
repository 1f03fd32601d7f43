"""How many tokens fit in a batch: from free device memory and a per-model activation estimate."""

from __future__ import annotations

from typing import Any

import torch

DEFAULT_CPU_TOKEN_BUDGET = 16384  # rows x padded length for LLM generation on CPU (decode steps need rows)
CPU_CACHE_BYTES = 12 * 2**20  # the widest activation of a CPU batch should fit about this much cache
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


def cpu_token_budget(config: Any, max_length: int, dtype_bytes: int = 4) -> int:
    """Tokens per CPU batch for an encoder: its widest activation (`dtype_bytes` per value: 4 in float32,
    2 under bf16 autocast) stays near cache size.

    Bigger batches do not make CPU matmuls faster once they are a few hundred rows tall, but they push
    the feed-forward activations out of cache: on a 2-core AVX2 machine a MiniLM batch of 2048 tokens
    ran 1.3x faster than one of 16384 (scripts/bench_inference.py --budgets). In bf16 the same cache holds
    twice the tokens: on the 2-core AMX Xeon a DeBERTa-v3-base batch of 2048 tokens ran 1.2x faster than
    one of 1024, and MiniLM's of 4096 1.05x faster than 2048.
    """
    hidden = getattr(config, "hidden_size", 768)
    widest = max(getattr(config, "intermediate_size", 4 * hidden), 3 * hidden) * dtype_bytes
    return max(max_length, CPU_CACHE_BYTES // widest)


def cuda_token_budget(
    config: Any,
    device: torch.device,
    max_length: int,
    dtype_bytes: int,
    max_mem_gb: float | None = None,
    per_token: float | None = None,
) -> int:
    """Tokens per batch that fit in the free memory of `device` (at most max_mem_gb) at the longest length.

    `per_token`: the model's own bytes per token (e.g. an LLM's KV cache); default the encoder estimate.
    """
    free, _total = torch.cuda.mem_get_info(device)
    if max_mem_gb is not None:
        free = min(free, int(max_mem_gb * 2**30))
    per_token = per_token or bytes_per_token(config, max_length, dtype_bytes)
    return max(max_length, int(free * CUDA_MEMORY_FRACTION / per_token))


def _llm_shape(config: Any) -> tuple[int, int, int, int, int, int]:
    """hidden, intermediate, layers, heads, kv_heads, head_dim of a Llama-style config."""
    hidden = getattr(config, "hidden_size", 4096)
    heads = getattr(config, "num_attention_heads", 32)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    intermediate = getattr(config, "intermediate_size", 4 * hidden)
    return hidden, intermediate, getattr(config, "num_hidden_layers", 32), heads, kv_heads, head_dim


def kv_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """KV-cache bytes one token holds in a decoder: 2 (K and V) x layers x kv_heads x head_dim x dtype."""
    _, _, layers, _, kv_heads, head_dim = _llm_shape(config)
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def llm_weight_bytes(config: Any, dtype_bytes: int) -> int:
    """Weights of a Llama-style decoder: embeddings, attention, SwiGLU MLP, norms and the output head."""
    hidden, intermediate, layers, heads, kv_heads, head_dim = _llm_shape(config)
    vocab = getattr(config, "vocab_size", 32000)
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o and k, v
    per_layer = attention + 3 * hidden * intermediate + 2 * hidden
    heads_out = 1 if getattr(config, "tie_word_embeddings", False) else 2
    return (layers * per_layer + heads_out * vocab * hidden + hidden) * dtype_bytes


def llm_bytes_per_token(config: Any, dtype_bytes: int, kv_cache: bool = True) -> float:
    """Peak bytes per batch token of a decoder: its KV cache (every layer) plus one layer's activations.

    Activations as for an encoder without the attention-score term: SDPA's fused CUDA kernels do not
    materialise scores (if one does, the engine's out-of-memory back-off halves the budget).
    """
    hidden, intermediate, *_ = _llm_shape(config)
    activations = dtype_bytes * (6 * hidden + 2 * intermediate)
    return float(activations + (kv_bytes_per_token(config, dtype_bytes) if kv_cache else 0))


def llm_memory_bytes(config: Any, tokens: int, dtype_bytes: int) -> float:
    """What a decoder needs for `tokens` batch tokens: weights + tokens x (KV cache + activations)."""
    return llm_weight_bytes(config, dtype_bytes) + tokens * llm_bytes_per_token(config, dtype_bytes)
