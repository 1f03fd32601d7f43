"""Every setting checked before any work: ranges, choices and consistency, all problems in one message.

`check_config(cfg)` runs first in `pipeline.run`; the Python API reuses the classifier, inference and
cluster checks. A problem is one line: the key, the value given and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields
from typing import Any

from curator.config import ClassifierConfig, ClusterConfig, Config, DatasetConfig, InferenceConfig
from curator.errors import ConfigError
from curator.io.readers import INVALID_TEXT

CHOICES: dict[str, tuple[Any, ...]] = {
    "dataset.format": (None, "jsonl", "parquet", "arrow"),
    "dataset.backend": ("pandas", "cudf"),
    "dataset.invalid_text": INVALID_TEXT,
    "cluster.kind": ("local", "local_cuda", "scheduler", "slurm", "sync"),
    "inference.engine": ("native", "crossfit"),
    "inference.device": ("auto", "cpu", "cuda", "simulated"),  # and cuda:N
    "inference.dtype": ("auto", "float32", "bfloat16", "float16"),
    "inference.quantize": (None, "int8"),
    "output.format": (None, "jsonl", "parquet"),
    "output.mode": ("resume", "overwrite", "error"),
    "output.content": ("all", "attributes"),
    "task": ("classify", "mix", "train", "evaluate"),
    "train.kind": ("auto", "classification", "regression"),
    "output.compression": (None, "none", "gzip", "zstd"),
}
# A worker process holds Python, torch, the tokenizer and the model: below this it dies while loading.
MIN_WORKER_MEMORY = 2**30
MEMORY_KINDS = ("local", "local_cuda")  # the kinds that pass cluster.memory_limit to their workers


def _show(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def choice(key: str, value: Any, allowed: Iterable[Any] | None = None) -> Iterator[str]:
    """`key` must be one of its choices (CHOICES[key] unless given)."""
    allowed = tuple(CHOICES[key] if allowed is None else allowed)
    if value not in allowed:
        yield f"{key}={_show(value)}: choose one of {', '.join(_show(a) for a in allowed)}"


def at_least(key: str, value: Any, low: int, optional: bool = False, what: str = "") -> Iterator[str]:
    """An integer >= low (or null when optional)."""
    if value is None and optional:
        return
    if not _is_int(value) or value < low:
        unset = ", or null" if optional else ""
        yield f"{key}={_show(value)}: must be an integer >= {low}{unset}{what}"


def positive(key: str, value: Any, optional: bool = False, what: str = "") -> Iterator[str]:
    """A number > 0 (or null when optional)."""
    if value is None and optional:
        return
    if not _is_number(value) or value <= 0:
        unset = ", or null" if optional else ""
        yield f"{key}={_show(value)}: must be a number > 0{unset}{what}"


def duration(key: str, value: Any, optional: bool = False) -> Iterator[str]:
    """A time > 0: seconds, or a duration dask understands ("90s", "10m", "1h"); null when optional."""
    from dask.utils import parse_timedelta

    if value is None and optional:
        return
    try:
        seconds = parse_timedelta(value, default="seconds") if not isinstance(value, bool) else None
    except (ValueError, KeyError, TypeError):
        seconds = None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        unset = ", or null (no limit)" if optional else ""
        yield f"{key}={_show(value)}: must be a time > 0 in seconds or like 90s, 10m, 1h{unset}"


def mapping(key: str, value: Any) -> Iterator[str]:
    """A mapping with string keys (fsspec storage options)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        shown = type(value).__name__ if value is not None else "null"
        yield f"{key}: must be a mapping of option names to values (e.g. {{endpoint_url: ...}}), not {shown}"


