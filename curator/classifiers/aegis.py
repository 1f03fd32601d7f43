"""LLM safety: AEGIS (Llama Guard + LoRA, a generated verdict) and Instruction Data Guard (a poisoning score).

Both run meta-llama/LlamaGuard-7b (gated on the hub) with an NVIDIA LoRA adapter merged into its weights.
AEGIS wraps each document in the Llama Guard prompt and parses the greedy reply; Instruction Data Guard
feeds the raw text through once and scores the last token's final hidden state with a small MLP.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from transformers import GenerationConfig, PreTrainedModel

from curator.classifiers.aegis_prompt import AEGIS_LABELS, format_aegis, parse_aegis_reply
from curator.classifiers.base import DistributedDataClassifier
from curator.config import ClassifierConfig
from curator.errors import ConfigError
from curator.inference.engine import BatchPlan, RunStats, resolve_autocast, run_batches, tokenize
from curator.models.hub import ModelNotAvailableError
from curator.models.llm import load_causal_lm, load_llm_tokenizer
from curator.models.weights import load_strict, read_safetensors

LLAMA_GUARD = "meta-llama/LlamaGuard-7b"
AEGIS_DEFENSIVE = "nvidia/Aegis-AI-Content-Safety-LlamaGuard-Defensive-1.0"
DEFAULT_MAX_LENGTH = 4096  # Llama Guard's context, NeMo Curator's max_length


class LlamaGuardClassifier(DistributedDataClassifier):
    """What both classifiers share: the gated base model, its tokenizer and the merged LLM."""

    base_model: str
    adapter: str | None
    adapter_revision: str | None
    allow_pickle: bool

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

    def load_llm(self, device: torch.device) -> PreTrainedModel:
        """Llama Guard with the adapter merged: bf16 on CUDA by default, float32 on the CPU."""
        dtype = resolve_autocast(self.inference.dtype, device) or torch.float32
        return load_causal_lm(self.base_folder(), self.adapter_folder(), dtype, device, self.allow_pickle)

    def plan(
        self, model: torch.nn.Module, device: torch.device, max_length: int, extra: int = 0
    ) -> BatchPlan:
        """Sorted batches under the token budget, each row charged `extra` generated tokens too."""
        prefetch = self.inference.prefetch
        return BatchPlan(
            token_budget=self.token_budget(model, device, max_length + extra),
            max_rows=self.batch_size,
            sort=self.inference.sort,
            autocast=resolve_autocast(self.inference.dtype, device),
            prefetch=device.type == "cuda" if prefetch is None else prefetch,
            extra_tokens=extra,
        )


class GreedyReply(torch.nn.Module):
    """Greedy continuation of left-padded prompts: the new token ids, padded to `max_new_tokens`."""

    def __init__(self, lm: PreTrainedModel, max_new_tokens: int, pad_id: int) -> None:
        super().__init__()
        self.lm = lm
        self.config = lm.config  # for the engine's memory estimate
        self.max_new_tokens = max_new_tokens
        self.pad_id = pad_id
        self.generation = GenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
            bos_token_id=lm.generation_config.bos_token_id,
            eos_token_id=lm.generation_config.eos_token_id,
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.lm.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=self.generation
        )
        new = out[:, input_ids.shape[1] :]
        return F.pad(new, (0, self.max_new_tokens - new.shape[1]), value=self.pad_id)


def raw_reply(tokenizer: Any, prompt: str, prompt_ids: list[int], new_ids: np.ndarray) -> str:
    """NeMo Curator's raw reply: prompt + new tokens decoded together, cut at the prompt's length.

    Decoding in context keeps the space a SentencePiece tokenizer writes before the first reply word
    (' safe'), which decoding the new tokens alone strips; the parsed label is the same either way.
    """
    text = tokenizer.decode([*prompt_ids, *new_ids.tolist()], skip_special_tokens=True)
    return text[len(prompt) :]


class AegisClassifier(LlamaGuardClassifier):
    """AEGIS content safety: Llama Guard + an NVIDIA LoRA adapter, greedy reply parsed into a label."""

    def __init__(
        self,
        name: str,
        model: str = AEGIS_DEFENSIVE,
        base_model: str | None = None,
        revision: str | None = None,
        keep_raw_pred: bool = False,
        raw_pred_column: str | None = None,
        max_new_tokens: int = 100,
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pred_column", "aegis_pred")
        kwargs.setdefault("max_chars", 6000)
        kwargs.setdefault("max_length", DEFAULT_MAX_LENGTH)
        super().__init__(name, **kwargs)
        if max_new_tokens < 1:
            raise ConfigError(
                f"Classifier {name!r}: max_new_tokens must be at least 1, got {max_new_tokens}."
            )
        self.adapter = model
        self.base_model = base_model or LLAMA_GUARD
        self.adapter_revision = revision  # the revision pins the adapter, this classifier's `model`
        self.keep_raw_pred = keep_raw_pred
        self.raw_pred_column = raw_pred_column or "_aegis_raw_pred"
        self.max_new_tokens = max_new_tokens
        self.allow_pickle = allow_pickle
        self.adapter_folder(), self.base_folder()  # fail on the client, before any cluster starts

    @classmethod
    def from_config(cls, name: str, cfg: ClassifierConfig, **common: Any) -> AegisClassifier:
        return cls(
            name,
            model=cfg.model,
            base_model=cfg.base_model,
            revision=cfg.revision,
            keep_raw_pred=cfg.keep_raw_pred,
            raw_pred_column=cfg.raw_pred_column,
            max_new_tokens=cfg.max_new_tokens,
            allow_pickle=cfg.allow_pickle,
            **common,
        )

    @property
    def labels(self) -> list[str]:
        return list(AEGIS_LABELS)

    def model_key(self) -> Hashable:
        return ("llm_guard", self.base_model, self.adapter, self.adapter_revision, self.max_new_tokens)

    def output_types(self) -> dict[str, pa.DataType]:
        types = {self.pred_column: pa.string()}
        if self.keep_raw_pred:
            types[self.raw_pred_column] = pa.string()
        return types

    def format_text(self, text: str) -> str:
        return format_aegis(text)

    def load_model(self, device: torch.device) -> torch.nn.Module:
        pad_id = self.load_tokenizer().pad_token_id
        return GreedyReply(self.load_llm(device), self.max_new_tokens, pad_id).to(device)

    def predict(self, texts: list[str], stats: RunStats | None = None) -> dict[str, Any]:
        """Generate a reply per document (sorted, batched, left-padded) and parse it; rows in input order."""
        model, tokenizer, device = self._runtime()
        if self.max_chars is not None:
            texts = [t[: self.max_chars] for t in texts]  # cut before wrapping, as upstream
        prompts = [self.format_text(t) for t in texts]
        max_length = self.max_length or DEFAULT_MAX_LENGTH
        ids = tokenize(tokenizer, prompts, max_length)
        self.last_stats = stats = stats if stats is not None else RunStats()
        plan = self.plan(model, device, max_length, extra=self.max_new_tokens)
        new = run_batches(ids, model, plan, tokenizer.pad_token_id, device, left_pad=True, stats=stats)
        replies = [raw_reply(tokenizer, p, i, n) for p, i, n in zip(prompts, ids, new)]
        return self.postprocess(np.asarray(replies, dtype=object))

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        """Raw replies (empty for an empty partition) → the label column and, if kept, the replies."""
        replies = [str(r) for r in outputs.reshape(-1)]
        columns: dict[str, Any] = {
            self.pred_column: np.asarray([parse_aegis_reply(r) for r in replies], object)
        }
        if self.keep_raw_pred:
            columns[self.raw_pred_column] = np.asarray(replies, dtype=object)
        return columns


class GuardHead(torch.nn.Module):
    """nvidia/instruction-data-guard's MLP (NeMo Curator's InstructionDataGuardNet; dropout is off here)."""

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.input_layer = torch.nn.Linear(input_dim, input_dim)
        self.hidden_layer_0 = torch.nn.Linear(input_dim, 2000)
        self.hidden_layer_1 = torch.nn.Linear(2000, 500)
        self.hidden_layer_2 = torch.nn.Linear(500, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = F.normalize(hidden, dim=-1)  # the published net normalises its input itself
        x = F.relu(self.input_layer(x))
        x = F.relu(self.hidden_layer_0(x))
        x = F.relu(self.hidden_layer_1(x))
        return torch.sigmoid(self.hidden_layer_2(x)).flatten()


def load_guard_head(folder: Path, hidden_size: int, allow_pickle: bool = False) -> GuardHead:
    """The MLP from its mixin folder (config.json: input_dim), loaded strictly, in float32."""
    input_dim = json.loads((folder / "config.json").read_text()).get("input_dim", hidden_size)
    if input_dim != hidden_size:
        raise ConfigError(
            f"{folder}: the guard head takes {input_dim}-dim inputs; the LLM's hidden size is {hidden_size}."
        )
    head = GuardHead(input_dim)
    load_strict(head, read_safetensors(folder, allow_pickle))
    return head.eval()


class PoisonScore(torch.nn.Module):
    """One forward pass: the final (normed) hidden state of the last token → the guard head's score."""

    def __init__(self, lm: PreTrainedModel, head: GuardHead) -> None:
        super().__init__()
        self.lm = lm
        self.head = head
        self.config = lm.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # positions count real tokens only, as generate() numbers a left-padded prompt
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        states = self.lm.base_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions
        )
        last = states.last_hidden_state[:, -1, :].float()  # left padding: the last column is the last token
        with torch.autocast(device_type=last.device.type, enabled=False):
            return self.head(last)


