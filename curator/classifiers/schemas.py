"""The YAML keys of each built-in classifier family, apart from the code that runs it.

Hydra composes every run (and answers `--help`, `--cfg` and a mistyped key) against these schemas; kept
free of torch and transformers, that takes a fraction of a second instead of the seconds the families'
modules take to import. Each family's class names its schema (`schema = ...`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curator.config import ClassifierConfig, LabelConfig


@dataclass
class SequenceConfig(ClassifierConfig):
    """`family: sequence_classification`."""

    allow_pickle: bool = False  # load a pickle checkpoint (model.pth, pytorch_model.bin) if no safetensors


@dataclass
class RegressionConfig(SequenceConfig):
    """`family: regression`."""

    int_column: str | None = None  # the score rounded half to even
    label_column: str | None = None  # a label from label_threshold (Mixtral/Nemotron variants)
    labels: list[LabelConfig] = field(default_factory=list)  # [at or above label_threshold, below]
    label_threshold: float = 2.5  # score >= threshold -> labels[0], else labels[1]
    score_range: list[float] | None = None  # clip the score to [low, high]


@dataclass
class MixinConfig(ClassifierConfig):
    """`family: deberta_mixin` and `family: prompt_task_complexity`."""

    base_model: str | None = None  # backbone override (hub id or folder); None: the checkpoint's own
    allow_pickle: bool = False  # load a pickle checkpoint (model.pth, pytorch_model.bin) if no safetensors


@dataclass
class ZeroShotConfig(ClassifierConfig):
    """`family: zero_shot`."""

    labels: list[LabelConfig] = field(default_factory=list)  # name + description (+ examples), by similarity
    label_template: str = "{description}"  # text embedded for a label; {name} and {description}
    temperature: float = 0.05  # softmax temperature over cosine similarities
    # label prototypes: a JSONL/Parquet file of labelled example texts (read once, on the client)
    examples_path: str | None = None
    examples_text_field: str = "text"  # the examples file's text field
    examples_label_field: str = "label"  # the examples file's label field


@dataclass
class LlamaGuardConfig(ClassifierConfig):
    """The keys both Llama Guard families have."""

    base_model: str | None = None  # the base LLM (hub id or folder); None: meta-llama/LlamaGuard-7b
    allow_pickle: bool = False  # load a pickle checkpoint (pytorch_model.bin, adapter_model.bin)


@dataclass
class AegisConfig(LlamaGuardConfig):
    """`family: llm_guard` (`model` is the LoRA adapter)."""

    keep_raw_pred: bool = False  # also write the model's raw reply
    raw_pred_column: str | None = None  # column of the raw reply
    max_new_tokens: int = 100  # generation limit
    generation: str = "fast"  # fast (cached prompt prefix, stop once the label is set) | reference
    score_unsafe: bool = False  # write P("unsafe") of the first reply token to score_column
    unsafe_threshold: float | None = None  # the reply starts "unsafe" iff P >= this (None: greedy)


@dataclass
class GuardConfig(LlamaGuardConfig):
    """`family: instruction_data_guard` (`model` is the MLP head)."""

    adapter: str | None = None  # the LoRA adapter merged into base_model