def non_empty(key: str, value: Any, optional: bool = False) -> Iterator[str]:
    """A non-empty string (or null when optional)."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        yield f"{key}={_show(value)}: must be a non-empty string"


# ---- per section ---------------------------------------------------------------------------------
def dataset_problems(cfg: DatasetConfig) -> Iterator[str]:
    from curator.io.partitions import parse_blocksize

    yield from choice("dataset.format", cfg.format)
    yield from choice("dataset.backend", cfg.backend)
    yield from choice("dataset.invalid_text", cfg.invalid_text)
    paths = cfg.path if isinstance(cfg.path, list | tuple) else [cfg.path]
    if not paths or any(not isinstance(x, str) or not x.strip() for x in paths):
        yield f"dataset.path={_show(cfg.path)}: name a file, folder, glob or @list (empty would read '.')"
    yield from non_empty("dataset.text_field", cfg.text_field)
    yield from non_empty("dataset.id_field", cfg.id_field)
    yield from at_least("dataset.files_per_partition", cfg.files_per_partition, 1)
    yield from at_least("dataset.retries", cfg.retries, 0, what=" (re-runs of a task that raised)")
    yield from mapping("dataset.storage_options", cfg.storage_options)
    try:
        parse_blocksize(cfg.blocksize)
    except ConfigError as err:
        yield str(err).rstrip(".")


def memory_per_worker(cfg: ClusterConfig, workers: int) -> int | None:
    """Bytes of host memory each worker may use under cluster.memory_limit (None: no limit)."""
    from dask.utils import parse_bytes
    from distributed.system import MEMORY_LIMIT

    value: Any = cfg.memory_limit
    if value is None or str(value).lower() in ("none", "0", ""):
        return None
    if str(value).lower() == "auto":  # distributed: the machine's memory shared by the workers
        return MEMORY_LIMIT // max(1, workers)
    try:
        number = float(value)
    except ValueError:
        return parse_bytes(str(value))  # "4GB", "1.5 GiB"; a ValueError for nonsense
    return int(number * MEMORY_LIMIT) if number <= 1 else int(number)  # a fraction, or bytes


def memory_problems(cfg: ClusterConfig, workers: int) -> Iterator[str]:
    """cluster.memory_limit must parse and leave each worker room to load a model."""
    try:
        per_worker = memory_per_worker(cfg, workers)
    except (ValueError, TypeError):
        yield (
            f"cluster.memory_limit={_show(cfg.memory_limit)}: not a size; use e.g. 4GB, 8GiB, a fraction "
            "of the machine's memory (0.5), auto (the machine's memory shared by the workers) or 0 (no limit)"
        )
        return
    if per_worker is None or per_worker >= MIN_WORKER_MEMORY:
        return
    from dask.utils import format_bytes

    shared = (
        f" (the machine's memory shared by {workers} worker(s)); set cluster.n_workers lower"
        if str(cfg.memory_limit).lower() == "auto"
        else "; set cluster.memory_limit=4GB or more (auto: the machine's memory shared by the workers)"
    )
    yield (
        f"cluster.memory_limit={_show(cfg.memory_limit)}: {format_bytes(per_worker)} per worker is "
        f"too little for a worker to load a model (at least {format_bytes(MIN_WORKER_MEMORY)}){shared}"
    )


def cluster_problems(cfg: ClusterConfig) -> Iterator[str]:
    from curator.resources import available_cores, plan_workers

    yield from choice("cluster.kind", cfg.kind)
    yield from at_least("cluster.n_workers", cfg.n_workers, 1, optional=True, what=" (null: from the cores)")
    yield from at_least("cluster.threads_per_worker", cfg.threads_per_worker, 1)
    yield from at_least("cluster.torch_threads", cfg.torch_threads, 1, optional=True)
    cores = available_cores()
    if cfg.kind in ("sync", "local") and _is_int(cfg.torch_threads) and cfg.torch_threads > cores:
        yield (
            f"cluster.torch_threads={cfg.torch_threads}: more than this machine's {cores} core(s), where "
            f"threads past them only wait for each other; at most {cores} (null: from the cores)"
        )
    yield from at_least("cluster.jobs", cfg.jobs, 1)
    yield from at_least("cluster.cores", cfg.cores, 1, optional=True)
    yield from at_least("cluster.gpus", cfg.gpus, 0)
    yield from duration("cluster.no_worker_timeout", cfg.no_worker_timeout, optional=True)
    yield from positive(
        "cluster.job_poll_interval", cfg.job_poll_interval, what=" (seconds between squeue checks)"
    )
    if cfg.kind in MEMORY_KINDS:
        workers = 1
        sizes = (cfg.n_workers, cfg.torch_threads)
        if cfg.kind == "local" and all(n is None or (_is_int(n) and n >= 1) for n in sizes):
            workers = plan_workers(cores, cfg.n_workers, cfg.torch_threads)[0]
        elif cfg.kind == "local_cuda" and cfg.cuda_visible_devices:
            workers = len(cfg.cuda_visible_devices)
        yield from memory_problems(cfg, workers)


def classifier_problems(name: str, cfg: ClassifierConfig, prefix: str | None = None) -> Iterator[str]:
    """One classifier's limits and columns; `prefix` is how its keys are named (classifier.<name>)."""
    from curator.classifiers.registry import FAMILIES, family_class

    key = f"classifier.{name}" if prefix is None else prefix
    unknown = list(choice(f"{key}.family", cfg.family, sorted(FAMILIES)))
    yield from unknown
    yield from at_least(f"{key}.batch_size", cfg.batch_size, 1, what=" (a cap on rows per batch)")
    yield from at_least(f"{key}.max_chars", cfg.max_chars, 1, optional=True, what=" (null: no cut)")
    yield from at_least(f"{key}.max_length", cfg.max_length, 1, optional=True, what=" (null: the model's)")
    yield from non_empty(f"{key}.pred_column", cfg.pred_column)
    yield from non_empty(f"{key}.text_field", cfg.text_field, optional=True)
    for column in (f.name for f in fields(cfg) if f.name.endswith("_column") and f.name != "pred_column"):
        yield from non_empty(f"{key}.{column}", getattr(cfg, column), optional=True)
    if not unknown:
        yield from family_class(cfg.family).config_problems(key, cfg)


