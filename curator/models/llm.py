"""Llama-family causal LMs built offline, with a PEFT LoRA adapter merged in (no peft at run time);
generation helpers: a KV cache prefilled with a shared prompt prefix, and reply text known to be final."""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.cache_utils import DynamicCache, DynamicLayer

from curator.errors import UserError
from curator.models.weights import CheckpointFormatError, load_strict, read_safetensors, skip_random_init

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


# ---- generation helpers: a cached prompt prefix, in-place KV growth, reply text ----------------------


def cache_argument(lm: PreTrainedModel) -> str:
    """The forward's KV-cache keyword: `cache` in recent transformers, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"


def supports_prefix_cache(lm: PreTrainedModel) -> bool:
    """Only plain full-attention layers (Llama): their cache is one growing K/V tensor per layer."""
    try:
        layers = DynamicCache(config=lm.config).layers
    except Exception:  # an architecture this cache API does not know
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


class PrefilledLayer(DynamicLayer):
    """One layer's K/V for a batch: preallocated for the whole run, the shared prefix copied in once.

    DynamicLayer concatenates on every step (copying the whole cache each token); here new tokens are
    written in place, and rows that finished can be dropped (`batch_select_indices`).
    """

    def __init__(self, keys: torch.Tensor | None, values: torch.Tensor | None, capacity: int) -> None:
        super().__init__()
        self.prefix = (keys, values)  # [1, kv_heads, P, head_dim] each, or None: no prefix
        self.capacity = capacity
        self.length = 0
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate rows x capacity positions and copy the prefix into every row."""
        rows, heads, _, dim = key_states.shape
        self.device = key_states.device
        self.key_buffer = key_states.new_empty((rows, heads, self.capacity, dim))
        self.value_buffer = value_states.new_empty(
            (rows, value_states.shape[1], self.capacity, value_states.shape[-1])
        )
        keys, values = self.prefix
        if keys is not None:
            self.length = keys.shape[-2]
            self.key_buffer[:, :, : self.length] = keys
            self.value_buffer[:, :, : self.length] = values
        self.prefix = (None, None)
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions in place; return views of every position so far."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded ({end} positions)")
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        if not self.is_initialized:
            keys = self.prefix[0]
            return 0 if keys is None else keys.shape[-2]
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep only these rows (ascending): moved to the front in place, so no second buffer is needed."""
        if not self.is_initialized:
            return
        filled = slice(0, self.length)
        for row, source in enumerate(indices.tolist()):
            if source < row:
                raise ValueError("batch_select_indices needs ascending row indices")
            if source != row:
                self.key_buffer[row, :, filled].copy_(self.key_buffer[source, :, filled])
                self.value_buffer[row, :, filled].copy_(self.value_buffer[source, :, filled])
        self.key_buffer, self.value_buffer = (
            self.key_buffer[: len(indices)],
            self.value_buffer[: len(indices)],
        )
        self.keys, self.values = self.key_buffer[:, :, filled], self.value_buffer[:, :, filled]


def prefilled_cache(
    lm: PreTrainedModel, prefix: list[tuple[torch.Tensor, torch.Tensor]] | None, capacity: int
) -> DynamicCache:
    """A cache whose every row starts with the shared `prefix` K/V (None: empty), room for `capacity`."""
    cache = DynamicCache(config=lm.config)
    layers = len(cache.layers)
    pairs = prefix if prefix is not None else [(None, None)] * layers
    cache.layers = [PrefilledLayer(keys, values, capacity) for keys, values in pairs]
    return cache


def prefix_kv(
    lm: PreTrainedModel, ids: list[int], device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The K/V of every layer for `ids` at positions 0..len-1 (each [1, kv_heads, len, head_dim])."""
    cache = DynamicCache(config=lm.config)
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    lm(input_ids=input_ids, use_cache=True, logits_to_keep=1, **{cache_argument(lm): cache})
    return [(layer.keys, layer.values) for layer in cache.layers]


# The decoder transformers' LlamaTokenizer builds (SentencePiece byte-fallback BPE).
LLAMA_DECODER = [
    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
    {"type": "ByteFallback"},
    {"type": "Fuse"},
]
LLAMA_STRIP = {"type": "Strip", "content": " ", "start": 1, "stop": 0}
BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def is_llama_decoder(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether decoding is the SentencePiece chain whose text only grows, except over pending byte runs."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return False
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    steps = decoder.get("decoders") if decoder.get("type") == "Sequence" else None
    return steps in (LLAMA_DECODER, [*LLAMA_DECODER, LLAMA_STRIP])


class ReplyText:
    """A reply's text as the reference decodes it after its prompt, and the part later tokens cannot change.

    The reference decodes prompt + reply and cuts at the prompt's length. When the prompt decodes back to
    itself and ends in a closing token (one that is neither a byte piece nor special), that is the text of
    `anchor + reply` after the anchor's text, for the SentencePiece decoder (`exact`). Text before the last
    closing token of the reply is final: only a pending run of byte pieces (an unfinished UTF-8 character,
    or bytes a skipped special token may join) can still change.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, anchor: int) -> None:
        self.tokenizer = tokenizer
        self.anchor = anchor
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        closes = np.asarray([p is not None and not BYTE_PIECE.fullmatch(p) for p in pieces], dtype=bool)
        closes[[i for i in getattr(tokenizer, "added_tokens_decoder", {}) if i < len(closes)]] = False
        closes[[i for i in tokenizer.all_special_ids if i < len(closes)]] = False
        self.closes = closes  # ids past the tokenizer's vocabulary (a padded head) never close
        self.anchor_text = self.decode([anchor])
        self.exact = is_llama_decoder(tokenizer) and anchor < len(closes) and bool(closes[anchor])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def text(self, reply: list[int]) -> str:
        """The reply's text in context (valid when `exact` and the prompt ends with the anchor)."""
        return self.decode([self.anchor, *reply])[len(self.anchor_text) :]

    def stable(self, reply: list[int]) -> str:
        """The reply's text up to its last closing token: no later token changes it."""
        ids = np.asarray(reply, dtype=np.int64)
        known = ids < len(self.closes)
        closing = np.flatnonzero(known & self.closes[np.where(known, ids, 0)])
        return self.text(reply[: int(closing[-1]) + 1]) if len(closing) else ""
