"""Run a model over a list of texts: tokenise, sort, batch under a token budget, restore order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from curator.inference.batching import length_order, plan_batches

# rows x padded length per batch on CPU: large enough to keep matmuls efficient, small enough for cache.
DEFAULT_CPU_TOKEN_BUDGET = 16384
DEFAULT_CUDA_TOKEN_BUDGET = 262144


@dataclass
class BatchPlan:
    """How a partition is cut into batches."""

    token_budget: int
    max_rows: int
    sort: bool = True


def resolve_device(device: str) -> torch.device:
    """'auto' means CUDA when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_token_budget(device: torch.device) -> int:
    """The configured budget's fallback per device type."""
    return DEFAULT_CUDA_TOKEN_BUDGET if device.type == "cuda" else DEFAULT_CPU_TOKEN_BUDGET


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to `max_length`, unpadded (padding happens per batch)."""
    if not texts:
        return []
    encoded = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    return encoded["input_ids"]


def pad_batch(ids: Sequence[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch to its longest row on the tokenizer's padding side; return (input_ids, attention_mask)."""
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        if left:
            input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
        else:
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
    return input_ids, mask


def run_batches(
    ids: Sequence[list[int]],
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    plan: BatchPlan,
    pad_id: int,
    device: torch.device,
    left_pad: bool = False,
) -> np.ndarray:
    """Apply `forward(input_ids, attention_mask) -> [rows, ...]` to every row, results in input order."""
    lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))
    order = length_order(lengths, plan.sort)
    out: np.ndarray | None = None
    with torch.inference_mode():
        for start, end in plan_batches(lengths[order], plan.token_budget, plan.max_rows):
            rows = order[start:end]
            input_ids, mask = pad_batch([ids[i] for i in rows], pad_id, left=left_pad)
            result = forward(input_ids.to(device), mask.to(device)).float().cpu().numpy()
            if out is None:
                out = np.empty((len(ids), *result.shape[1:]), dtype=np.float32)
            out[rows] = result
    if out is None:
        return np.empty((0,), dtype=np.float32)
    return out