def inference_problems(cfg: InferenceConfig) -> Iterator[str]:
    yield from choice("inference.engine", cfg.engine)
    if not (isinstance(cfg.device, str) and cfg.device.startswith("cuda:") and cfg.device[5:].isdigit()):
        yield from choice("inference.device", cfg.device, (*CHOICES["inference.device"], "cuda:N"))
    yield from choice("inference.dtype", cfg.dtype)
    yield from choice("inference.quantize", cfg.quantize)
    yield from at_least("inference.token_budget", cfg.token_budget, 1, optional=True, what=" (rows x length)")
    yield from positive("inference.max_mem_gb", cfg.max_mem_gb, optional=True)
    yield from positive("inference.simulated_tokens_per_s", cfg.simulated_tokens_per_s)
    yield from at_least(
        "inference.units_in_flight", cfg.units_in_flight, 1, optional=True, what=" (1: the serial path)"
    )
    yield from at_least("inference.window", cfg.window, 1, optional=True, what=" (null: the whole unit)")
    yield from at_least("inference.tokenizer_threads", cfg.tokenizer_threads, 1, optional=True)


def cuda_here(device: str) -> Iterator[str]:
    """inference.device=cuda on a cluster of this machine's processes: this machine needs the GPU
    (a SLURM or scheduler cluster's workers may have one where the run starts without)."""
    import torch

    if not torch.cuda.is_available():
        yield (
            f"inference.device={device}: this machine has no CUDA GPU that torch can use (torch "
            f"{torch.__version__}); use inference.device=cpu, or run where the GPU is"
        )


