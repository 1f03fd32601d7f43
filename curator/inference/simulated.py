"""A stand-in GPU (inference.device=simulated): proves on CPU-only machines how busy a device would be.

A batch takes padded tokens / rate seconds, spent in `time.sleep` (the GIL is released, as it is while a
GPU kernel runs), and returns, for each row, values drawn from a hash of the row's real token ids: the
same ids give the same outputs in any batch, any run and any worker. Their shape, dtype and kind
(probability rows or free scores) are those of the real model's output, probed once on a short row, so
every one-forward-pass family's postprocess runs unchanged. Families that generate (AEGIS) are refused:
their cost and replies depend on what they generate, which a hash cannot stand in for honestly.
"""

from __future__ import annotations

import hashlib
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

    def row(self, ids: np.ndarray) -> np.ndarray:
        """Deterministic values for one row: a generator seeded by a hash of its token ids."""
        seed = int.from_bytes(
            hashlib.blake2b(ids.astype(np.int64).tobytes(), digest_size=8).digest(), "little"
        )
        values = np.random.default_rng(seed).random(self.shape, dtype=np.float32)
        if self.probabilities:
            values = values / values.sum(axis=-1, keepdims=True)
        return values

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        time.sleep(input_ids.numel() / self.tokens_per_s)
        ids, mask = input_ids.numpy(), attention_mask.numpy().astype(bool)
        rows = np.stack([self.row(row[keep]) for row, keep in zip(ids, mask, strict=True)])
        return torch.from_numpy(rows).to(self.dtype)


def refuse_generation(clf: object) -> None:
    """Generating families cannot be simulated honestly: say so before any model is built."""
    if getattr(clf, "generates", False):
        raise ConfigError(
            f"Classifier {getattr(clf, 'name', '?')!r} generates its replies (AEGIS): "
            "inference.device=simulated stands in for one forward pass only; use cpu or cuda."
        )
