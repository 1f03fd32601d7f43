"""DistributedDataClassifier: the few hooks a classifier implements; the engine does the rest."""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from curator.columns import ERROR_COLUMN, STATS_ATTR
from curator.config import ClassifierConfig, InferenceConfig
from curator.errors import ConfigError
from curator.inference import cache
from curator.inference.engine import (
    BatchPlan,
    RunStats,
    check_engine,
    own_device,
    plan_turns,
    quantize_int8,
    resolve_autocast,
    resolve_device,
    run_batches,
)
from curator.inference.memory import cpu_token_budget, cuda_token_budget
from curator.inference.numerics import numerics_label, worker_name
from curator.inference.simulated import SimulatedModel
from curator.inference.simulated import refuse_generation as refuse_simulated
from curator.inference.tokens import tokenize_windows
from curator.models.fast_encoder import attention_kind, set_native_attention
from curator.models.hub import resolve_model
from curator.models.limits import absolute_position_limit, reference_max_length

# Rows the reader marked as bad carry their reason in ERROR_COLUMN; they are never classified.
# Per-classifier timing and token counts of a partition travel in DataFrame.attrs[STATS_ATTR].


# Bins of the score histograms in run reports.
HISTOGRAM_BINS = 20
# Texts in the first window of a unit that finds its device starving (then 2x, 4x ... up to the window).
RAMP_FIRST_WINDOW = 64
# Arrow types of flags and rounded scores → pandas dtypes that keep missing values missing.
_NULLABLE = {pa.bool_(): pd.BooleanDtype(), pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype()}


