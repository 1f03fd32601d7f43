"""Sort by true token length and cut batches under a token budget (rows x padded length)."""

from __future__ import annotations

import numpy as np


def length_order(lengths: np.ndarray, sort: bool = True) -> np.ndarray:
    """Row order for batching: longest first (a stable sort, so equal lengths keep input order)."""
    if not sort:
        return np.arange(len(lengths))
    return np.argsort(-np.asarray(lengths), kind="stable")


def plan_batches(sorted_lengths: np.ndarray, token_budget: int, max_rows: int) -> list[tuple[int, int]]:
    """Half-open [start, end) slices over rows ordered by `length_order`.

    A batch is padded to its longest row; with rows sorted longest first that is its first row, so a
    batch of r rows starting at row i costs r x lengths[i] tokens. Each batch takes as many rows as the
    budget allows (at least one, at most `max_rows`). Without sorting the padded length is the running
    maximum, which this also honours.
    """
    n = len(sorted_lengths)
    batches: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end = start + 1
        longest = int(sorted_lengths[start])
        while end < n and end - start < max_rows:
            longest_next = max(longest, int(sorted_lengths[end]))
            if longest_next * (end - start + 1) > token_budget:
                break
            longest = longest_next
            end += 1
        batches.append((start, end))
        start = end
    return batches
