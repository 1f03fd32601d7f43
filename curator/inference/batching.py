"""Sort by true token length and cut batches under a token budget (rows x padded length)."""

from __future__ import annotations

import numpy as np


def length_order(lengths: np.ndarray, sort: bool = True) -> np.ndarray:
    """Row order for batching: longest first (a stable sort, so equal lengths keep input order)."""
    if not sort:
        return np.arange(len(lengths))
    return np.argsort(-np.asarray(lengths), kind="stable")


def next_batch_end(sorted_lengths: np.ndarray, start: int, token_budget: int, max_rows: int) -> int:
    """End (exclusive) of the batch that starts at `start`: as many rows as the budget allows.

    A batch is padded to its longest row, so r rows cost r x max(length) tokens. With rows sorted
    longest first that is r x lengths[start]; without sorting the running maximum is honoured.
    Every batch takes at least one row and at most `max_rows`.
    """
    n = len(sorted_lengths)
    end = start + 1
    longest = int(sorted_lengths[start])
    while end < n and end - start < max_rows:
        longest_next = max(longest, int(sorted_lengths[end]))
        if longest_next * (end - start + 1) > token_budget:
            break
        longest = longest_next
        end += 1
    return end


def plan_batches(sorted_lengths: np.ndarray, token_budget: int, max_rows: int) -> list[tuple[int, int]]:
    """Every batch of a partition as half-open [start, end) slices (for a fixed budget)."""
    batches: list[tuple[int, int]] = []
    start = 0
    while start < len(sorted_lengths):
        end = next_batch_end(sorted_lengths, start, token_budget, max_rows)
        batches.append((start, end))
        start = end
    return batches
