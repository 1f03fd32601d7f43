"""nvidia/prompt-task-and-complexity-classifier: a task type and six complexity scores per prompt.

One DeBERTa backbone, mean pooling, eight linear heads. The model returns every head's softmax; the
arithmetic below reproduces the model card's `compute_results`/`process_logits` step by step (same
dtypes, same rounding functions), so the columns equal NeMo Curator's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from curator.classifiers.mixin import DebertaCheckpointClassifier
from curator.config import ClassifierConfig
from curator.errors import ConfigError
from curator.models.mixin import load_multihead_classifier, read_json_config

TASK = "task_type"
# Heads scored as softmax · weights / divisor, in the published head order after task_type.
SCORED = (
    "creativity_scope",
    "reasoning",
    "contextual_knowledge",
    "number_of_few_shots",
    "domain_knowledge",
    "no_label_reason",
    "constraint_ct",
)
HEADS = (TASK, *SCORED)  # the reference reads head i as HEADS[i]
FEW_SHOTS = "number_of_few_shots"
# The overall score, term by term in the reference's order (float sums depend on it).
COMPLEXITY_TERMS = (
    ("creativity_scope", 0.35),
    ("reasoning", 0.25),
    ("constraint_ct", 0.15),
    ("domain_knowledge", 0.15),
    ("contextual_knowledge", 0.05),
    (FEW_SHOTS, 0.05),
)
COMPLEXITY_COLUMN = "prompt_complexity_score"
SECOND_TASK_MIN = 0.1  # task_type_2 is "NA" when its probability, rounded to 3 places, is below this
FEW_SHOTS_MIN = 0.05  # few-shot scores below this (after rounding) are 0


@dataclass(frozen=True)
class PromptTaskSpec:
    """What the checkpoint's config.json says about its heads."""

    sizes: tuple[int, ...]  # in HEADS order
    task_types: tuple[str, ...]  # task_type_map in index order
    weights: dict[str, tuple[float, ...]]
    divisors: dict[str, float]

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str = "config.json") -> PromptTaskSpec:
        """Read and check the heads' description; anything the arithmetic cannot use is a ConfigError."""
        sizes = config.get("target_sizes") or {}
        if tuple(sizes) != HEADS:
            raise ConfigError(
                f"{source}: target_sizes must list the heads {list(HEADS)} in this order (the published "
                f"code reads them by position); found {list(sizes)}"
            )
        task_map = config.get("task_type_map") or {}
        task_types = tuple(name for _, name in sorted(task_map.items(), key=lambda item: int(item[0])))
        if len(task_types) != sizes[TASK] or sizes[TASK] < 2:
            raise ConfigError(
                f"{source}: task_type_map has {len(task_types)} names for {sizes[TASK]} classes"
            )
        weights = {t: tuple(config.get("weights_map", {}).get(t, ())) for t in SCORED}
        divisors = {t: config.get("divisor_map", {}).get(t) for t in SCORED}
        for target in SCORED:
            if len(weights[target]) != sizes[target] or not divisors[target]:
                raise ConfigError(
                    f"{source}: head {target!r} has {sizes[target]} classes but weights "
                    f"{list(weights[target])} and divisor {divisors[target]!r}"
                )
        return cls(tuple(sizes[h] for h in HEADS), task_types, weights, divisors)


def task_type_columns(probs: np.ndarray, task_types: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Top-2 task types and the first one's probability (Python `round`, as the reference's lists)."""
    top2 = np.argsort(-probs, axis=1, kind="stable")[:, :2]
    top2_probs = np.take_along_axis(probs, top2, axis=1)
    first = [round(float(p), 3) for p in top2_probs[:, 0]]
    second = np.array([round(float(p), 3) for p in top2_probs[:, 1]], dtype=np.float64)
    names = np.asarray(task_types, dtype=object)
    return {
        "task_type_1": names[top2[:, 0]],
        "task_type_2": np.where(second < SECOND_TASK_MIN, "NA", names[top2[:, 1]]).astype(object),
        "task_type_prob": np.array(first, dtype=np.float64),
    }


def scored_column(
    probs: np.ndarray, weights: tuple[float, ...], divisor: float, few_shots: bool
) -> np.ndarray:
    """softmax · weights / divisor, rounded to 4 places with numpy (the reference rounds np.float64s)."""
    scores = np.round(np.sum(probs * np.array(weights), axis=1) / divisor, 4)
    return np.where(scores >= FEW_SHOTS_MIN, scores, 0.0) if few_shots else scores


def complexity_score(columns: dict[str, np.ndarray]) -> np.ndarray:
    """The weighted sum of six rounded scores, rounded to 5 places."""
    total = np.zeros_like(columns[COMPLEXITY_TERMS[0][0]])
    for target, weight in COMPLEXITY_TERMS:
        total = total + weight * columns[target]
    return np.round(total, 5)


def prompt_task_columns(outputs: np.ndarray, spec: PromptTaskSpec) -> dict[str, np.ndarray]:
    """Every output column, keyed by the reference's names, from the heads' concatenated probabilities."""
    probs = outputs.reshape(-1, sum(spec.sizes)).astype(np.float32)
    heads = dict(zip(HEADS, np.split(probs, np.cumsum(spec.sizes)[:-1], axis=1), strict=True))
    columns = task_type_columns(heads[TASK], spec.task_types)
    for target in SCORED:
        columns[target] = scored_column(
            heads[target], spec.weights[target], spec.divisors[target], target == FEW_SHOTS
        )
    columns[COMPLEXITY_COLUMN] = complexity_score(columns)
    return columns


class PromptTaskComplexityClassifier(DebertaCheckpointClassifier):
    """Task type (task_type_1/2, task_type_prob), six complexity scores and their weighted sum per prompt."""

    family = "prompt_task_complexity"

    def read_checkpoint(self, folder: Path) -> None:
        self.spec = PromptTaskSpec.from_config(read_json_config(folder), str(folder / "config.json"))

    @classmethod
    def config_columns(cls, cfg: ClassifierConfig) -> list[str]:
        return ["task_type_1", "task_type_2", "task_type_prob", *SCORED, COMPLEXITY_COLUMN]

    @property
    def labels(self) -> list[str]:
        return list(self.spec.task_types)

    @property
    def complexity_column(self) -> str:
        """The overall score's column: score_column when set (so filter.min_score tests it)."""
        return self.score_column or COMPLEXITY_COLUMN

    def _names(self) -> dict[str, str]:
        """Reference name → output column (the prediction and the overall score can be renamed)."""
        names = {c: c for c in ("task_type_1", "task_type_2", "task_type_prob", *SCORED, COMPLEXITY_COLUMN)}
        names.update(task_type_1=self.pred_column, **{COMPLEXITY_COLUMN: self.complexity_column})
        return names

    def output_types(self) -> dict[str, pa.DataType]:
        text = {"task_type_1", "task_type_2"}
        return {out: pa.string() if ref in text else pa.float32() for ref, out in self._names().items()}

    def load_model(self, device: torch.device) -> torch.nn.Module:
        sizes, fast = list(self.spec.sizes), self.inference.fast_encoder  # lean forward, every token
        return load_multihead_classifier(self.folder(), sizes, self.base_model, self.allow_pickle, fast).to(
            device
        )

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        columns = prompt_task_columns(outputs, self.spec)
        return {self._names()[ref]: values for ref, values in columns.items()}
