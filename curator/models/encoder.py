"""Hugging Face encoders (BERT, DeBERTa, ...) built from their config and loaded strictly."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from curator.models.fast_encoder import fast_encoder
from curator.models.weights import load_strict, read_safetensors, skip_random_init


def load_encoder(folder: Path, dtype: torch.dtype = torch.float32, fast: bool = False) -> torch.nn.Module:
    """A bare encoder from a local folder: the fast BERT-family module if asked and it fits, else
    AutoModel (config → module → strict safetensors weights)."""
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    state = read_safetensors(folder)
    if fast and (model := fast_encoder(config, state, dtype)) is not None:
        return model
    with skip_random_init():
        model = AutoModel.from_config(config)
    prefix = f"{model.base_model_prefix}."
    has_prefix = any(k.startswith(prefix) for k in state)
    load_strict(model, state, prefix=prefix if has_prefix else "")
    return model.to(dtype).eval()


def load_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """The model's fast tokenizer from a local folder (never the network)."""
    return AutoTokenizer.from_pretrained(folder, local_files_only=True, use_fast=True)
