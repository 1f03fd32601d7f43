"""Classifier heads in float32 under bf16/fp16 autocast.

A head's output in bfloat16 has 8 significant bits: a FineWeb-Edu-like score near 2.5 comes out in steps
of 1/64, so rounding it to an integer flips at ±0.008 from the boundary, and probabilities near a tie
flip too. The head is one row per document (a pooler and a Linear), so computing it in float32 costs
nothing measurable while the encoder's matmuls stay in bf16.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def in_float32(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """`fn(x)` with autocast off and `x` in float32 (int8-quantised Linears take float32 too)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return fn(x.float())


class Float32(nn.Module):
    """Wraps a loaded model's head module so it runs in float32."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_float32(self.module, x)


def float32_heads(model: nn.Module, names: tuple[str, ...] = ("pooler", "classifier")) -> nn.Module:
    """`model` (loaded) with its top-level head modules `names`, where present, in float32 weights and
    wrapped in `Float32`: also for a checkpoint whose config loads it in bf16."""
    for name in names:
        module = getattr(model, name, None)
        if isinstance(module, nn.Module) and not isinstance(module, Float32):
            setattr(model, name, Float32(module.float()))
    return model
