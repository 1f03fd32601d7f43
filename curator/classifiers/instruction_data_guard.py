"""Instruction Data Guard: a poisoning score per instruction sample, from the AEGIS defensive model's
final hidden state at the last token (one forward pass, no generation) fed to a small published MLP."""

from __future__ import annotations

import json
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from curator.classifiers.llama_guard import (
    AEGIS_DEFENSIVE,
    LLAMA_GUARD,
    LlamaGuardClassifier,
)
from curator.classifiers.schemas import GuardConfig
from curator.errors import ConfigError
from curator.models.weights import load_strict, read_safetensors

if TYPE_CHECKING:  # transformers.modeling_utils costs 1.5 s to import: annotations only
    from transformers import PreTrainedModel

DEFAULT_SCORE_COLUMN = "instruction_data_guard_poisoning_score"


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
        states = self.lm.base_model(  # the decoder alone: no output head over the vocabulary, no cache
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False
        )
        last = states.last_hidden_state[:, -1, :].float()  # left padding: the last column is the last token
        with torch.autocast(device_type=last.device.type, enabled=False):
            return self.head(last)


class InstructionDataGuardClassifier(LlamaGuardClassifier):
    """Instruction Data Guard: a poisoning score (and is_poisoned = score ≥ 0.5) per instruction sample."""

    schema = GuardConfig

    keeps_kv_cache = False

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
        kwargs["score_column"] = kwargs.get("score_column") or DEFAULT_SCORE_COLUMN
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
    def config_columns(cls, cfg: GuardConfig) -> list[str]:
        return [*super().config_columns(cfg), *([] if cfg.score_column else [DEFAULT_SCORE_COLUMN])]

    @classmethod
    def config_labels(cls, cfg: GuardConfig) -> tuple[list[str], str] | None:
        return [], "nowhere: it writes a score and a flag"

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
