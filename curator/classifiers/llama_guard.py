"""What the Llama Guard classifiers share (AEGIS, Instruction Data Guard): the gated base model, its
tokenizer, an NVIDIA LoRA adapter merged into its weights, and NeMo Curator's fixed token limit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from curator.classifiers.base import DistributedDataClassifier
from curator.inference.engine import resolve_autocast
from curator.inference.memory import DEFAULT_CPU_TOKEN_BUDGET, llm_bytes_per_token
from curator.models.hub import ModelNotAvailableError
from curator.models.llm import load_causal_lm, load_llm_tokenizer

if TYPE_CHECKING:  # transformers.modeling_utils costs 1.5 s to import: annotations only
    from transformers import PreTrainedModel

LLAMA_GUARD = "meta-llama/LlamaGuard-7b"
AEGIS_DEFENSIVE = "nvidia/Aegis-AI-Content-Safety-LlamaGuard-Defensive-1.0"
# NeMo Curator's AegisConfig.max_length (its AegisHFModel.max_seq_length returns it, for AEGIS and Instruction
# Data Guard alike); also Llama Guard's max_position_embeddings.
NEMO_MAX_LENGTH = 4096


class LlamaGuardClassifier(DistributedDataClassifier):
    """What both classifiers share: the gated base model, its tokenizer and the merged LLM."""

    base_model: str
    adapter: str | None
    adapter_revision: str | None
    allow_pickle: bool
    keeps_kv_cache = True  # generation holds every token's K/V; a single forward pass does not

    def base_folder(self) -> Path:
        """The Llama Guard folder; when it cannot be fetched, say how to get access (it is gated)."""
        try:
            return self.resolve(self.base_model, None, self.allow_pickle)
        except ModelNotAvailableError as err:
            if self.base_model.startswith((".", "/", "~")):
                raise
            raise ModelNotAvailableError(
                f"{err} {self.base_model!r} is the base model of classifier {self.name!r}; Llama Guard is "
                f"gated: request access on https://huggingface.co/{self.base_model}, then set HF_TOKEN "
                "to a token of the account that has it."
            ) from None

    def adapter_folder(self) -> Path | None:
        """The LoRA adapter's folder (None: the base model as is)."""
        return self.resolve(self.adapter, self.adapter_revision, self.allow_pickle) if self.adapter else None

    def load_tokenizer(self) -> Any:
        return load_llm_tokenizer(self.base_folder())

    def reference_length(self, tokenizer: Any) -> int:
        """NeMo Curator's fixed limit for both LLM classifiers (not read from the model)."""
        return NEMO_MAX_LENGTH

    def load_llm(self, device: torch.device) -> PreTrainedModel:
        """Llama Guard with the adapter merged: bf16 on CUDA by default, float32 on the CPU."""
        dtype = resolve_autocast(self.inference.dtype, device) or torch.float32
        return load_causal_lm(self.base_folder(), self.adapter_folder(), dtype, device, self.allow_pickle)

    def cpu_budget(self, config: Any, max_length: int, dtype_bytes: int = 4) -> int:
        """Decode steps need rows: a fixed budget, not the encoders' cache-sized one."""
        return DEFAULT_CPU_TOKEN_BUDGET

    def memory_per_token(self, config: Any, dtype_bytes: int) -> float | None:
        """The LLM's bytes per token: one layer's activations, plus every layer's K/V when it generates."""
        return llm_bytes_per_token(config, dtype_bytes, kv_cache=self.keeps_kv_cache)
