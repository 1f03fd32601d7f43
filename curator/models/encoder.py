"""Hugging Face encoders (BERT, DeBERTa, ...) built from their config and loaded strictly."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from curator.models.weights import load_strict, read_safetensors


def load_encoder(folder: Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A bare encoder (AutoModel) from a local folder: config → module → strict safetensors weights."""
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_config(config)
    state = read_safetensors(folder)
    prefix = f"{model.base_model_prefix}."
    has_prefix = any(k.startswith(prefix) for k in state)
    load_strict(model, state, prefix=prefix if has_prefix else "")
    return model.to(dtype).eval()


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """The model's fast tokenizer from a local folder (never the network)."""
    return AutoTokenizer.from_pretrained(folder, local_files_only=True, use_fast=True)
