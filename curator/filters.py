"""Label and score filters: one vectorised boolean mask over a classified partition."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from curator.classifiers.base import DistributedDataClassifier
from curator.config import FilterConfig
from curator.errors import ConfigError


@dataclass(frozen=True)
class Filter:
    """Keep a row when every condition that is set holds (AND)."""

    column: str | None = None
    score_column: str | None = None
    keep: tuple[str, ...] | None = None
    drop: tuple[str, ...] | None = None
    min_score: float | None = None
    max_score: float | None = None

    @property
    def active(self) -> bool:
        """Whether any condition is set (filter=none has none)."""
        return any(v is not None for v in (self.keep, self.drop, self.min_score, self.max_score))

    def mask(self, frame: pd.DataFrame) -> np.ndarray:
        """True for rows to keep."""
        keep = np.ones(len(frame), dtype=bool)
        if self.keep is not None:
            keep &= frame[self.column].isin(self.keep).to_numpy()
        if self.drop is not None:
            keep &= ~frame[self.column].isin(self.drop).to_numpy()
        if self.min_score is not None or self.max_score is not None:
            scores = frame[self.score_column].to_numpy(dtype=np.float64, na_value=np.nan)
            if self.min_score is not None:
                keep &= scores >= self.min_score
            if self.max_score is not None:
                keep &= scores <= self.max_score
        return keep


def _check_labels(field: str, given: Sequence[str], column: str, known: Sequence[str]) -> None:
    unknown = [label for label in given if label not in known]
    if known and unknown:
        raise ConfigError(
            f"filter.{field} has label(s) {unknown} that column {column!r} never holds; "
            f"its labels are: {list(known)}"
        )


def build_filter(cfg: FilterConfig, classifiers: Sequence[DistributedDataClassifier]) -> Filter:
    """Resolve default columns from the first classifier and check labels and columns exist."""
    by_pred = {c.label_column: c for c in classifiers if c.label_column}
    score_columns = {c.score_column for c in classifiers if c.score_column}
    column = cfg.column or classifiers[0].label_column
    score_column = cfg.score_column or classifiers[0].score_column
    if (cfg.keep is not None or cfg.drop is not None) and column not in by_pred:
        raise ConfigError(
            f"filter.column={column!r} is not a prediction column; choose one of {list(by_pred)}"
        )
    for field_name in ("keep", "drop"):
        labels = getattr(cfg, field_name)
        if labels is not None:
            _check_labels(field_name, labels, column, by_pred[column].labels)
    wants_score = cfg.min_score is not None or cfg.max_score is not None
    if wants_score and score_column not in score_columns:
        raise ConfigError(
            f"filter.min_score/max_score need a score column; {score_column!r} is not one. "
            f"Score columns of this run: {sorted(score_columns)}"
        )
    return Filter(
        column=column,
        score_column=score_column,
        keep=tuple(cfg.keep) if cfg.keep is not None else None,
        drop=tuple(cfg.drop) if cfg.drop is not None else None,
        min_score=cfg.min_score,
        max_score=cfg.max_score,
    )
