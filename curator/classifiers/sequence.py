"""Hugging Face sequence-classification checkpoints (AutoModelForSequenceClassification), built offline."""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from curator.classifiers.base import DistributedDataClassifier
from curator.models.encoder import load_tokenizer
from curator.models.hub import resolve_model
from curator.models.weights import load_strict, read_safetensors


def labels_from_config(folder: Path) -> list[str]:
    """Label names in index order: id2label sorted by id (read as plain JSON, no model code needed)."""
    config = json.loads((folder / "config.json").read_text())
    if "label2id" in config:
        return [name for name, _ in sorted(config["label2id"].items(), key=lambda item: int(item[1]))]
    return [name for _, name in sorted(config.get("id2label", {}).items(), key=lambda item: int(item[0]))]


class _Softmax(torch.nn.Module):
    """Class probabilities from a sequence-classification model's logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return torch.softmax(logits.float(), dim=-1)


def build_sequence_model(folder: Path) -> torch.nn.Module:
    """Config → AutoModelForSequenceClassification (SDPA where supported) → strict safetensors weights."""
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    try:
        model = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    except (ValueError, ImportError):  # architectures without SDPA support
        model = AutoModelForSequenceClassification.from_config(config)
    load_strict(model, read_safetensors(folder))
    return model.eval()


class SequenceClassifier(DistributedDataClassifier):
    """Softmax over a fine-tuned classification head; labels from the checkpoint's config."""

    def __init__(self, name: str, model: str, revision: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.model = model
        self.revision = revision
        self._labels = labels_from_config(resolve_model(model, revision))

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def model_key(self) -> Hashable:
        return ("sequence_classification", self.model, self.revision)

    def load_tokenizer(self) -> Any:
        return load_tokenizer(resolve_model(self.model, self.revision))

    def load_model(self, device: torch.device) -> torch.nn.Module:
        return _Softmax(build_sequence_model(resolve_model(self.model, self.revision))).to(device)

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        return self.label_columns(outputs, self._labels)
