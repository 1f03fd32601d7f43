"""Zero-shot labels from a sentence-embedding model: the label whose description is most similar."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoConfig

from curator.classifiers.base import DistributedDataClassifier
from curator.config import ClassifierConfig, LabelConfig
from curator.errors import ConfigError
from curator.inference.engine import BatchPlan, run_batches, tokenize
from curator.models.encoder import load_encoder, load_tokenizer
from curator.models.fast_encoder import FastEncoder
from curator.models.hub import resolve_model
from curator.models.limits import sentence_transformers_max_length
from curator.validate import positive


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors a document really has (padding excluded), L2-normalised."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    return F.normalize(summed / weights.sum(dim=1).clamp(min=1e-9), p=2, dim=-1)


class ZeroShotModel(torch.nn.Module):
    """Encoder + fixed label embeddings: softmax(cosine(doc, labels) / temperature)."""

    def __init__(self, encoder: torch.nn.Module, label_embeddings: torch.Tensor, temperature: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config  # for the engine's memory estimate
        self.register_buffer("label_embeddings", label_embeddings)
        self.temperature = temperature

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings, as sentence-transformers computes them for this model."""
        if isinstance(self.encoder, FastEncoder):
            hidden = self.encoder(input_ids, attention_mask)
        else:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        similarity = self.embed(input_ids, attention_mask) @ self.label_embeddings.T
        return torch.softmax(similarity / self.temperature, dim=-1)


@dataclass
class ZeroShotConfig(ClassifierConfig):
    """`family: zero_shot`."""

    labels: list[LabelConfig] = field(default_factory=list)  # name + description, matched by similarity
    label_template: str = "{description}"  # text embedded for a label; {name} and {description}
    temperature: float = 0.05  # softmax temperature over cosine similarities


class ZeroShotClassifier(DistributedDataClassifier):
    """Labels defined by name + description in YAML; no training, any label set."""

    schema = ZeroShotConfig

    def __init__(
        self,
        name: str,
        model: str,
        labels: Sequence[LabelConfig | tuple[str, str]],
        temperature: float = 0.05,
        label_template: str = "{description}",
        revision: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        labels = [(x.name, x.description) if isinstance(x, LabelConfig) else tuple(x) for x in labels]
        if not labels:
            raise ConfigError(f"Zero-shot classifier {name!r} needs at least one label.")
        names = [label for label, _ in labels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"Zero-shot classifier {name!r} has duplicate labels: {duplicates}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.revision = revision
        resolve_model(model, revision)  # fail on the client, before any cluster starts, if it is missing
        self.label_names = names
        self.label_texts = [label_template.format(name=n, description=d or n) for n, d in labels]
        self.temperature = temperature

    @classmethod
    def config_labels(cls, cfg: ZeroShotConfig) -> tuple[list[str], str] | None:
        return [label.name for label in cfg.labels], "config"

    @classmethod
    def config_problems(cls, key: str, cfg: ZeroShotConfig) -> Iterator[str]:
        yield from positive(f"{key}.temperature", cfg.temperature)

    @property
    def labels(self) -> list[str]:
        return list(self.label_names)

    def model_key(self) -> Hashable:
        return ("zero_shot", self.model, self.revision, tuple(self.label_texts), self.temperature)

    def load_tokenizer(self) -> Any:
        return load_tokenizer(resolve_model(self.model, self.revision))

    def model_config(self) -> Any:
        return AutoConfig.from_pretrained(resolve_model(self.model, self.revision), local_files_only=True)

    def reference_length(self, tokenizer: Any) -> int:
        """sentence-transformers' limit (256 for all-MiniLM-L6-v2, from sentence_bert_config.json)."""
        folder = resolve_model(self.model, self.revision)
        return sentence_transformers_max_length(folder, tokenizer, self.model_config())

    def load_model(self, device: torch.device) -> torch.nn.Module:
        folder = resolve_model(self.model, self.revision)
        encoder = load_encoder(folder, fast=self.inference.fast_encoder).to(device)
        model = ZeroShotModel(encoder, torch.zeros(0), self.temperature)
        tokenizer = self.load_tokenizer()
        ids = tokenize(tokenizer, self.label_texts, self.token_limit(tokenizer))
        embeddings = run_batches(ids, model.embed, BatchPlan(16384, 64), tokenizer.pad_token_id or 0, device)
        model.label_embeddings = torch.from_numpy(embeddings).to(device)
        return model.eval()

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        return self.label_columns(outputs, self.label_names)
