"""Run a model over tokenised rows: sort, batch under a token budget, back off on OOM, restore order."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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
    device_key: str = ""  # which device batches take turns on (one lock per key); "": str(device)


@dataclass
class RunStats:
    """What a run of batches cost: for benchmarks and logs."""

    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    oom_retries: int = 0
    final_budget: int = 0
    device_seconds: float = 0.0  # time the device had a batch (CUDA events on a GPU; wall time elsewhere)
    tokenise_seconds: float = 0.0  # host seconds spent tokenising (summed over the tokeniser threads)
    postprocess_seconds: float = 0.0  # host seconds turning outputs into columns


class DeviceTurns:
    """The one device of this process: tasks running side by side take turns on it per batch, so one
    runs on the device while the others do host work (a GPU runs one batch at a time anyway). Counts the
    batches running or waiting and when the last one ended, so a task can tell that the device starves
    (it has yet to start, or a run follows a pause)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count_lock = threading.Lock()
        self.queued = 0
        self.last_end = float("-inf")

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the device for one batch."""
        with self.count_lock:
            self.queued += 1
        try:
            with self.lock:
                yield
        finally:
            with self.count_lock:
                self.queued -= 1
                self.last_end = time.perf_counter()

    def cold(self, idle_s: float = 1.0) -> bool:
        """Nothing on the device or waiting for it, for `idle_s` at least (or ever): a pipeline that
        fills, not the short gaps between batches of a busy one."""
        return self.queued == 0 and time.perf_counter() - self.last_end >= idle_s


_DEVICES: dict[str, DeviceTurns] = {}  # by process id and device key
_DEVICES_LOCK = threading.Lock()


def device_turns(key: str) -> DeviceTurns:
    """The turns of one device (by key) in this process (a forked child gets its own, unheld)."""
    with _DEVICES_LOCK:
        return _DEVICES.setdefault(f"{os.getpid()}:{key}", DeviceTurns())


def plan_turns(plan: BatchPlan, device: torch.device) -> DeviceTurns:
    """The turns of the device a plan's batches run on (its `device_key`, else the device itself)."""
    return device_turns(plan.device_key or str(device))


def resolve_device(device: str) -> torch.device:
    """'auto' means CUDA when there is one, else the CPU; the simulated device runs (sleeps) on the CPU."""
    if device == "simulated":
        return torch.device("cpu")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def own_device(inference: Any) -> bool:
    """Whether the model runs on a device of its own beside the host (CUDA, or the simulated one standing
    in), so host work overlaps it; on the CPU the host work takes the model's cores instead."""
    return inference.device == "simulated" or resolve_device(inference.device).type == "cuda"


def units_in_flight(inference: Any) -> int:
    """Tasks a worker runs side by side: as configured, else 3 on a device of its own, 1 on CPU."""
    if inference.units_in_flight:
        return inference.units_in_flight
    return 3 if own_device(inference) else 1


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
            f"inference.engine=crossfit needs RAPIDS cuDF and CrossFit ({err}); install the extra of "
            "your CUDA major (pip install -e '.[gpu-cu12]' or '.[gpu-cu13]') or use inference.engine=native."
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


def _store(out: np.ndarray | None, n: int, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Put a batch's results at their rows (the output array is made on the first batch)."""
    if out is None:
        out = np.empty((n, *values.shape[1:]), dtype=values.dtype)
    out[rows] = values
    return out


class _Fetcher:
    """Brings batch results to the host and times the device.

    On CUDA a batch's result is copied into pinned memory without waiting; it is collected once the next
    batch has been queued, so the GPU never idles on a per-batch synchronisation, and busy time comes
    from CUDA events. Elsewhere the forward pass is synchronous and timed by the wall clock.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.waiting: list[tuple[np.ndarray, torch.Tensor, Any]] = []
        self.events: list[tuple[Any, Any]] = []
        self.seconds = 0.0
        self.began = 0.0

    def start(self) -> None:
        if self.cuda:
            self.events.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
            self.events[-1][0].record()
        else:
            self.began = time.perf_counter()

    def abandon(self) -> None:
        """Forget the timing of a batch that raised (its end event was never recorded)."""
        if self.cuda and self.events:
            self.events.pop()

    def finish(self, result: torch.Tensor, rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """This batch's result queued for the host; the results that are ready (earlier batches)."""
        if result.is_floating_point():
            result = result.float()
        if not self.cuda:
            values = result.cpu().numpy()
            self.seconds += time.perf_counter() - self.began
            return [(rows, values)]
        host = torch.empty(result.shape, dtype=result.dtype, pin_memory=True)
        host.copy_(result, non_blocking=True)
        self.events[-1][1].record()
        ready = self.drain()  # the previous batch: its copy finished while this one was queued
        self.waiting.append((rows, host, self.events[-1][1]))
        return ready

    def drain(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every queued result, once its copy has finished."""
        ready = []
        for rows, host, event in self.waiting:
            event.synchronize()
            ready.append((rows, host.numpy()))
        self.waiting = []
        return ready

    def busy(self) -> float:
        """Seconds the device had a batch (CUDA: from events; call after `drain`)."""
        if self.cuda:
            return sum(a.elapsed_time(b) for a, b in self.events) / 1000.0
        return self.seconds


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
    # autocast keeps its casts of the weights for the whole run only outside inference mode; under
    # inference_mode it casts every weight again on every call (torch 2.13: ~10% of a bf16 MiniLM batch)
    no_grad = torch.no_grad() if plan.autocast else torch.inference_mode()
    turns = plan_turns(plan, device)
    fetch = _Fetcher(device)
    executor = ThreadPoolExecutor(max_workers=1) if plan.prefetch else _Inline()
    with executor, no_grad, autocast:
        start = 0
        end = next_batch_end(planned, start, budget, plan.max_rows) if n else 0
        pending = executor.submit(prepare, start, end) if n else None
        while start < n:
            input_ids, mask = pending.result()
            following = next_batch_end(planned, end, budget, plan.max_rows) if end < n else end
            upcoming = executor.submit(prepare, end, following) if end < n else None
            try:
                with turns.turn():
                    fetch.start()
                    result = forward(input_ids, mask)
                    done = fetch.finish(result, order[start:end])
            except Exception as err:
                fetch.abandon()
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
            for rows, values in done:
                out = _store(out, n, rows, values)
            stats.batches += 1
            stats.real_tokens += int(sorted_lengths[start:end].sum())
            stats.padded_tokens += int(mask.shape[0] * mask.shape[1])
            start, end, pending = end, following, upcoming
        for rows, values in fetch.drain():
            out = _store(out, n, rows, values)
    stats.device_seconds += fetch.busy()
    stats.final_budget = budget
    if out is None:
        return np.empty((0,), dtype=np.float32)
    return out
