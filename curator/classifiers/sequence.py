"""Hugging Face sequence-classification checkpoints (AutoModelForSequenceClassification), built offline.

Two families: `sequence_classification` (softmax over labels) and `regression` (one score, e.g. FineWeb-Edu).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from curator.classifiers.base import DistributedDataClassifier
from curator.classifiers.schemas import RegressionConfig, SequenceConfig
from curator.config import LabelConfig
from curator.errors import ConfigError
from curator.models.encoder import load_tokenizer
from curator.models.fast_deberta import FastDebertaSequenceClassifier, fast_deberta_sequence_classifier
from curator.models.fast_encoder import FastSequenceClassifier, fast_sequence_classifier
from curator.models.precision import float32_heads
from curator.models.weights import load_strict, read_safetensors, skip_random_init


def labels_from_config(folder: Path) -> list[str]:
    """Label names in index order: id2label sorted by id (read as plain JSON, no model code needed)."""
    config = json.loads((folder / "config.json").read_text())
    if "label2id" in config:
        return [name for name, _ in sorted(config["label2id"].items(), key=lambda item: int(item[1]))]
    return [name for _, name in sorted(config.get("id2label", {}).items(), key=lambda item: int(item[0]))]


class _Logits(torch.nn.Module):
    """A sequence-classification model's logits: the fast BERT-family path where it applies, else HF's."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.config = model.config
        self.model = model
        self.fast = isinstance(model, (FastSequenceClassifier, FastDebertaSequenceClassifier))

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return self.model(input_ids, attention_mask)
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class _Softmax(_Logits):
    """Class probabilities from a sequence-classification model's logits."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(input_ids, attention_mask).float(), dim=-1)


class _Score(_Logits):
    """The single regression output of a one-label head: logits.squeeze(-1), as float."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.logits(input_ids, attention_mask).squeeze(-1).float()


def build_sequence_model(folder: Path, allow_pickle: bool = False, fast: bool = False) -> torch.nn.Module:
    """Config → the fast BERT-family or lean DeBERTa module if asked and it fits, else
    AutoModelForSequenceClassification (SDPA where supported) → strict safetensors weights."""
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    state = read_safetensors(folder, allow_pickle)
    if fast:
        dtype = config.dtype or torch.float32
        model = fast_sequence_classifier(config, state, dtype) or fast_deberta_sequence_classifier(
            config, state, dtype
        )
        if model is not None:
            return float32_heads(model)  # pooler/classifier in float32 under autocast
    with skip_random_init():
        try:
            model = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
        except (ValueError, ImportError):  # architectures without SDPA support (the try set it in config)
            model = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager")
    load_strict(model, state)
    return float32_heads(model).eval()  # pooler/classifier in float32 under autocast


class SequenceClassifier(DistributedDataClassifier):
    """Softmax over a fine-tuned classification head; labels from the checkpoint's config."""

    schema = SequenceConfig

    def __init__(
        self, name: str, model: str, revision: str | None = None, allow_pickle: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(name, **kwargs)
        self.model = model
        self.revision = revision
        self.allow_pickle = allow_pickle
        self._labels = labels_from_config(self.folder())

    def folder(self) -> Path:
        """The checkpoint's local folder (fetched on the client, found in the cache on workers)."""
        return self.resolve(self.model, self.revision, self.allow_pickle)

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def model_key(self) -> Hashable:
        return ("sequence_classification", self.model, self.revision)

    def load_tokenizer(self) -> Any:
        return load_tokenizer(self.folder())

    def model_config(self) -> Any:
        return AutoConfig.from_pretrained(self.folder(), local_files_only=True)

    def load_model(self, device: torch.device) -> torch.nn.Module:
        model = build_sequence_model(self.folder(), self.allow_pickle, self.inference.fast_encoder)
        return _Softmax(model).to(device)

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        return self.label_columns(outputs, self._labels)


def round_half_even(scores: np.ndarray) -> np.ndarray:
    """Round as pandas `.round()` and Python's `round` do (2.5 → 2, 3.5 → 4): what upstream wrote."""
    return np.round(scores)


class RegressionClassifier(SequenceClassifier):
    """One float score per document (FineWeb-Edu): clipped, rounded to an int, optionally thresholded."""

    schema = RegressionConfig

    def __init__(
        self,
        name: str,
        model: str,
        int_column: str | None = None,
        label_column: str | None = None,
        labels: Sequence[str | LabelConfig] | None = None,
        label_threshold: float = 2.5,
        score_range: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("score_column", None)  # the prediction column is the score
        labels = [getattr(label, "name", label) for label in labels or ()]  # names, from YAML or Python
        super().__init__(name, model, **kwargs)
        if label_column and len(labels) != 2:
            raise ConfigError(
                f"Classifier {name!r}: label_column needs two labels [at or above threshold, below]."
            )
        if score_range is not None and (len(score_range) != 2 or score_range[0] > score_range[1]):
            raise ConfigError(f"Classifier {name!r}: score_range must be [low, high], got {score_range}.")
        self.score_column = self.pred_column
        self.int_column = int_column
        self._label_column = label_column
        self._labels = list(labels) if label_column and labels else []
        self.label_threshold = label_threshold
        self.score_range = tuple(score_range) if score_range is not None else None

    @classmethod
    def config_columns(cls, cfg: RegressionConfig) -> list[str]:
        return [*super().config_columns(cfg), *(c for c in (cfg.int_column, cfg.label_column) if c)]

    @classmethod
    def config_labels(cls, cfg: RegressionConfig) -> tuple[list[str], str] | None:
        return ([label.name for label in cfg.labels], "config") if cfg.labels else None

    @classmethod
    def config_problems(cls, key: str, cfg: RegressionConfig) -> Iterator[str]:
        low_high = cfg.score_range
        if low_high is not None and (len(low_high) != 2 or low_high[0] >= low_high[1]):
            yield f"{key}.score_range={low_high}: must be [low, high] with low < high"

    @property
    def label_column(self) -> str | None:
        return self._label_column

    @property
    def report_columns(self) -> list[str]:
        return [c for c in (self.int_column, self._label_column) if c]

    @property
    def histogram_ranges(self) -> dict[str, tuple[float, float]]:
        return {self.pred_column: self.score_range} if self.score_range else {}

    def output_types(self) -> dict[str, pa.DataType]:
        types: dict[str, pa.DataType] = {self.pred_column: pa.float32()}
        if self.int_column:
            types[self.int_column] = pa.int16()
        if self._label_column:
            types[self._label_column] = pa.string()
        return types

    def load_model(self, device: torch.device) -> torch.nn.Module:
        model = build_sequence_model(self.folder(), self.allow_pickle, self.inference.fast_encoder)
        return _Score(model).to(device)

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        scores = outputs.reshape(-1).astype(np.float32)
        if self.score_range is not None:
            scores = np.clip(scores, *self.score_range)
        columns: dict[str, Any] = {self.pred_column: scores}
        if self.int_column:
            rounded = np.clip(round_half_even(scores), -(2**15), 2**15 - 1)
            columns[self.int_column] = rounded.astype(np.int16)
        if self._label_column:
            above, below = self._labels
            high = scores >= self.label_threshold
            columns[self._label_column] = np.where(high, above, below).astype(object)
        return columns
