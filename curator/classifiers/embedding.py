"""Sentence embeddings (mean-pooled, L2-normalised) as sentence-transformers computes them.

`SentenceEncoderClassifier` holds the hooks every encoder-based family shares (zero-shot, trained
heads); `family: embedding` writes the vectors themselves as a column (what `task=train` learns from).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from transformers import AutoConfig

from curator.classifiers.base import DistributedDataClassifier
from curator.config import ClassifierConfig
from curator.inference.engine import BatchPlan, run_batches
from curator.inference.tokens import tokenize
from curator.models.encoder import load_encoder, load_tokenizer
from curator.models.fast_encoder import FastEncoder
from curator.models.hub import resolve_model
from curator.models.limits import sentence_transformers_max_length


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors a document really has (padding excluded), L2-normalised."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    return F.normalize(summed / weights.sum(dim=1).clamp(min=1e-9), p=2, dim=-1)


class EmbeddingModel(torch.nn.Module):
    """An encoder whose forward is the document's sentence embedding."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config  # for the engine's memory estimate

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings, as sentence-transformers computes them for this model."""
        if isinstance(self.encoder, FastEncoder):
            hidden = self.encoder(input_ids, attention_mask)
        else:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids, attention_mask)


class SentenceEncoderClassifier(DistributedDataClassifier):
    """The hooks of families built on a sentence-transformers encoder (`model`, mean pooling)."""

    encoder_model: str  # hub id or folder of the encoder
    encoder_revision: str | None = None

    def load_tokenizer(self) -> Any:
        return load_tokenizer(resolve_model(self.encoder_model, self.encoder_revision))

    def model_config(self) -> Any:
        folder = resolve_model(self.encoder_model, self.encoder_revision)
        return AutoConfig.from_pretrained(folder, local_files_only=True)

    def reference_length(self, tokenizer: Any) -> int:
        """sentence-transformers' limit (256 for all-MiniLM-L6-v2, from sentence_bert_config.json)."""
        folder = resolve_model(self.encoder_model, self.encoder_revision)
        return sentence_transformers_max_length(folder, tokenizer, self.model_config())

    def load_embedder(self, device: torch.device) -> EmbeddingModel:
        """The encoder with mean pooling, on `device`."""
        folder = resolve_model(self.encoder_model, self.encoder_revision)
        return EmbeddingModel(load_encoder(folder, fast=self.inference.fast_encoder).to(device)).eval()

    def embed_texts(self, model: EmbeddingModel, texts: list[str], device: torch.device) -> np.ndarray:
        """Embeddings of a few texts (labels, examples), in order; the same list gives the same batches."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        tokenizer = self.load_tokenizer()
        ids = tokenize(tokenizer, texts, self.token_limit(tokenizer))
        return run_batches(ids, model.embed, BatchPlan(16384, 64), tokenizer.pad_token_id or 0, device)


class EmbeddingClassifier(SentenceEncoderClassifier):
    """`family: embedding`: writes each document's sentence embedding (list of float32) to `pred_column`."""

    schema = ClassifierConfig

    def __init__(self, name: str, model: str, revision: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.encoder_model, self.encoder_revision = model, revision
        resolve_model(model, revision)  # fail on the client, before any cluster starts, if it is missing

    @classmethod
    def config_labels(cls, cfg: ClassifierConfig) -> tuple[list[str], str] | None:
        return [], "the family (a vector column, no labels)"

    def model_key(self) -> Hashable:
        return ("embedding", self.encoder_model, self.encoder_revision)

    def load_model(self, device: torch.device) -> torch.nn.Module:
        return self.load_embedder(device)

    @property
    def label_column(self) -> str | None:
        return None

    def output_types(self) -> dict[str, pa.DataType]:
        return {self.pred_column: pa.list_(pa.float32())}

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        vectors = np.asarray(outputs, dtype=np.float32)
        return {self.pred_column: list(vectors.reshape(len(vectors), -1)) if len(vectors) else []}
