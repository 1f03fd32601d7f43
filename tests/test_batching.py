"""Sorted token-budget batching: every row once, under budget, results back in input order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curator.inference.batching import length_order, plan_batches
from curator.inference.engine import BatchPlan, pad_batch, run_batches


@pytest.mark.parametrize("seed", range(5))
def test_batches_cover_every_row_once_within_budget(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 300, size=rng.integers(1, 400))
    order = length_order(lengths)
    budget, cap = 2048, 64
    batches = plan_batches(lengths[order], budget, cap)
    covered = [i for start, end in batches for i in range(start, end)]
    assert covered == list(range(len(lengths)))
    for start, end in batches:
        padded = lengths[order][start:end].max() * (end - start)
        assert end - start <= cap
        assert padded <= budget or end - start == 1


def test_sorting_is_longest_first_and_stable() -> None:
    lengths = np.array([3, 7, 3, 9, 7])
    assert length_order(lengths).tolist() == [3, 1, 4, 0, 2]
    assert length_order(lengths, sort=False).tolist() == [0, 1, 2, 3, 4]


def test_budget_fills_more_rows_for_shorter_documents() -> None:
    lengths = np.array([100] * 4 + [10] * 40)
    batches = plan_batches(lengths, token_budget=400, max_rows=1000)
    assert batches[0] == (0, 4)
    assert batches[1] == (4, 44)


def test_unsorted_batches_respect_the_running_maximum() -> None:
    lengths = np.array([10, 10, 100, 10])
    for start, end in plan_batches(lengths, token_budget=120, max_rows=10):
        assert lengths[start:end].max() * (end - start) <= 120 or end - start == 1


def test_pad_batch_right_and_left() -> None:
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, left=True)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_run_batches_restores_input_order() -> None:
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 100, size=rng.integers(1, 50)).tolist() for _ in range(200)]

    def forward(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.stack([(input_ids * mask).sum(1), mask.sum(1)], dim=1).float()

    out = run_batches(rows, forward, BatchPlan(token_budget=500, max_rows=16), 0, torch.device("cpu"))
    assert out.shape == (200, 2)
    assert out[:, 0].tolist() == [float(sum(r)) for r in rows]
    assert out[:, 1].tolist() == [float(len(r)) for r in rows]
