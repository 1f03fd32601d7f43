"""NVIDIA's DeBERTa classifiers in the PyTorchModelHubMixin format: domain, multilingual domain, quality,
content type. One linear head on the first token; labels from the checkpoint's label2id."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curator.classifiers.base import DistributedDataClassifier
from curator.classifiers.schemas import MixinConfig
from curator.classifiers.sequence import labels_from_config
from curator.models.encoder import load_tokenizer
from curator.models.mixin import backbone_config, base_model_of, load_mixin_classifier


class DebertaCheckpointClassifier(DistributedDataClassifier):
    """What the mixin DeBERTa families share: a checkpoint folder, its backbone config, its tokenizer."""

    schema = MixinConfig
    family = "deberta_mixin"  # part of the model-cache key

    def __init__(
        self,
        name: str,
        model: str,
        revision: str | None = None,
        base_model: str | None = None,
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        self.model = model
        self.revision = revision
        self.base_model = base_model
        self.allow_pickle = allow_pickle
        # Fail on the client, before any cluster starts, if the checkpoint or its backbone config is missing.
        folder = self.folder()
        self.read_checkpoint(folder)
        backbone_config(base_model_of(folder, base_model))

    def read_checkpoint(self, folder: Path) -> None:
        """Read what the family needs from the checkpoint's config.json (labels, heads)."""
        raise NotImplementedError

    def folder(self) -> Path:
        """The checkpoint's local folder (fetched on the client, found in the cache on workers)."""
        return self.resolve(self.model, self.revision, self.allow_pickle)

    def model_key(self) -> Hashable:
        return (self.family, self.model, self.revision, self.base_model, self.allow_pickle)

    def load_tokenizer(self) -> Any:
        return load_tokenizer(self.folder())

    def model_config(self) -> Any:
        """The backbone's config (CrossFit reads the same `max_position_embeddings`, 512 for DeBERTa-v3,
        from the checkpoint's own config.json, whose unset key defaults to it)."""
        return backbone_config(base_model_of(self.folder(), self.base_model))


class MixinClassifier(DebertaCheckpointClassifier):
    """Softmax over a mixin checkpoint's head; the backbone is built from its config, never downloaded."""

    def read_checkpoint(self, folder: Path) -> None:
        self._labels = labels_from_config(folder)

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def load_model(self, device: torch.device) -> torch.nn.Module:
        fast = self.inference.fast_encoder  # the lean DeBERTa forward (token 0 only in the last layer)
        return load_mixin_classifier(self.folder(), self.base_model, self.allow_pickle, fast).to(device)

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        return self.label_columns(outputs, self._labels)
