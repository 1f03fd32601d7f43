"""Zero-shot labels from a sentence-embedding model: the label whose description is most similar."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from curator.classifiers.embedding import EmbeddingModel, SentenceEncoderClassifier, mean_pool
from curator.classifiers.examples import file_digest, inline_problems, read_examples
from curator.classifiers.schemas import ZeroShotConfig
from curator.config import LabelConfig
from curator.errors import ConfigError
from curator.models.hub import resolve_model
from curator.models.precision import in_float32
from curator.validate import positive

__all__ = ["ZeroShotClassifier", "ZeroShotConfig", "ZeroShotModel", "mean_pool", "prototypes"]


class ZeroShotModel(EmbeddingModel):
    """Encoder + fixed label embeddings: softmax(cosine(doc, labels) / temperature)."""

    def __init__(self, encoder: torch.nn.Module, label_embeddings: torch.Tensor, temperature: float) -> None:
        super().__init__(encoder)
        self.register_buffer("label_embeddings", label_embeddings)
        self.temperature = temperature

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # float32 under autocast: a small temperature multiplies bf16's rounding of the cosines
        similarity = in_float32(lambda x: x @ self.label_embeddings.T, self.embed(input_ids, attention_mask))
        return torch.softmax(similarity / self.temperature, dim=-1)


def prototypes(groups: Sequence[np.ndarray]) -> np.ndarray:
    """Each label's vector: the L2-normalised mean of its group of unit vectors (summed in float64).

    A group of one (a description alone) is kept as it is, bit for bit.
    """
    out = []
    for group in groups:
        mean = group.astype(np.float64).sum(axis=0) / len(group)
        out.append(group[0] if len(group) == 1 else mean / max(np.linalg.norm(mean), 1e-12))
    return np.stack(out).astype(np.float32)


class ZeroShotClassifier(SentenceEncoderClassifier):
    """Labels defined by name + description (and optional examples) in YAML; no training, any label set.

    A label's vector is the normalised mean of the embeddings of its description (when given) and of
    its example texts; a label without examples keeps its description's vector (see README).
    """

    schema = ZeroShotConfig

    def __init__(
        self,
        name: str,
        model: str,
        labels: Sequence[LabelConfig | tuple[str, str]],
        temperature: float = 0.05,
        label_template: str = "{description}",
        revision: str | None = None,
        examples_path: str | None = None,
        examples_text_field: str = "text",
        examples_label_field: str = "label",
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        labels = [x if isinstance(x, LabelConfig) else LabelConfig(*x) for x in labels]
        if not labels:
            raise ConfigError(f"Zero-shot classifier {name!r} needs at least one label.")
        names = [label.name for label in labels]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"Zero-shot classifier {name!r} has duplicate labels: {duplicates}")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.model = self.encoder_model = model
        self.revision = self.encoder_revision = revision
        resolve_model(model, revision)  # fail on the client, before any cluster starts, if it is missing
        self.label_names = names
        self.label_texts = [
            label_template.format(name=x.name, description=x.description or x.name) for x in labels
        ]
        self.temperature = temperature
        examples = {x.name: list(x.examples) for x in labels if x.examples}
        problems = list(inline_problems(f"classifier {name!r}", examples))
        if problems:
            raise ConfigError("; ".join(problems))
        if examples_path:  # read once here, on the client; the texts travel with the classifier
            found = read_examples(examples_path, names, examples_text_field, examples_label_field)
            for label, texts in found.items():
                examples.setdefault(label, []).extend(texts)
        # canonical order: the same vectors whatever the order of the examples file
        self.examples = {label: sorted(examples[label]) for label in names if label in examples}
        # a label without a description but with examples is its examples alone
        self.uses_description = [bool(x.description) or x.name not in self.examples for x in labels]
        # in the model cache's key (hashed once: a key is built per partition)
        self.examples_digest = hashlib.sha256(json.dumps(self.examples, sort_keys=True).encode()).hexdigest()

    @classmethod
    def config_labels(cls, cfg: ZeroShotConfig) -> tuple[list[str], str] | None:
        return [label.name for label in cfg.labels], "config"

    @classmethod
    def config_problems(cls, key: str, cfg: ZeroShotConfig) -> Iterator[str]:
        yield from positive(f"{key}.temperature", cfg.temperature)
        inline = {label.name: label.examples for label in cfg.labels if label.examples}
        yield from inline_problems(f"{key}.labels", inline)
        if cfg.examples_path:
            try:
                read_examples(
                    cfg.examples_path,
                    [label.name for label in cfg.labels],
                    cfg.examples_text_field,
                    cfg.examples_label_field,
                )
            except ConfigError as err:
                yield f"{key}.examples_path: {err}"

    @classmethod
    def config_fingerprint(cls, cfg: ZeroShotConfig) -> str | None:
        return file_digest(cfg.examples_path) if cfg.examples_path else None

    @property
    def labels(self) -> list[str]:
        return list(self.label_names)

    def model_key(self) -> Hashable:
        key = (self.model, self.revision, tuple(self.label_texts), self.temperature, self.examples_digest)
        return ("zero_shot", *key)

    def label_vectors(self, embedder: EmbeddingModel, device: torch.device) -> np.ndarray:
        """One unit vector per label: its description and examples, embedded in one canonical list."""
        described = [t for t, used in zip(self.label_texts, self.uses_description, strict=True) if used]
        unique = sorted({t for texts in self.examples.values() for t in self.model_texts(texts)})
        vectors = self.embed_texts(embedder, described + unique, device)
        by_text = dict(zip(unique, vectors[len(described) :], strict=True))
        groups, next_description = [], iter(vectors[: len(described)])
        for label, used in zip(self.label_names, self.uses_description, strict=True):
            rows = [next(next_description)] if used else []
            rows += [by_text[t] for t in self.model_texts(self.examples.get(label, []))]
            groups.append(np.stack(rows))
        return prototypes(groups)

    def load_model(self, device: torch.device) -> torch.nn.Module:
        """Encoder + label vectors, computed once per worker (the model cache keeps them)."""
        embedder = self.load_embedder(device)
        vectors = torch.from_numpy(self.label_vectors(embedder, device)).to(device)
        return ZeroShotModel(embedder.encoder, vectors, self.temperature).eval()

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        return self.label_columns(outputs, self.label_names)
