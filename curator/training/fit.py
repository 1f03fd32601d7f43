"""Fit a head on embeddings: a seeded, stratified split and full-batch L-BFGS (deterministic on CPU)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from curator.classifiers.head import FORMAT, SPEC, WEIGHTS, HeadSpec, build_head, head_outputs


def split(labels: np.ndarray | None, rows: int, share: float, seed: int) -> np.ndarray:
    """A boolean validation mask: `share` of each label's rows (of all rows for regression), seeded.

    A label with a single row stays in training; rows are expected in a stable order (sorted by id).
    """
    rng = np.random.default_rng(seed)
    held = np.zeros(rows, dtype=bool)
    groups = [np.arange(rows)] if labels is None else [np.flatnonzero(labels == v) for v in np.unique(labels)]
    for group in groups:
        count = min(round(len(group) * share), len(group) - 1)
        if count > 0:
            held[rng.permutation(group)[:count]] = True
    return held


def class_weights(targets: np.ndarray, classes: int) -> torch.Tensor:
    """Inverse-frequency weights, mean 1 over the classes present (a missing class weighs 0)."""
    counts = np.bincount(targets, minlength=classes).astype(np.float64)
    weights = np.divide(1.0, counts, out=np.zeros(classes), where=counts > 0)
    return torch.tensor(weights * (counts > 0).sum() / weights.sum(), dtype=torch.float32)


def fit_head(
    spec: HeadSpec,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    weight_decay: float,
    seed: int,
    balance: bool = True,
) -> torch.nn.Sequential:
    """Train the head: cross-entropy (class-weighted when `balance`) or squared error, plus L2."""
    torch.manual_seed(seed)
    head = build_head(spec)
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if spec.kind == "classification":
        target = torch.from_numpy(y.astype(np.int64))
        weight = class_weights(y, spec.outputs) if balance else None

        def data_loss() -> torch.Tensor:
            return F.cross_entropy(head(inputs), target, weight=weight)
    else:
        target = torch.from_numpy(y.astype(np.float32))

        def data_loss() -> torch.Tensor:
            return F.mse_loss(head(inputs)[:, 0], target)

    matrices = [p for name, p in head.named_parameters() if name.endswith("weight")]
    optimizer = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=epochs, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = data_loss() + weight_decay * sum(m.pow(2).sum() for m in matrices)
        loss.backward()
        return loss

    optimizer.step(closure)
    return head.eval()


def predict(head: torch.nn.Module, spec: HeadSpec, x: np.ndarray) -> np.ndarray:
    """The head's outputs for embeddings (probabilities or scores), as the classifier computes them."""
    with torch.inference_mode():
        return head_outputs(head, torch.from_numpy(np.asarray(x, dtype=np.float32)), spec.kind).numpy()


def save_head(folder: Path, spec: HeadSpec, head: torch.nn.Module, extra: dict) -> None:
    """Write head.safetensors + head.json (the spec, plus what the training reported)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / WEIGHTS))
    data = {"format": FORMAT, "version": 1, **asdict(spec), **extra}
    (folder / SPEC).write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
