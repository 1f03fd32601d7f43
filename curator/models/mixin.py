"""huggingface_hub PyTorchModelHubMixin checkpoints on a DeBERTa backbone, built offline and loaded strictly.

The published classes call `AutoModel.from_pretrained(base_model)`, which downloads the *base* model only
to overwrite it. Here the backbone is built from its config alone (a local folder, the Hugging Face cache
or a copy shipped with curator) and the checkpoint's tensors must match the module key for key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig

from curator.errors import ConfigError
from curator.models.fast_deberta import FastDebertaEncoder, lean_deberta
from curator.models.hub import ModelNotAvailableError
from curator.models.precision import in_float32
from curator.models.weights import load_strict, read_safetensors, skip_random_init

# Backbones the published classifiers name, keyed in lower case (hub ids are case-insensitive).
SHIPPED_BACKBONES = {
    "microsoft/deberta-v3-base": "deberta-v3-base.json",
    "microsoft/mdeberta-v3-base": "mdeberta-v3-base.json",
}


def read_json_config(folder: Path) -> dict[str, Any]:
    """A checkpoint's config.json as plain JSON (mixin configs are not transformers configs)."""
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"No config.json in {folder}: not a PyTorchModelHubMixin checkpoint folder.")
    return json.loads(path.read_text(encoding="utf-8"))


def config_from_dict(data: dict[str, Any], source: str) -> PretrainedConfig:
    """A transformers config from a config.json dict; its `model_type` picks the architecture."""
    data = dict(data)
    model_type = data.pop("model_type", None)
    if not model_type:
        raise ConfigError(f"Backbone config from {source} has no model_type; cannot tell the architecture.")
    return AutoConfig.for_model(model_type, **data)


def _cached_config(base_model: str) -> dict[str, Any] | None:
    """The backbone's config.json from the Hugging Face cache (as written, then lower case), or None."""
    from huggingface_hub import hf_hub_download

    for repo_id in dict.fromkeys([base_model, base_model.lower()]):
        try:
            path = hf_hub_download(repo_id, "config.json", local_files_only=True)
        except Exception:  # not cached, or not a valid repo id (a missing path): try the next source
            continue
        return json.loads(Path(path).read_text(encoding="utf-8"))
    return None


def _shipped_config(base_model: str) -> dict[str, Any] | None:
    """The copy of a published backbone's config that ships with curator, or None."""
    name = SHIPPED_BACKBONES.get(base_model.lower())
    if name is None:
        return None
    return json.loads((resources.files("curator") / "data" / "backbones" / name).read_text(encoding="utf-8"))


def backbone_config(base_model: str) -> PretrainedConfig:
    """The backbone's config: a local folder, else the HF cache, else the shipped copy; never the network."""
    path = Path(base_model).expanduser()
    if (path / "config.json").is_file():
        return config_from_dict(read_json_config(path), str(path))
    if base_model.startswith((".", "/", "~")):
        raise ModelNotAvailableError(
            f"Backbone folder {base_model!r} has no config.json (or does not exist); "
            "set the classifier's base_model to a folder that has the backbone's config.json."
        )
    data = _cached_config(base_model) or _shipped_config(base_model)
    if data is None:
        raise ModelNotAvailableError(
            f"Backbone config {base_model!r} is not available here (not a local folder, not in the "
            "Hugging Face cache, not shipped with curator). Fetch it where there is network "
            f"(`hf download {base_model} config.json`) or set the classifier's base_model "
            "(classifier.NAME.base_model=...) to a local folder that holds its config.json."
        )
    return config_from_dict(data, base_model)


def build_backbone(config: PretrainedConfig) -> torch.nn.Module:
    """The bare encoder from its config alone (uninitialised weights: the checkpoint overwrites them)."""
    with skip_random_init():
        return AutoModel.from_config(config)


