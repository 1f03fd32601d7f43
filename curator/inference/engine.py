"""Run a model over tokenised rows: sort, batch under a token budget, back off on OOM, restore order."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from curator.errors import ConfigError
from curator.inference.batching import length_order, next_batch_end
from curator.inference.numerics import CpuNumerics, cpu_autocast, cpu_numerics

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class BatchPlan:
    """How a partition is cut into batches and run."""

    token_budget: int
    max_rows: int
    sort: bool = True
    autocast: torch.dtype | None = None  # CUDA autocast dtype (None: run in the weights' dtype)
    prefetch: bool = False  # prepare the next batch in a thread while the model runs
    extra_tokens: int = 0  # tokens each row grows by inside `forward` (generation), charged to the budget


@dataclass
class RunStats:
    """What a run of batches cost: for benchmarks and logs."""

    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    oom_retries: int = 0
    final_budget: int = 0


def resolve_device(device: str) -> torch.device:
    """'auto' means CUDA when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_autocast(
    dtype: str, device: torch.device, quantize: str | None = None, numerics: CpuNumerics | None = None
) -> torch.dtype | None:
    """The autocast dtype, None for the weights' own (float32).

    CUDA: 'auto' is bf16. CPU: 'auto' is bf16 where the CPU has native bf16 matmuls (AMX, AVX512-BF16)
    and not int8-quantised, else float32; an explicit bfloat16/float16 is honoured (emulated, with a
    warning, where not native). `numerics`: the CPU's (default: detected, see curator.inference.numerics).
    """
    if device.type == "cuda":
        if dtype == "auto":
            return torch.bfloat16
        return None if dtype == "float32" else DTYPES[dtype]
    if device.type != "cpu":
        return None
    return cpu_autocast(dtype, quantize, numerics or cpu_numerics())


def check_engine(inference: Any) -> None:
    """Fail early, and clearly, when the chosen engine cannot run here."""
    if inference.engine == "native":
        return
    if inference.engine != "crossfit":
        raise ConfigError(f"inference.engine={inference.engine!r}: choose native or crossfit.")
    if not torch.cuda.is_available():
        raise ConfigError("inference.engine=crossfit needs a CUDA GPU; use inference.engine=native here.")
    try:
        import crossfit  # noqa: F401
        import cudf  # noqa: F401
        import dask_cudf  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f"inference.engine=crossfit needs RAPIDS cuDF and CrossFit ({err}); install the `gpu` extra "
            "(pip install -e '.[gpu]' from the RAPIDS index) or use inference.engine=native."
        ) from err


def quantize_int8(
    model: torch.nn.Module, device: torch.device, numerics: CpuNumerics | None = None
) -> torch.nn.Module:
    """Dynamic int8 quantisation of the Linear layers (weights int8, activations quantised per batch),
    packed for the best quantized backend the CPU has (oneDNN on AMX-INT8, else torch's x86 choice)."""
    if device.type != "cpu":
        raise ConfigError("inference.quantize=int8 is a CPU option; on CUDA use inference.dtype=bfloat16.")
    import warnings

    torch.backends.quantized.engine = (numerics or cpu_numerics()).quantized_engine()
    with warnings.catch_warnings():
        # torch marks eager dynamic quantisation deprecated in favour of torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to `max_length`, unpadded (padding happens per batch)."""
    if not texts:
        return []
    encoded = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    return encoded["input_ids"]


def pad_batch(ids: Sequence[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch to its longest row on the tokenizer's padding side; return (input_ids, attention_mask)."""
    width = max(len(row) for row in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        input_ids[i, span] = row
        mask[i, span] = 1
    return torch.from_numpy(input_ids), torch.from_numpy(mask)


def is_oom(err: BaseException) -> bool:
    """A device out-of-memory error (CUDA raises OutOfMemoryError; some backends a RuntimeError)."""
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower()
    )


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor


class _Inline:
    """An executor that runs work at once (prefetch off): same interface, no thread."""

    def submit(self, fn: Callable, *args: object) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def run_batches(
    ids: Sequence[list[int]],
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    plan: BatchPlan,
    pad_id: int,
    device: torch.device,
    left_pad: bool = False,
    stats: RunStats | None = None,
) -> np.ndarray:
    """Apply `forward(input_ids, attention_mask) -> [rows, ...]` to every row; results in input order.

    Float outputs come back as float32, integer outputs (generated token ids) as they are.

    With `plan.prefetch` the next batch is padded (and copied to the device) in a thread while the model
    runs the current one. On an out-of-memory error the failed batch is planned again under half its
    padded size, and that lower budget stays for the rest of the call; a single row that does not fit
    is an error.
    """
    stats = stats if stats is not None else RunStats()
    n = len(ids)
    lengths = np.fromiter((len(row) for row in ids), dtype=np.int64, count=n)
    order = length_order(lengths, plan.sort)
    sorted_lengths = lengths[order]
    planned = sorted_lengths + plan.extra_tokens  # what a row costs at its longest
    budget = plan.token_budget
    out: np.ndarray | None = None

    def prepare(start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids, mask = pad_batch([ids[i] for i in order[start:end]], pad_id, left=left_pad)
        return _to_device(input_ids, device), _to_device(mask, device)

    autocast = (
        torch.autocast(device_type=device.type, dtype=plan.autocast)
        if plan.autocast
        else contextlib.nullcontext()
    )
    executor = ThreadPoolExecutor(max_workers=1) if plan.prefetch else _Inline()
    with executor, torch.inference_mode(), autocast:
        start = 0
        end = next_batch_end(planned, start, budget, plan.max_rows) if n else 0
        pending = executor.submit(prepare, start, end) if n else None
        while start < n:
            input_ids, mask = pending.result()
            following = next_batch_end(planned, end, budget, plan.max_rows) if end < n else end
            upcoming = executor.submit(prepare, end, following) if end < n else None
            try:
                result = forward(input_ids, mask)
                result = (result.float() if result.is_floating_point() else result).cpu().numpy()
            except Exception as err:
                if not is_oom(err) or end - start == 1:
                    raise
                del input_ids, mask
                budget = max(1, int(planned[start:end].max()) * (end - start) // 2)
                stats.oom_retries += 1
                log.warning("Out of memory on a batch of %d rows; token budget now %d", end - start, budget)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                end = next_batch_end(planned, start, budget, plan.max_rows)
                pending = executor.submit(prepare, start, end)
                continue
            if out is None:
                out = np.empty((n, *result.shape[1:]), dtype=result.dtype)
            out[order[start:end]] = result
            stats.batches += 1
            stats.real_tokens += int(sorted_lengths[start:end].sum())
            stats.padded_tokens += int(mask.shape[0] * mask.shape[1])
            start, end, pending = end, following, upcoming
    stats.final_budget = budget
    if out is None:
        return np.empty((0,), dtype=np.float32)
    return out
