"""Structured-config schemas: every config group is backed by a dataclass, so typos fail at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


@dataclass
class DatasetConfig:
    """Where the documents are and which column holds the text."""

    name: str = MISSING  # short name, used in the default output path
    path: Any = MISSING  # a file, a directory, a glob, or a list of those
    format: str | None = None  # jsonl | parquet; None: from each file's extension
    text_field: str = "text"  # the column to classify
    id_field: str = "id"  # kept if present, else made from file name + line/row
    backend: str = "pandas"  # pandas | cudf (GPU clusters only)


@dataclass
class ClusterConfig:
    """Which Dask cluster runs the work."""

    kind: str = "local"  # local | sync | scheduler
    n_workers: int | None = None  # None: available cores // torch_threads
    threads_per_worker: int = 1  # Dask task threads per worker (keep 1 for CPU inference)
    torch_threads: int | None = None  # intra-op threads per worker; None: share of the cores
    memory_limit: str = "auto"  # per worker, as distributed understands it
    processes: bool = True  # worker processes (True) or threads in this process (False)
    dashboard_address: str | None = ":0"  # None disables the dashboard
    address: str | None = None  # kind=scheduler: tcp://host:port
    scheduler_file: str | None = None  # kind=scheduler: path written by `dask scheduler --scheduler-file`


@dataclass
class LabelConfig:
    """One label of a zero-shot classifier: a name and the text it is matched against."""

    name: str = MISSING
    description: str = ""


@dataclass
class ClassifierConfig:
    """One classifier: mostly data (model family, model, labels, columns, limits)."""

    family: str = MISSING  # model family; see FAMILIES in curator.classifiers.registry
    model: str = MISSING  # hub id or local path
    revision: str | None = None  # hub revision to pin
    base_model: str | None = None  # mixin: backbone override; llm_guard: the base LLM under the LoRA adapter
    adapter: str | None = None  # instruction_data_guard: the LoRA adapter applied to base_model
    allow_pickle: bool = False  # load a pickle checkpoint (model.pth, pytorch_model.bin) if no safetensors
    labels: list[LabelConfig] = field(default_factory=list)  # zero-shot labels; regression: [above, below]
    label_template: str = "{description}"  # text embedded for a label; {name} and {description}
    temperature: float = 0.05  # zero-shot softmax temperature over cosine similarities
    pred_column: str = MISSING  # predicted label
    score_column: str | None = None  # float score of the prediction (filters test it)
    prob_column: str | None = None  # full probability vector (list), written when keep_prob
    keep_prob: bool = False
    text_field: str | None = None  # None: dataset.text_field
    max_chars: int | None = None  # cut documents to this many code points before tokenising
    max_length: int | None = None  # token truncation; None: the model's own limit
    batch_size: int = 256  # cap on rows per batch; the token budget decides the actual size
    int_column: str | None = None  # regression: the score rounded half to even
    label_column: str | None = None  # regression: a label from label_threshold (Mixtral/Nemotron variants)
    label_threshold: float = 2.5  # regression: score >= threshold -> labels[0], else labels[1]
    score_range: list[float] | None = None  # regression: clip the score to [low, high]
    keep_raw_pred: bool = False  # llm_guard: also write the model's raw reply
    raw_pred_column: str | None = None  # llm_guard: column of the raw reply
    max_new_tokens: int = 100  # llm_guard: generation limit


@dataclass
class FilterConfig:
    """Which rows to keep; every condition that is set must hold (AND)."""

    column: str | None = None  # label column; None: the first classifier's prediction column
    score_column: str | None = None  # None: the first classifier's score column
    keep: list[str] | None = None  # keep rows whose label is one of these
    drop: list[str] | None = None  # drop rows whose label is one of these
    min_score: float | None = None  # keep rows with score >= min_score
    max_score: float | None = None  # keep rows with score <= max_score
    write_filtered: bool = False  # also write filtered-out rows to <output.path>/filtered/


@dataclass
class InferenceConfig:
    """How batches are formed and where the model runs."""

    engine: str = "native"  # native (this project's batcher) | crossfit (GPU + cuDF only)
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, float32 on CPU) | float32 | bfloat16 | float16
    token_budget: int | None = None  # rows x padded length per batch; None: 16384 on CPU, from memory on CUDA
    sort: bool = True  # sort by token length before batching (off only to measure what it buys)
    prefetch: bool | None = None  # pad/copy the next batch in a thread; None: on for CUDA, off for CPU
    quantize: str | None = None  # int8: dynamic int8 quantisation of Linear layers (CPU only)
    max_mem_gb: float | None = None  # CUDA: memory batches may use; None: what is free on the device


@dataclass
class OutputConfig:
    """Where and how results are written."""

    path: str | None = None  # None: outputs/data/<dataset.name>/<classifier names> (stable across reruns)
    format: str | None = None  # jsonl | parquet; None: same as each input file


@dataclass
class Config:
    """The whole run."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    classifier: dict[str, ClassifierConfig] = field(default_factory=dict)
    filter: FilterConfig = field(default_factory=FilterConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    quiet: bool = False  # no summary table on stdout


def package_data(name: str) -> str:
    """Resolve a folder shipped inside the package (used as ${curator.data:sample})."""
    return str(resources.files("curator") / "data" / name)


def register_configs() -> None:
    """Register the schemas and resolvers; idempotent, called before any composition."""
    if not OmegaConf.has_resolver("curator.data"):
        OmegaConf.register_new_resolver("curator.data", package_data)
    ConfigStore.instance().store(name="base_config", node=Config)


def to_config(cfg: Any) -> Config:
    """Turn a composed DictConfig into plain dataclasses (code below the entry point never sees Hydra)."""
    if isinstance(cfg, Config):
        return cfg
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]