class InstructionDataGuardClassifier(LlamaGuardClassifier):
    """Instruction Data Guard: a poisoning score (and is_poisoned = score ≥ 0.5) per instruction sample."""

    def __init__(
        self,
        name: str,
        model: str = "nvidia/instruction-data-guard",
        base_model: str | None = None,
        adapter: str | None = AEGIS_DEFENSIVE,
        revision: str | None = None,
        allow_pickle: bool = False,
        threshold: float = 0.5,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pred_column", "is_poisoned")
        kwargs["score_column"] = kwargs.get("score_column") or "instruction_data_guard_poisoning_score"
        kwargs.setdefault("max_length", DEFAULT_MAX_LENGTH)
        super().__init__(name, **kwargs)
        self.model = model
        self.base_model = base_model or LLAMA_GUARD
        self.adapter = adapter
        self.adapter_revision = None
        self.revision = revision  # pins `model`, the guard head
        self.allow_pickle = allow_pickle
        self.threshold = threshold
        self.head_folder(), self.adapter_folder(), self.base_folder()  # fail on the client

    @classmethod
    def from_config(cls, name: str, cfg: ClassifierConfig, **common: Any) -> InstructionDataGuardClassifier:
        return cls(
            name,
            model=cfg.model,
            base_model=cfg.base_model,
            adapter=cfg.adapter,
            revision=cfg.revision,
            allow_pickle=cfg.allow_pickle,
            **common,
        )

    def head_folder(self) -> Path:
        """The guard head's folder (config.json + model.safetensors)."""
        return self.resolve(self.model, self.revision, self.allow_pickle)

    @property
    def label_column(self) -> str | None:
        return None  # a score, not labels: filter with min_score/max_score

    @property
    def report_columns(self) -> list[str]:
        return [self.pred_column]

    def model_key(self) -> Hashable:
        return ("instruction_data_guard", self.base_model, self.adapter, self.model, self.revision)

    def output_types(self) -> dict[str, pa.DataType]:
        return {self.score_column: pa.float32(), self.pred_column: pa.bool_()}

    def load_model(self, device: torch.device) -> torch.nn.Module:
        lm = self.load_llm(device)
        head = load_guard_head(self.head_folder(), lm.config.hidden_size, self.allow_pickle)
        return PoisonScore(lm, head.to(device))

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        scores = outputs.reshape(-1).astype(np.float32)
        return {self.score_column: scores, self.pred_column: scores >= self.threshold}
