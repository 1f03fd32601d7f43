"""Llama-family causal LMs built offline, with a PEFT LoRA adapter merged in (no peft at run time)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerBase,
)

from curator.errors import UserError
from curator.models.weights import CheckpointFormatError, load_strict, read_safetensors, skip_random_init

if TYPE_CHECKING:  # transformers.modeling_utils costs 1.5 s to import: annotations only
    from transformers import PreTrainedModel

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_PICKLE = "adapter_model.bin"
# Every key PEFT saves starts with this (PeftModel → LoraModel → the base model).
PEFT_PREFIX = "base_model.model."
# Layers PEFT saves whole (not as LoRA factors) when they are among the targets.
EMBEDDING_LAYERS = ("embed_tokens", "lm_head")

# LoRA options that change the forward pass, with the value that means "plain LoRA": anything else is refused.
PLAIN_LORA = {
    "peft_type": "LORA",
    "bias": "none",
    "use_dora": False,
    "lora_bias": False,
    "rank_pattern": {},
    "alpha_pattern": {},
    "modules_to_save": None,
    "layer_replication": None,
    "trainable_token_indices": None,
    "target_parameters": None,
    "alora_invocation_tokens": None,
    "use_qalora": False,
    "megatron_config": None,
}


class AdapterError(UserError, ValueError):
    """A LoRA adapter this loader cannot merge exactly (unsupported options or tensors that fit nowhere)."""


def _plain(value: Any, plain: Any) -> bool:
    """The option's plain-LoRA value, or any empty value where plain means 'unset' ({}, None, False)."""
    return value == plain or (not plain and not value)


def read_adapter_config(folder: Path) -> dict[str, Any]:
    """adapter_config.json, checked to describe plain LoRA (what merging W += s·B·A reproduces)."""
    path = folder / ADAPTER_CONFIG
    if not path.exists():
        raise CheckpointFormatError(f"No {ADAPTER_CONFIG} in {folder}: not a PEFT adapter folder.")
    config = json.loads(path.read_text())
    unsupported = {
        k: config[k] for k, plain in PLAIN_LORA.items() if k in config and not _plain(config[k], plain)
    }
    if unsupported:
        raise AdapterError(
            f"Adapter {folder} uses options this loader cannot merge exactly: {unsupported}. Only plain "
            f"LoRA is supported: {', '.join(f'{k}={v!r}' for k, v in PLAIN_LORA.items())}."
        )
    if not isinstance(config.get("r"), int) or config["r"] <= 0 or "lora_alpha" not in config:
        raise AdapterError(
            f"Adapter {folder}: adapter_config.json needs a positive int `r` and `lora_alpha`."
        )
    return config


def lora_scale(config: dict[str, Any]) -> float:
    """PEFT's scaling: lora_alpha / r, or lora_alpha / sqrt(r) with rank-stabilised LoRA."""
    rank = config["r"]
    return config["lora_alpha"] / (math.sqrt(rank) if config.get("use_rslora") else rank)


def read_adapter_weights(folder: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """adapter_model.safetensors (a pickled adapter_model.bin only on explicit opt-in)."""
    if (folder / ADAPTER_WEIGHTS).exists():
        return load_file(str(folder / ADAPTER_WEIGHTS))
    if allow_pickle and (folder / ADAPTER_PICKLE).exists():
        return torch.load(folder / ADAPTER_PICKLE, map_location="cpu", weights_only=True)
    hint = " (it has adapter_model.bin: set allow_pickle=true)" if (folder / ADAPTER_PICKLE).exists() else ""
    raise CheckpointFormatError(f"No {ADAPTER_WEIGHTS} in {folder}{hint}.")


def _is_target(module: str, targets: str | list[str] | None) -> bool:
    """PEFT's matching: a regex over the whole module name, or a name equal to / ending in a target."""
    if targets is None:
        return True
    if isinstance(targets, str):
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith(f".{t}") for t in targets)


def _plan_merge(
    adapter: dict[str, torch.Tensor], base: dict[str, torch.Tensor], config: dict[str, Any]
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, torch.Tensor]]:
    """Group adapter tensors by base weight: LoRA (A, B) pairs and whole saved embedding layers."""
    factors: dict[str, dict[str, torch.Tensor]] = {}
    whole: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, tensor in adapter.items():
        name = key.removeprefix(PEFT_PREFIX)
        match = re.fullmatch(r"(.+)\.lora_([AB])\.weight", name)
        module = match.group(1) if match else re.sub(r"(\.base_layer)?\.weight$", "", name)
        target = f"{module}.weight"
        if not key.startswith(PEFT_PREFIX) or target not in base:
            unmapped.append(key)
        elif match and _is_target(module, config.get("target_modules")):
            factors.setdefault(target, {})[match.group(2)] = tensor
        elif not match and module.rsplit(".", 1)[-1] in EMBEDDING_LAYERS:
            whole[target] = tensor
        else:
            unmapped.append(key)
    unpaired = sorted(t for t, ab in factors.items() if len(ab) != 2)
    if unmapped or unpaired:
        raise AdapterError(
            f"Adapter tensors that map to no module of the base model: {sorted(unmapped)[:10]}"
            f"{'...' if len(unmapped) > 10 else ''}; LoRA weights missing their A or B half: {unpaired[:10]}"
        )
    return {t: (ab["A"], ab["B"]) for t, ab in factors.items()}, whole


def merge_lora(
    base: dict[str, torch.Tensor],
    adapter: dict[str, torch.Tensor],
    config: dict[str, Any],
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """The base state dict with W += scale · B @ A for every adapted weight (computed in float32)."""
    factors, whole = _plan_merge(adapter, base, config)
    merged = dict(base)
    for target, weight in whole.items():  # saved embedding layers replace the base's, as PEFT loads them
        if weight.shape != base[target].shape:
            raise AdapterError(
                f"Adapter's {target} has shape {tuple(weight.shape)}, base {tuple(base[target].shape)}"
            )
        merged[target] = weight
    scale = lora_scale(config)
    for target, (a, b) in factors.items():
        delta = (b.float() @ a.float()) * scale
        if config.get("fan_in_fan_out"):
            delta = delta.T
        weight = merged[target]
        if delta.shape != weight.shape:
            raise AdapterError(
                f"LoRA update for {target} has shape {tuple(delta.shape)}, the weight {tuple(weight.shape)}."
            )
        merged[target] = (weight.float() + delta).to(dtype)
    return merged


def load_causal_lm(
    folder: Path,
    adapter: Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    allow_pickle: bool = False,
) -> PreTrainedModel:
    """Config → AutoModelForCausalLM (SDPA) on `device` → strict (sharded) safetensors, LoRA merged."""
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with torch.device(device), skip_random_init():
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=dtype)
    state = read_safetensors(folder, allow_pickle)
    if adapter is not None:
        state = merge_lora(
            state, read_adapter_weights(adapter, allow_pickle), read_adapter_config(adapter), dtype
        )
    load_strict(model, state)
    if (folder / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(folder, local_files_only=True)
    return model.eval()


def load_llm_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """The base model's fast tokenizer, padding on the left with the unknown token (as NeMo Curator)."""
    tokenizer = AutoTokenizer.from_pretrained(
        folder, local_files_only=True, use_fast=True, padding_side="left"
    )
    tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    return tokenizer