def hidden_states(
    backbone: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, first_only: bool = False
) -> torch.Tensor:
    """The backbone's last hidden states; the lean forward computes only token 0's with `first_only`."""
    if isinstance(backbone, FastDebertaEncoder):
        return backbone(input_ids, attention_mask, first_only=first_only)
    return backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class MixinDeberta(torch.nn.Module):
    """The published single-head class (`model`, `dropout`, `fc`): probabilities from the first token."""

    def __init__(self, backbone: torch.nn.Module, num_labels: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.model = backbone
        self.config = backbone.config  # the engine's CUDA memory estimate reads it
        self.dropout = torch.nn.Dropout(dropout)
        self.fc = torch.nn.Linear(backbone.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = hidden_states(self.model, input_ids, attention_mask, first_only=True)
        logits = in_float32(lambda x: self.fc(self.dropout(x)), hidden[:, 0, :])  # first token, float32
        return torch.softmax(logits, dim=-1)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens' vectors (padding excluded), as the published MeanPooling."""
    weights = mask.unsqueeze(-1).float()
    return (hidden.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class _Head(torch.nn.Module):
    """One published MulticlassHead: its only tensor is `fc`."""

    def __init__(self, hidden: int, size: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(hidden, size)


class MultiHeadDeberta(torch.nn.Module):
    """The published multi-head class (`backbone`, `head_i.fc`): every head's softmax, concatenated."""

    def __init__(self, backbone: torch.nn.Module, sizes: list[int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        self.sizes = list(sizes)
        for i, size in enumerate(self.sizes):
            self.add_module(f"head_{i}", _Head(backbone.config.hidden_size, size))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = hidden_states(self.backbone, input_ids, attention_mask)  # mean pooling reads every token
        pooled = mean_pool(hidden, attention_mask)
        heads = [in_float32(getattr(self, f"head_{i}").fc, pooled) for i in range(len(self.sizes))]
        return torch.cat([torch.softmax(logits, dim=-1) for logits in heads], dim=-1)


def _built(
    make: Callable[[torch.nn.Module], torch.nn.Module],
    config: PretrainedConfig,
    folder: Path,
    prefix: str,
    allow_pickle: bool,
    fast: bool,
) -> torch.nn.Module:
    """`make(backbone)` holding the checkpoint's tensors: on the lean DeBERTa forward when `fast` and it
    fits, else on Hugging Face's modules, strictly loaded (a key mismatch names the keys)."""
    state = read_safetensors(folder, allow_pickle=allow_pickle)
    if fast and (module := lean_deberta(make, config, state, prefix)) is not None:
        return module
    module = make(build_backbone(config))
    load_strict(module, state)
    return module.eval()


def base_model_of(folder: Path, override: str | None = None) -> str:
    """The backbone a checkpoint names (`base_model` in its config.json), unless overridden."""
    if override:
        return override
    base_model = read_json_config(folder).get("base_model")
    if not base_model:
        raise ConfigError(
            f"{folder / 'config.json'} names no base_model; set the classifier's base_model to the backbone."
        )
    return str(base_model)


def load_mixin_classifier(
    folder: Path, base_model: str | None = None, allow_pickle: bool = False, fast: bool = False
) -> MixinDeberta:
    """A single-head mixin classifier (domain, quality, content type) from its folder."""
    config = read_json_config(folder)
    labels = config.get("label2id") or config.get("id2label") or {}
    dropout = float(config.get("fc_dropout", 0.2))
    backbone = backbone_config(base_model_of(folder, base_model))
    make = lambda model: MixinDeberta(model, len(labels), dropout)  # noqa: E731
    return _built(make, backbone, folder, "model.", allow_pickle, fast)


def load_multihead_classifier(
    folder: Path,
    sizes: list[int],
    base_model: str | None = None,
    allow_pickle: bool = False,
    fast: bool = False,
) -> MultiHeadDeberta:
    """A multi-head mixin classifier (prompt task and complexity) with heads of `sizes`, in order."""
    backbone = backbone_config(base_model_of(folder, base_model))
    make = lambda model: MultiHeadDeberta(model, sizes)  # noqa: E731
    return _built(make, backbone, folder, "backbone.", allow_pickle, fast)
