"""`family: head`: a head trained by `task=train` on a sentence encoder's embeddings.

The classifier folder holds `head.safetensors` (the head's weights, loaded strictly) and `head.json`
(labels or regression, the encoder, pooling and the head's shape); the YAML names the folder as `model`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_file

from curator.classifiers.embedding import EmbeddingModel, SentenceEncoderClassifier
from curator.config import ClassifierConfig
from curator.errors import ConfigError
from curator.models.precision import in_float32

WEIGHTS, SPEC = "head.safetensors", "head.json"
FORMAT = "curator-head"


@dataclass
class HeadSpec:
    """What head.json says: enough to rebuild the head and the encoder it was trained on."""

    kind: str  # classification | regression
    encoder: str  # hub id or folder of the sentence encoder
    embedding_dim: int
    labels: list[str] = field(default_factory=list)  # classification: output order
    hidden: int = 0  # 0: linear; N: one hidden ReLU layer of N units
    revision: str | None = None
    pooling: str = "mean"  # mean of the real tokens' vectors, L2-normalised (sentence-transformers)
    score_range: list[float] | None = None  # regression: the training targets' [min, max]

    @property
    def outputs(self) -> int:
        return len(self.labels) if self.kind == "classification" else 1


def build_head(spec: HeadSpec) -> torch.nn.Sequential:
    """The head's layers (random until trained or loaded)."""
    if spec.hidden:
        return torch.nn.Sequential(
            torch.nn.Linear(spec.embedding_dim, spec.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(spec.hidden, spec.outputs),
        )
    return torch.nn.Sequential(torch.nn.Linear(spec.embedding_dim, spec.outputs))


def read_spec(folder: str | Path) -> HeadSpec:
    """head.json of a classifier folder, or a clear error."""
    path = Path(folder).expanduser() / SPEC
    if not path.is_file():
        raise ConfigError(f"{folder}: not a trained head folder ({SPEC} missing; made by task=train)")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a {FORMAT} file")
    return HeadSpec(**{k: v for k, v in data.items() if k in HeadSpec.__dataclass_fields__})


def load_head(folder: str | Path) -> tuple[HeadSpec, torch.nn.Sequential]:
    """The spec and the head with its weights, loaded strictly (a missing or extra tensor is an error)."""
    spec = read_spec(folder)
    head = build_head(spec)
    head.load_state_dict(load_file(str(Path(folder).expanduser() / WEIGHTS)), strict=True)
    return spec, head.eval()


def head_outputs(head: torch.nn.Module, embeddings: torch.Tensor, kind: str) -> torch.Tensor:
    """Class probabilities (softmax) or the regression score, from embeddings."""
    logits = in_float32(head, embeddings)  # float32 under autocast (curator.models.precision)
    return torch.softmax(logits, dim=-1) if kind == "classification" else logits[:, 0]


class HeadModel(EmbeddingModel):
    """Encoder → mean pooling → head."""

    def __init__(self, encoder: torch.nn.Module, head: torch.nn.Module, kind: str) -> None:
        super().__init__(encoder)
        self.head, self.kind = head, kind

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return head_outputs(self.head, self.embed(input_ids, attention_mask), self.kind)


class HeadClassifier(SentenceEncoderClassifier):
    """A trained head (`model`: its folder). Classification writes label + probability, regression a score."""

    schema = ClassifierConfig

    def __init__(self, name: str, model: str, revision: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.model = str(Path(model).expanduser().resolve())
        self.spec = read_spec(self.model)
        self.encoder_model, self.encoder_revision = self.spec.encoder, self.spec.revision
        if self.spec.kind == "regression":
            self.score_column = None  # the prediction column is the score
        self.digest = self.config_fingerprint(ClassifierConfig(model=self.model))  # weights in the cache key

    @classmethod
    def config_problems(cls, key: str, cfg: ClassifierConfig) -> Iterator[str]:
        try:
            read_spec(cfg.model)
        except ConfigError as err:
            yield f"{key}.model: {err}"

    @classmethod
    def config_labels(cls, cfg: ClassifierConfig) -> tuple[list[str], str] | None:
        try:
            return list(read_spec(cfg.model).labels), f"{cfg.model}/{SPEC}"
        except ConfigError:
            return [], f"{cfg.model}/{SPEC} (not found)"

    @classmethod
    def config_fingerprint(cls, cfg: ClassifierConfig) -> str | None:
        folder = Path(cfg.model).expanduser()
        digest = hashlib.sha256()
        for name in (SPEC, WEIGHTS):
            digest.update((folder / name).read_bytes() if (folder / name).is_file() else b"")
        return digest.hexdigest()

    @property
    def labels(self) -> list[str]:
        return list(self.spec.labels)

    @property
    def label_column(self) -> str | None:
        return self.pred_column if self.spec.kind == "classification" else None

    @property
    def histogram_ranges(self) -> dict[str, tuple[float, float]]:
        if self.spec.kind == "classification":
            return super().histogram_ranges
        low, high = self.spec.score_range or (0.0, 1.0)
        return {self.pred_column: (float(low), float(high))}

    def model_key(self) -> Hashable:
        return ("head", self.model, self.digest)

    def load_model(self, device: torch.device) -> torch.nn.Module:
        _, head = load_head(self.model)
        return HeadModel(self.load_embedder(device).encoder, head.to(device), self.spec.kind).eval()

    def output_types(self) -> dict[str, pa.DataType]:
        if self.spec.kind == "classification":
            return super().output_types()
        return {self.pred_column: pa.float32()}

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        if self.spec.kind == "classification":
            return self.label_columns(outputs, self.spec.labels)
        return {self.pred_column: np.asarray(outputs, dtype=np.float32).reshape(-1)}