class DistributedDataClassifier:
    """Base class: subclass and implement `load_model`, `load_tokenizer` and `postprocess`.

    Optional hooks: `format_text` (prompt formatting) and `model_key` (what makes two models differ).
    The engine tokenises, sorts by length, batches under a token budget, runs `model(input_ids,
    attention_mask)` and hands `postprocess` the outputs in the partition's row order.
    """

    # The YAML keys of this family (each also a keyword of __init__); see the registry.
    schema: ClassVar[type[ClassifierConfig]] = ClassifierConfig
    # True for families with their own generation loop (AEGIS): engines of one forward pass refuse them.
    generates: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        text_field: str = "text",
        pred_column: str = "pred",
        score_column: str | None = None,
        prob_column: str | None = None,
        keep_prob: bool = False,
        max_chars: int | None = None,
        max_length: int | None = None,
        batch_size: int = 256,
        inference: InferenceConfig | None = None,
        token: str | bool | None = None,
        filter_by: list[str] | None = None,
    ) -> None:
        self.name = name
        self.text_field = text_field
        self.pred_column = pred_column
        self.score_column = score_column
        self.prob_column = prob_column
        self.keep_prob = keep_prob
        self.max_chars = max_chars
        self.max_length = max_length  # a user's override; None: the reference's limit (`token_limit`)
        self._reference_length: int | None = None
        self.batch_size = batch_size  # a cap on rows per batch; the token budget decides the size
        self.inference = inference or InferenceConfig()
        check_engine(self.inference)
        if self.inference.engine == "crossfit":
            from curator.inference.crossfit_engine import refuse_generation

            refuse_generation(self)
        if self.inference.device == "simulated":
            refuse_simulated(self)
        self.last_stats = RunStats()
        self._token = token  # Python API `token=`; never pickled, logged or saved (else HF_TOKEN is used)
        # Python API: labels to keep (a string is one label, never its characters)
        self.filter_by = [filter_by] if isinstance(filter_by, str) else filter_by and list(filter_by)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for Dask workers without the token (workers read the files the client fetched)."""
        state = self.__dict__.copy()
        state["_token"] = None
        return state

    def resolve(self, model: str, revision: str | None = None, allow_pickle: bool = False) -> Path:
        """A model's local folder: fetched on the client (with the token), found in the cache on workers."""
        return resolve_model(model, revision, token=self._token, allow_pickle=allow_pickle)

    @classmethod
    def from_config(cls, name: str, cfg: ClassifierConfig, **common: Any) -> DistributedDataClassifier:
        """Build from a classifier's settings (its `schema`): each key is the keyword of the same name."""
        keys = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in ("family", *common)}
        return cls(name, **keys, **common)

    # ---- what a config says, before any model is built (the catalog and start-up checks) ---------
    @classmethod
    def config_columns(cls, cfg: ClassifierConfig) -> list[str]:
        """The output columns `cfg` writes, conditional ones with their condition (for the catalog)."""
        out = [c for c in (cfg.pred_column, cfg.score_column) if c]
        if cfg.prob_column:
            out.append(cfg.prob_column + ("" if cfg.keep_prob else " (with keep_prob=true)"))
        return out

    @classmethod
    def config_labels(cls, cfg: ClassifierConfig) -> tuple[list[str], str] | None:
        """The labels `cfg` names and where they come from; None: the checkpoint's (the catalog looks)."""
        return None

    @classmethod
    def config_problems(cls, key: str, cfg: ClassifierConfig) -> Iterator[str]:
        """Problems of this family's own keys, each a line naming `key`.<field> (see curator.validate)."""
        return iter(())

    @classmethod
    def config_fingerprint(cls, cfg: ClassifierConfig) -> str | None:
        """A digest of files the config names besides the model (examples, trained heads); enters the
        resume fingerprint so that editing them reruns the classifier. None: no such files."""
        return None

    # ---- hooks ---------------------------------------------------------------------------------
    def load_model(self, device: torch.device) -> torch.nn.Module:
        """Build the model on `device`; called once per worker process (then cached)."""
        raise NotImplementedError

    def load_tokenizer(self) -> Any:
        """The model's Hugging Face fast tokenizer."""
        raise NotImplementedError

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        """Turn model outputs (rows in partition order) into output columns."""
        raise NotImplementedError

    def label_columns(self, probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
        """Prediction, its probability and (optionally) the whole distribution from class probabilities."""
        probs = probs.reshape(-1, len(labels)).astype(np.float32)
        best = probs.argmax(axis=1)
        columns: dict[str, Any] = {self.pred_column: np.asarray(labels, dtype=object)[best]}
        if self.score_column:
            columns[self.score_column] = probs[np.arange(len(probs)), best]
        if self.keep_prob and self.prob_column:
            columns[self.prob_column] = list(probs)
        return columns

    def model_config(self) -> Any:
        """The transformers config of the network that reads the tokens (its `max_position_embeddings`
        is the reference's fallback limit); None when there is none."""
        return None

    def reference_length(self, tokenizer: Any) -> int:
        """Tokens the reference reads: CrossFit's rule (the tokenizer's `model_max_length`, else the
        backbone's `max_position_embeddings`). Families whose reference differs override this."""
        return reference_max_length(tokenizer, self.model_config(), self.name)

    def token_limit(self, tokenizer: Any) -> int:
        """Tokens per document the model reads: `max_length` if set, else the reference's (derived once)."""
        if self.max_length:
            if self._reference_length is None:  # checked once: more tokens than positions fail every long row
                positions = absolute_position_limit(self.model_config())
                if positions is not None and self.max_length > positions:
                    raise ConfigError(
                        f"classifier.{self.name}.max_length={self.max_length} is more than the {positions} "
                        f"token positions its model has: set {positions} or less, or null for its own limit"
                    )
                self._reference_length = self.max_length
            return self.max_length
        if self._reference_length is None:
            self._reference_length = self.reference_length(tokenizer)
        return self._reference_length

    def format_text(self, text: str) -> str:
        """Wrap a document before tokenising (prompt templates); identity by default."""
        return text

    def model_texts(self, texts: list[str]) -> list[str]:
        """Documents as the model reads them: cut to `max_chars` first, then wrapped (as upstream)."""
        if self.max_chars is not None:
            texts = [t[: self.max_chars] for t in texts]
        return [self.format_text(t) for t in texts]

    def model_key(self) -> Hashable:
        """What identifies this model in the per-worker cache; two different models never share a key."""
        return (type(self).__qualname__, self.name)

    @property
    def labels(self) -> list[str]:
        """Every label the prediction column can hold (empty for score-only classifiers)."""
        return []

    @property
    def label_column(self) -> str | None:
        """The column that holds `labels` (what filter.keep/drop test by default)."""
        return self.pred_column

    @property
    def histogram_ranges(self) -> dict[str, tuple[float, float]]:
        """Score columns whose distribution the report draws, with their value range."""
        return {self.score_column: (0.0, 1.0)} if self.score_column else {}

    def histograms(self, columns: pd.DataFrame, bins: int = HISTOGRAM_BINS) -> dict[str, dict[str, Any]]:
        """Fixed-bin counts of each score column (values outside the range count in the end bins)."""
        out = {}
        for column, (low, high) in self.histogram_ranges.items():
            if column not in columns:
                continue
            values = columns[column].to_numpy(dtype=np.float64, na_value=np.nan)
            values = np.clip(values[~np.isnan(values)], low, high)
            counts, _ = np.histogram(values, bins=bins, range=(low, high))
            out[column] = {"range": [low, high], "counts": counts.tolist()}
        return out

    @property
    def report_columns(self) -> list[str]:
        """Columns whose value counts the run's report shows (labels, rounded scores)."""
        return [self.label_column] if self.label_column else []

    # ---- declared outputs ----------------------------------------------------------------------
    def output_types(self) -> dict[str, pa.DataType]:
        """Output columns and their fixed Arrow types (the same in every file of a run)."""
        types: dict[str, pa.DataType] = {self.pred_column: pa.string()}
        if self.score_column:
            types[self.score_column] = pa.float32()
        if self.keep_prob and self.prob_column:
            types[self.prob_column] = pa.list_(pa.float32())
        return types

    def _typed(self, columns: pd.DataFrame) -> pd.DataFrame:
        """Cast output columns to their declared dtypes (float32, str, object lists)."""
        for column, kind in self.output_types().items():
            if kind == pa.float32():
                columns[column] = columns[column].astype("float32")
            elif kind == pa.string():
                # StringDtype: missing stays missing (astype(str) gives "nan" on pandas 2)
                columns[column] = columns[column].astype(pd.StringDtype())
            elif kind in _NULLABLE:
                columns[column] = columns[column].astype(_NULLABLE[kind])
            else:
                columns[column] = columns[column].astype(object)
        return columns

    def meta(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The partition after classification, with no rows (Dask's `meta`)."""
        empty = self._typed(pd.DataFrame({c: [] for c in self.output_types()}))
        return frame.iloc[:0].assign(**{c: empty[c].array for c in empty})

    def __call__(self, dataset: Any) -> Any:
        """Python API: label a DocumentDataset (lazily), keeping only `filter_by` labels when set."""
        return dataset.classify(self, self.filter_by)

    # ---- running -------------------------------------------------------------------------------
    def _model_cache_key(self) -> tuple:
        """The worker cache's key for this classifier's prepared model: what changes the loaded object."""
        settings = ("device", "quantize", "fast_encoder", "native_attention")
        key = (self.model_key(), *(getattr(self.inference, name) for name in settings))
        if self.inference.device == "simulated":
            key = (*key, self.inference.simulated_tokens_per_s)
        return (*key, "model")

    def _runtime(self) -> tuple[torch.nn.Module, Any, torch.device]:
        device = resolve_device(self.inference.device)
        model = cache.get_or_load(self._model_cache_key(), lambda: self._prepared_model(device))
        tokenizer = cache.get_or_load((self.model_key(), "tokenizer"), self.load_tokenizer)
        return model, tokenizer, device

    def _prepared_model(self, device: torch.device) -> torch.nn.Module:
        model = self.load_model(device).eval()
        set_native_attention(model, self.inference.native_attention)
        if self.inference.quantize == "int8":
            model = quantize_int8(model, device)
        if self.inference.device == "simulated":
            model = SimulatedModel(model, self.inference.simulated_tokens_per_s)
        return model

    def cpu_budget(self, config: Any, max_length: int, dtype_bytes: int = 4) -> int:
        """Tokens per CPU batch when none is configured: a cache-sized one for encoders (activations of
        `dtype_bytes` per value)."""
        return cpu_token_budget(config, max_length, dtype_bytes)

    def memory_per_token(self, config: Any, dtype_bytes: int) -> float | None:
        """CUDA bytes one batch token needs; None: the encoder estimate, which grows with the length."""
        return None

    def token_budget(self, model: torch.nn.Module, device: torch.device, max_length: int) -> int:
        """The configured budget, else `cpu_budget` on CPU, else what free CUDA memory allows."""
        if self.inference.token_budget:
            return self.inference.token_budget
        config = getattr(model, "config", None)  # every family's model exposes its backbone config
        autocast = resolve_autocast(self.inference.dtype, device, self.inference.quantize)
        dtype_bytes = torch.finfo(autocast).bits // 8 if autocast else 4
        if device.type != "cuda":  # bf16 autocast halves the activations: the cache holds twice the tokens
            return self.cpu_budget(config, max_length, dtype_bytes)
        per_token = self.memory_per_token(config, dtype_bytes)
        cap = self.inference.max_mem_gb
        # measured once per model (and per length where the cost per token depends on it)
        key = (self.model_key(), str(device), dtype_bytes, cap, "budget", per_token or max_length)
        return cache.get_or_load(
            key, lambda: cuda_token_budget(config, device, max_length, dtype_bytes, cap, per_token)
        )

    def plan(
        self, model: torch.nn.Module, device: torch.device, max_length: int, extra: int = 0
    ) -> BatchPlan:
        """Sorted batches under the token budget, each row charged `extra` tokens more (generated ones)."""
        prefetch = self.inference.prefetch
        return BatchPlan(
            token_budget=self.token_budget(model, device, max_length + extra),
            max_rows=self.batch_size,
            sort=self.inference.sort,
            autocast=resolve_autocast(self.inference.dtype, device, self.inference.quantize),
            prefetch=own_device(self.inference) if prefetch is None else prefetch,  # on beside a device
            extra_tokens=extra,
            device_key=self.inference.device if self.inference.device == "simulated" else "",
        )

    def ramp(self, plan: BatchPlan, device: torch.device) -> int | None:
        """The first window's size when a device of its own (CUDA, simulated) starves (has yet to start,
        or has idled for a second): a few texts, then doubling windows, so the pipeline fills in a few
        texts' host work, not a whole unit's; None: full windows (smaller ones would cost padding while
        the device is busy; on the CPU the host work shares the model's cores anyway)."""
        if not own_device(self.inference):
            return None
        return RAMP_FIRST_WINDOW if plan_turns(plan, device).cold() else None

    def host_threads(self) -> int:
        """Threads that tokenise: the configured number, else the worker's share of the cores."""
        return self.inference.tokenizer_threads or torch.get_num_threads()

    def predict(self, texts: list[str], stats: RunStats | None = None) -> dict[str, Any]:
        """Classify texts in memory: the engine's whole path for one partition (costs into `stats`).

        Texts are tokenised in windows of `inference.window` documents by host threads; each window is
        length-sorted and batched, so the device starts on the first while the next is tokenised.
        """
        model, tokenizer, device = self._runtime()
        texts = self.model_texts(texts)
        max_length = self.token_limit(tokenizer)
        plan = self.plan(model, device, max_length)
        self.last_stats = stats = stats if stats is not None else RunStats()
        timing: dict[str, float] = {}
        windows = tokenize_windows(
            tokenizer,
            texts,
            max_length,
            self.inference.window,
            self.host_threads(),
            timing,
            first=self.ramp(plan, device),
        )
        parts = []
        for ids in windows:
            parts.append(
                run_batches(
                    ids,
                    lambda input_ids, mask: model(input_ids, mask),
                    plan,
                    pad_id=tokenizer.pad_token_id or 0,
                    device=device,
                    left_pad=tokenizer.padding_side == "left",
                    stats=stats,
                )
            )
            plan.token_budget = stats.final_budget  # an out-of-memory back-off holds for the whole unit
        stats.tokenise_seconds += timing.get("tokenise", 0.0)
        began = time.perf_counter()
        columns = self.postprocess(np.concatenate(parts))
        stats.postprocess_seconds += time.perf_counter() - began
        return columns

    def _predict_columns(self, texts: list[str], stats: RunStats) -> dict[str, Any]:
        """This classifier's columns for `texts`, by the configured engine."""
        if not texts:
            return self.postprocess(np.empty((0,)))
        if self.inference.engine == "crossfit":
            from curator.inference.crossfit_engine import predict_with_crossfit

            return predict_with_crossfit(self, texts)
        return self.predict(texts, stats)

    def numerics_used(self) -> dict[str, str]:
        """What this worker's matmuls run in ('bfloat16', 'float32', 'int8/onednn'), and which worker:
        `inference.dtype=auto` differs from machine to machine, so the summary shows it per worker; for a
        lean DeBERTa on CPU also how its attention ran ('compiled' or 'PyTorch')."""
        device = resolve_device(self.inference.device)
        quantize = self.inference.quantize if device.type == "cpu" else None
        autocast = resolve_autocast(self.inference.dtype, device, quantize)
        used = {"dtype": numerics_label(autocast, quantize), "worker": worker_name()}
        # never loaded for this: a partition with no text to classify ran no model
        model = cache.loaded(self._model_cache_key()) if device.type == "cpu" else None
        if model is not None and (kind := attention_kind(model, autocast or torch.float32)):
            used["attention"] = kind  # lean DeBERTa: compiled here, or PyTorch's ops (no compiler)
        return used

    def classify_partition(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Add this classifier's columns to a partition; rows marked bad by the reader get nulls."""
        if self.text_field not in frame.columns:
            raise ConfigError(
                f"Text field {self.text_field!r} not in the data; columns found: {list(frame.columns)}"
            )
        good = np.ones(len(frame), dtype=bool)
        if ERROR_COLUMN in frame.columns:
            good = frame[ERROR_COLUMN].isna().to_numpy()
        texts = frame[self.text_field].to_numpy()[good].tolist()
        started, stats = time.perf_counter(), RunStats()  # per call: tasks may share this object
        predicted = pd.DataFrame(self._predict_columns(texts, stats))
        predicted.index = np.flatnonzero(good)
        columns = self._typed(predicted.reindex(range(len(frame))))
        out = frame.copy()
        for column in columns:
            out[column] = pd.Series(columns[column].array, index=frame.index)
        # Travels with the partition (pandas keeps attrs through copies and masks) to the writer's counts.
        out.attrs.setdefault(STATS_ATTR, {})[self.name] = {
            "documents": len(texts),
            "seconds": time.perf_counter() - started,
            "real_tokens": stats.real_tokens,
            "padded_tokens": stats.padded_tokens,
            "batches": stats.batches,
            "oom_retries": stats.oom_retries,
            "device_seconds": stats.device_seconds,
            "tokenise_seconds": stats.tokenise_seconds,
            "postprocess_seconds": stats.postprocess_seconds,
            "histograms": self.histograms(columns),
            **self.numerics_used(),
        }
        return out
