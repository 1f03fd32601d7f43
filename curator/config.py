"""Structured-config schemas: every config group is backed by a dataclass, so typos fail at start-up."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from importlib import resources
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from curator.errors import ConfigError


@dataclass
class DatasetConfig:
    """Where the documents are and which column holds the text."""

    name: str = MISSING  # short name, used in the default output path
    path: Any = MISSING  # file, folder, glob, @list-file (a path a line), or a list; local or fsspec URL
    format: str | None = None  # jsonl | parquet | arrow; None: from each file's extension
    text_field: str = "text"  # the column to classify
    id_field: str = "id"  # kept if present, else made from file name + line/row
    backend: str = "pandas"  # pandas | cudf (GPU clusters only)
    # Plain JSONL (byte ranges on line starts) and Parquet (row groups) larger than this are split into
    # parts written as <name>.partNNNN.<ext>; compressed files never are. Bytes or "128MiB"; null: never.
    blocksize: Any = "128MiB"
    files_per_partition: int = 1  # group up to this many small files (together ≤ blocksize) per task
    retries: int = 1  # re-run a task that raised this often before the run fails (worker deaths: Dask's)
    # Text that is not valid Unicode (undecodable bytes, lone surrogates): quarantine (default) | replace
    # (each bad code point becomes U+FFFD; the record is classified and counted as repaired)
    invalid_text: str = "quarantine"
    # fsspec options for dataset.path's filesystem (s3: endpoint_url, client_kwargs, anon, ...). Credentials
    # come from the environment (AWS_ACCESS_KEY_ID, ...); any given here are kept out of logs and reports
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClusterConfig:
    """Which Dask cluster runs the work; each key says which kinds read it (one schema, flat keys)."""

    kind: str = "local"  # local | local_cuda | scheduler | slurm | sync
    n_workers: int | None = None  # local: None = cores // torch_threads; slurm (CPU): workers per job
    threads_per_worker: int = 1  # Dask task threads per worker (keep 1 for inference)
    torch_threads: int | None = None  # intra-op threads per worker; None: its share of the cores
    memory_limit: str = "auto"  # local, local_cuda: host memory per worker, as distributed understands it
    processes: bool = True  # local: worker processes (True) or threads in this process (False)
    dashboard_address: str | None = ":0"  # local, local_cuda, slurm: None disables the dashboard
    protocol: str | None = None  # local_cuda, slurm: tcp | ucx (UCX needs ucx-py); None: tcp
    interface: str | None = None  # local_cuda, slurm: network interface (e.g. ib0); None: the default
    local_directory: str | None = None  # worker scratch space for spilling; None: Dask's temporary-directory
    # local_cuda (dask-cuda)
    cuda_visible_devices: list[int] | None = None  # GPUs that get a worker, e.g. [0,1]; None: all visible
    rmm_pool_size: str | None = None  # per-GPU RMM pool for cuDF ("24GB" or "0.5"); None: no pool
    device_memory_limit: str | None = None  # spill device memory to host above this; None: dask-cuda default
    enable_cudf_spill: bool = False  # cuDF's own spilling (dataset.backend=cudf)
    # scheduler: join a running cluster
    scheduler_address: str | None = None  # tcp://host:8786
    address: str | None = None  # older name of scheduler_address, still accepted
    scheduler_file: str | None = None  # path written by `dask scheduler --scheduler-file`
    # slurm (dask-jobqueue): each job runs the workers of one node or allocation
    jobs: int = 1  # jobs to submit (scale to)
    cores: int | None = None  # CPUs per job (--cpus-per-task); None: the site's jobqueue.slurm.cores
    memory: str | None = None  # memory per job, e.g. 64GB; None: the site's jobqueue.slurm.memory
    # walltime, job_name (and cores, memory when null): None passes nothing, so the site's jobqueue.yaml
    # (jobqueue.slurm.*) decides, else dask-jobqueue's own default (walltime 00:30:00, name dask-worker)
    walltime: str | None = None  # e.g. "04:00:00"; a job that reaches it is replaced like any lost job
    job_name: str | None = None  # sbatch -J; None: the site's jobqueue.slurm.name
    partition: str | None = None  # -p; None: the site default
    account: str | None = None  # -A
    gpus: int = 0  # GPUs per job (--gres=gpu:N); > 0 runs `dask cuda worker`, one worker per GPU
    worker_command: str | None = None  # run as python -m <this>; None: dask worker, or dask cuda worker
    worker_extra_args: list[str] = field(default_factory=list)  # e.g. [--rmm-pool-size, 24GB]
    job_extra_directives: list[str] = field(default_factory=list)  # more #SBATCH lines, e.g. [--qos=high]
    job_script_prologue: list[str] = field(default_factory=list)  # module load ..., source .../activate
    log_directory: str | None = None  # worker job logs; None: the submission directory
    python: str | None = None  # interpreter on the nodes; None: this one (shared filesystem)
    # slurm: worker jobs that end (cancelled, walltime, preempted, node failure) are replaced; with no Dask
    # worker for this long (seconds, or "10m"), the run stops and says how to resume. None: wait forever
    no_worker_timeout: Any = 300
    job_poll_interval: float = 5.0  # slurm: seconds between squeue checks of the worker jobs


@dataclass
class LabelConfig:
    """One label of a zero-shot classifier: a name and the text it is matched against."""

    name: str = MISSING
    description: str = ""
    examples: list[str] = field(
        default_factory=list
    )  # zero-shot: example texts, averaged into the label's vector


@dataclass
class ClassifierConfig:
    """The keys every classifier has; each family's schema extends it (`schema` on the family's class)."""

    family: str = MISSING  # model family: a name registered in curator.classifiers.registry
    model: str = MISSING  # hub id or local path
    revision: str | None = None  # hub revision to pin
    pred_column: str = MISSING  # predicted label
    score_column: str | None = None  # float score of the prediction (filters test it)
    prob_column: str | None = None  # full probability vector (list), written when keep_prob
    keep_prob: bool = False
    text_field: str | None = None  # None: dataset.text_field
    max_chars: int | None = None  # cut documents to this many code points before tokenising
    max_length: int | None = None  # token truncation; None: the model's own limit
    batch_size: int = 256  # cap on rows per batch; the token budget decides the actual size


@dataclass
class FilterConfig:
    """Which rows to keep; every condition that is set must hold (AND)."""

    column: str | None = None  # label column; None: the first classifier's prediction column
    score_column: str | None = None  # None: the first classifier's score column
    # keep rows whose label is one of these: a list, or one label (`filter.keep=Sports` as [Sports])
    keep: Any = None
    drop: Any = None  # drop rows whose label is one of these (a list, or one label)
    min_score: float | None = None  # keep rows with score >= min_score
    max_score: float | None = None  # keep rows with score <= max_score
    write_filtered: bool = False  # also write filtered-out rows to <output.path>/filtered/

    def __post_init__(self) -> None:
        """One label as a list of one, and numbers as the label strings they stand for (as list[str]
        did), so `filter.keep=Sports` and `'filter.keep=[Sports]'` are one setting and one fingerprint;
        anything else (a mapping, nested lists) is left for the config check to name."""
        for name in ("keep", "drop"):
            value = getattr(self, name)
            if isinstance(value, (str, int, float)):
                value = [value]
            if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
                setattr(self, name, [v if isinstance(v, str) else str(v) for v in value])


@dataclass
class InferenceConfig:
    """How batches are formed and where the model runs."""

    engine: str = "native"  # native (this project's batcher) | crossfit (GPU + cuDF only)
    # auto | cpu | cuda | cuda:N | simulated (a stand-in GPU for tests and benchmarks: each batch takes
    # padded tokens / simulated_tokens_per_s seconds with the GIL released; outputs a hash of the ids)
    device: str = "auto"
    # auto (bf16 autocast on CUDA, and on CPUs with native bf16 such as AMX; float32 on other CPUs)
    # | float32 | bfloat16 | float16
    dtype: str = "auto"
    # rows x padded length per batch; None: a cache-sized budget for encoders on CPU (16384 for LLMs),
    # from free memory on CUDA
    token_budget: int | None = None
    sort: bool = True  # sort by token length before batching (off only to measure what it buys)
    prefetch: bool | None = None  # pad/copy the next batch in a thread; None: on for CUDA, off for CPU
    quantize: str | None = None  # int8: dynamic int8 quantisation of Linear layers (CPU only)
    max_mem_gb: float | None = None  # CUDA: memory batches may use; None: what is free on the device
    fast_encoder: bool = True  # BERT/RoBERTa/XLM-R: fused Q/K/V, first-token-only last layer (same results)
    # lean DeBERTa and BERT-family forwards on CPU: attention by a C++ kernel compiled on first use, in
    # float32 (a compiler needed; without one PyTorch's ops run); false: PyTorch's ops always (same results
    # within float rounding)
    native_attention: bool = True
    simulated_tokens_per_s: float = (
        1_000_000.0  # device=simulated: padded tokens the stand-in runs per second
    )
    # tasks a worker runs at once (each holds its units in memory): while one has the device, the others
    # read, tokenise, post-process and write; batches take turns on the one device. 1: the serial path;
    # None: 3 on a GPU (or the simulated one), 1 on CPU, where host work would take the model's cores
    units_in_flight: int | None = None
    # documents tokenised, length-sorted and batched together inside a unit: the device starts on the
    # first window while the next ones are tokenised; null: the whole unit is one window
    window: int | None = 4096
    tokenizer_threads: int | None = None  # host threads that tokenise a window; None: the worker's cores


@dataclass
class OutputConfig:
    """Where and how results are written."""

    path: str | None = None  # None: outputs/data/<dataset.name>/<classifier names> (stable across reruns)
    format: str | None = None  # jsonl | parquet; None: same as each input file
    # resume: skip units .curator/manifest.jsonl lists as done (same config fingerprint only);
    # overwrite: delete what the previous run recorded, then start afresh; error: refuse a used folder
    mode: str = "resume"
    # all: the documents with the classifiers' columns; attributes: the id and the classifiers' columns
    # only, one row per input record in input order (plus a boolean `keep` column when a filter is set)
    content: str = "all"
    compression: str | None = None  # none | gzip | zstd; null: as each input (.gz, .zst), Parquet snappy
    row_group_size: int | None = None  # Parquet rows per row group; null: pyarrow's default
    # fsspec options for output.path's filesystem, as dataset.storage_options (credentials: environment)
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class MixConfig:
    """task=mix: join attribute files onto the documents and filter, without running a model."""

    attributes: str | None = None  # the output.path of a run with output.content=attributes


@dataclass
class TrainConfig:
    """task=train: fit a head on sentence embeddings of a labelled dataset, write it as a classifier."""

    name: str | None = None  # the new classifier's name: classifier=<name> runs it (required)
    # labelled JSONL/Parquet file(s), or a previous run's output.path (distillation); None: dataset.path
    data: str | None = None
    label_field: str = "label"  # the label (or score) column; a teacher's column, e.g. aegis_pred
    kind: str = "auto"  # classification | regression | auto (float values: regression, else classification)
    encoder: str = "sentence-transformers/all-MiniLM-L6-v2"  # sentence encoder (hub id or folder)
    max_chars: int | None = 2000  # documents cut to this many code points, as the zero-shot classifiers
    max_length: int | None = None  # token limit; None: sentence-transformers' max_seq_length
    validation: float = 0.2  # share held out for validation (stratified per label, seeded); 0: none
    seed: int = 0  # the split and the head's initialisation
    hidden: int = 0  # 0: a linear head; N: one hidden ReLU layer of N units
    epochs: int = 300  # L-BFGS iterations (full batch)
    weight_decay: float = 1e-4  # L2 penalty on the head's weights
    class_weights: bool = True  # weigh each class by inverse frequency (imbalanced labels)
    output: str = "classifiers"  # writes <output>/<name>/ (the head) and <output>/classifier/<name>.yaml


@dataclass
class EvaluateConfig:
    """task=evaluate: score the selected classifier(s) against a labelled file."""

    data: str | None = None  # labelled JSONL/Parquet file(s); None: dataset.path
    label_field: str = "label"  # the gold label column


@dataclass
class Config:
    """The whole run."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    classifier: dict[str, ClassifierConfig] = field(default_factory=dict)  # each in its family's schema
    filter: FilterConfig = field(default_factory=FilterConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    quiet: bool = False  # no summary table on stdout
    # classify | mix (attributes of an earlier run + the filter, no model) | train (a head from labelled
    # data) | evaluate (the classifier(s) against gold labels)
    task: str = "classify"
    mix: MixConfig = field(default_factory=MixConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


def package_data(name: str) -> str:
    """Resolve a folder shipped inside the package (used as ${curator.data:sample})."""
    return str(resources.files("curator") / "data" / name)


def register_configs() -> None:
    """Register the schemas and resolvers; idempotent, called before any composition.

    A classifier node accepts the keys of every registered family (Hydra checks names and types, also of
    `classifier.<name>.<key>=value`); `to_config` then holds each to its own family's schema.
    """
    from curator.classifiers.registry import composed_config

    if not OmegaConf.has_resolver("curator.data"):
        OmegaConf.register_new_resolver("curator.data", package_data)
    ConfigStore.instance().store(name="base_config", node=composed_config())


def unknown_keys(node: DictConfig, path: str = "") -> Iterator[str]:
    """Dotted keys of a composed config that its dataclass schema does not have (added with `+`); maps
    (`storage_options`, the classifiers by name) take any key, and their values are checked in turn."""
    kind = OmegaConf.get_type(node)
    allowed = {f.name for f in fields(kind)} if is_dataclass(kind) else None
    for key in node:
        if allowed is not None and key not in allowed:
            yield f"{path}{key}"
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            yield from unknown_keys(child, f"{path}{key}.")


def to_config(cfg: Any) -> Config:
    """Turn a composed DictConfig into plain dataclasses (code below the entry point never sees Hydra),
    each classifier in its family's own schema (a key of another family is an error here)."""
    if isinstance(cfg, Config):
        return cfg
    from curator.classifiers.registry import family_config

    if unknown := sorted(unknown_keys(cfg)):
        raise ConfigError(
            f"Unknown setting(s): {', '.join(unknown)}. A `+` override adds a key the config has no place "
            "for, and it would be ignored: check the spelling (`python run.py --cfg job` shows every key)."
        )
    composed = OmegaConf.to_object(cfg)
    values = {f.name: getattr(composed, f.name) for f in fields(Config)}
    values["classifier"] = {name: family_config(name, c) for name, c in composed.classifier.items()}
    return Config(**values)
