"""A stand-in GPU (inference.device=simulated): proves on CPU-only machines how busy a device would be.

A batch takes padded tokens / rate seconds, spent in `time.sleep` (the GIL is released, as it is while a
GPU kernel runs), and returns, for each row, values drawn from a hash of the row's real token ids: the
same ids give the same outputs in any batch, any run and any worker. Their shape, dtype and kind
(probability rows or free scores) are those of the real model's output, probed once on a short row, so
every one-forward-pass family's postprocess runs unchanged. Families that generate (AEGIS) are refused:
their cost and replies depend on what they generate, which a hash cannot stand in for honestly.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from curator.errors import ConfigError

PROBE_IDS = [101, 2023, 2003, 1037, 7099, 6251, 102]  # any short row: only the output's shape is kept


class SimulatedModel(torch.nn.Module):
    """Sleeps for the batch's padded tokens / `tokens_per_s`; outputs a hash of each row's ids."""

    def __init__(self, model: torch.nn.Module, tokens_per_s: float) -> None:
        super().__init__()
        if tokens_per_s <= 0:
            raise ConfigError(f"inference.simulated_tokens_per_s={tokens_per_s}: must be > 0")
        self.tokens_per_s = float(tokens_per_s)
        self.config = getattr(model, "config", None)  # the engine's budget reads it
        with torch.inference_mode():
            probe = torch.tensor([PROBE_IDS])
            real = model(probe, torch.ones_like(probe))
        self.shape = tuple(real.shape[1:])
        self.dtype = real.dtype if real.is_floating_point() else torch.float32
        values = real.float()
        self.probabilities = bool(
            values.ndim >= 2
            and values.shape[-1] > 1
            and (values >= 0).all()
            and torch.allclose(values.sum(-1), torch.ones(()), atol=1e-3)
        )

    def values(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Deterministic values per row from its real tokens and their positions among them (padding,
        on either side, changes nothing), vectorised so the stand-in costs the host little."""
        position = np.cumsum(mask, axis=1) - 1
        with np.errstate(over="ignore"):
            token = _mix(ids.astype(np.uint64) * np.uint64(0x100000001B3) + position.astype(np.uint64))
            row = _mix(
                np.where(mask, token, np.uint64(0)).sum(axis=1, dtype=np.uint64)
                + mask.sum(axis=1).astype(np.uint64)
            )
            count = int(np.prod(self.shape, dtype=np.int64))
            steps = np.arange(1, count + 1, dtype=np.uint64) * np.uint64(GOLDEN)
            bits = _mix(row[:, None] + steps[None, :])
        values = ((bits >> np.uint64(11)).astype(np.float64) * 2.0**-53).astype(np.float32)
        values = values.reshape(len(ids), *self.shape)
        if self.probabilities:
            values = values / values.sum(axis=-1, keepdims=True)
        return values

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        time.sleep(input_ids.numel() / self.tokens_per_s)
        values = self.values(input_ids.numpy(), attention_mask.numpy().astype(bool))
        return torch.from_numpy(values).to(self.dtype)


GOLDEN = 0x9E3779B97F4A7C15


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic): a cheap, well-spread hash."""
    x = x + np.uint64(GOLDEN)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def refuse_generation(clf: object) -> None:
    """Generating families cannot be simulated honestly: say so before any model is built."""
    if getattr(clf, "generates", False):
        raise ConfigError(
            f"Classifier {getattr(clf, 'name', '?')!r} generates its replies (AEGIS): "
            "inference.device=simulated stands in for one forward pass only; use cpu or cuda."
        )
