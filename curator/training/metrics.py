"""Accuracy, macro recall/F1 and the confusion matrix (classification); error and correlation (regression)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def classification_metrics(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Scores over `labels` (gold labels outside them count as rows the classifier cannot get right).

    Macro averages run over the labels that occur in `gold` (a label never seen there has no recall).
    Rows of the confusion matrix are gold labels, columns predictions, both in `labels` order.
    """
    gold, pred = [str(g) for g in gold], [str(p) for p in pred]
    names = list(labels) + sorted((set(gold) | set(pred)) - set(labels))
    index = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    for g, p in zip(gold, pred, strict=True):
        matrix[index[g], index[p]] += 1
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    correct = np.diag(matrix)
    present = support > 0
    recall = np.divide(correct, support, out=np.zeros(len(names)), where=present)
    precision = np.divide(correct, predicted, out=np.zeros(len(names)), where=predicted > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(len(names)), where=total > 0)
    rows = int(support.sum())
    return {
        "rows": rows,
        "accuracy": round(float(correct.sum() / rows), 4) if rows else None,
        "macro_recall": round(float(recall[present].mean()), 4) if present.any() else None,
        "macro_f1": round(float(f1[present].mean()), 4) if present.any() else None,
        "per_label": {
            name: {
                "support": int(support[i]),
                "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4),
            }
            for i, name in enumerate(names)
            if support[i] or predicted[i]
        },
        "confusion": {"labels": names, "matrix": matrix.tolist()},
    }


def regression_metrics(gold: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Mean absolute / squared error, Pearson correlation and agreement of the rounded values."""
    gold, pred = np.asarray(gold, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if not len(gold):
        return {"rows": 0}
    corr = float(np.corrcoef(gold, pred)[0, 1]) if len(gold) > 1 and gold.std() and pred.std() else None
    return {
        "rows": len(gold),
        "mae": round(float(np.abs(gold - pred).mean()), 4),
        "rmse": round(float(np.sqrt(((gold - pred) ** 2).mean())), 4),
        "pearson": round(corr, 4) if corr is not None else None,
        "rounded_agreement": round(float((np.rint(gold) == np.rint(pred)).mean()), 4),
    }