def config_problems(cfg: Config) -> list[str]:
    """Every problem of a composed config, in config order."""
    problems = [*dataset_problems(cfg.dataset), *cluster_problems(cfg.cluster)]
    for name, clf in cfg.classifier.items():
        problems.extend(classifier_problems(name, clf))
    flt = cfg.filter
    for key in ("min_score", "max_score"):
        bound = getattr(flt, key)
        if bound is not None and not _is_number(bound):
            why = " (NaN keeps no row)" if isinstance(bound, float) and math.isnan(bound) else ""
            problems.append(f"filter.{key}={_show(bound)}: must be a finite number{why}")
    for key in ("keep", "drop"):
        labels = getattr(flt, key)
        if labels is not None and not (isinstance(labels, list) and all(isinstance(v, str) for v in labels)):
            problems.append(
                f"filter.{key}={_show(labels)}: give a label (filter.{key}=Sports) or a list of labels "
                f"('filter.{key}=[Sports,News]')"
            )
    if isinstance(flt.keep, list) and not flt.keep:  # as the Python API's filter_by=[]
        problems.append(
            "filter.keep=[] would keep no row; give at least one label, or null to keep every label"
        )
    if flt.min_score is not None and flt.max_score is not None and flt.min_score > flt.max_score:
        problems.append(
            f"filter.min_score={flt.min_score} > filter.max_score={flt.max_score}: no row could pass; "
            "min_score must be <= max_score"
        )
    problems.extend(inference_problems(cfg.inference))
    if str(cfg.inference.device).startswith("cuda") and cfg.cluster.kind in ("sync", "local"):
        problems.extend(cuda_here(cfg.inference.device))
    problems.extend(choice("output.format", cfg.output.format))
    problems.extend(choice("output.mode", cfg.output.mode))
    problems.extend(choice("output.content", cfg.output.content))
    problems.extend(choice("task", cfg.task))
    if cfg.task == "mix" and not cfg.mix.attributes:
        problems.append(
            "task=mix needs mix.attributes: the output.path of a run with output.content=attributes"
        )
    if cfg.task == "mix" and cfg.output.content == "attributes":
        problems.append("task=mix writes documents: leave output.content=all")
    if cfg.task == "train":
        problems.extend(train_problems(cfg))
    if cfg.task == "evaluate":
        problems.extend(non_empty("evaluate.label_field", cfg.evaluate.label_field))
    problems.extend(choice("output.compression", cfg.output.compression))
    problems.extend(at_least("output.row_group_size", cfg.output.row_group_size, 1, optional=True))
    problems.extend(mapping("output.storage_options", cfg.output.storage_options))
    return problems


def train_problems(cfg: Config) -> Iterator[str]:
    """task=train: a name usable as a classifier name and a file name, sane split and optimiser settings."""
    t = cfg.train
    if not t.name or not str(t.name).replace("_", "").replace("-", "").isalnum():
        yield f"train.name={_show(t.name)}: give the new classifier a name (letters, digits, _ and -)"
    yield from non_empty("train.label_field", t.label_field)
    yield from non_empty("train.encoder", t.encoder)
    yield from choice("train.kind", t.kind)
    if not (_is_number(t.validation) and 0 <= t.validation < 1):
        yield f"train.validation={t.validation}: a share of the rows, >= 0 (0: no validation) and < 1"
    yield from at_least("train.hidden", t.hidden, 0, what=" (0: a linear head)")
    yield from at_least("train.epochs", t.epochs, 1)
    yield from at_least("train.max_chars", t.max_chars, 1, optional=True, what=" (null: no cut)")
    yield from at_least("train.max_length", t.max_length, 1, optional=True, what=" (null: the encoder's)")
    if not _is_number(t.weight_decay) or t.weight_decay < 0:
        yield f"train.weight_decay={t.weight_decay}: must be >= 0"


def raise_problems(problems: list[str], what: str = "setting") -> None:
    """One ConfigError listing every problem (none: nothing happens)."""
    if len(problems) == 1:
        raise ConfigError(f"Invalid {what}: {problems[0]}.")
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{len(problems)} invalid {what}s:\n{listed}")


def check_config(cfg: Config) -> None:
    """Refuse a run whose settings cannot work, before any file is read or cluster started."""
    raise_problems(config_problems(cfg))
