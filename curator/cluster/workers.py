"""Worker tuning: torch's share of the cores, native thread counts, the allocator, the HF settings, and a
worker's close kept quiet."""

from __future__ import annotations

import gc
import logging
import os
import weakref
from collections.abc import Mapping

from distributed import WorkerPlugin
from distributed.core import Status

# Non-secret worker settings copied from this process: the model cache and the offline switches.
HF_SETTINGS = (
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_TOKEN_PATH",
)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
WORKER_TRIM_THRESHOLD = 256 * 2**20
WORKER_MMAP_THRESHOLD = 32 * 2**20  # glibc's largest dynamic mmap threshold on 64-bit


class TorchThreads(WorkerPlugin):
    """Set torch's intra-op threads (distributed's nanny pins OMP threads to 1) and its allocator's reuse."""

    name = "curator-torch-threads"

    def __init__(self, threads: int | None) -> None:
        self.threads = threads

    def setup(self, worker) -> None:
        if self.threads:
            set_torch_threads(self.threads)
        reuse_freed_memory()


class QuickExit(WorkerPlugin):
    """Let a worker process that ends with its worker skip the interpreter's last garbage collection.

    A process that has imported torch and transformers spends ~0.5 s collecting every object on its way
    out (2-core Xeon); the nanny, and the run's close with it, waited for that. Frozen objects are left
    to the OS. Only where a nanny started the process: a worker in a threads cluster shares the process
    of the client, which goes on.
    """

    name = "curator-quick-exit"

    def teardown(self, worker) -> None:  # also called when the plugin is replaced: only a closing worker
        if getattr(worker, "nanny", None) and worker.status in CLOSING:
            gc.freeze()


class QuietClose(WorkerPlugin):
    """Drop the heartbeat traceback a worker logs when it closes with a heartbeat in flight.

    distributed's Worker.close stops the heartbeat's timer but not a heartbeat already waiting for the
    scheduler's answer, then closes that heartbeat's connection itself: the heartbeat logs "Failed to
    communicate with scheduler during heartbeat" with a traceback, on the terminal of a run that
    succeeded. Only that message, and only once the worker is closing, is dropped.
    """

    name = "curator-quiet-close"

    def setup(self, worker) -> None:
        logging.getLogger("distributed.worker").addFilter(_ClosingHeartbeat(worker))


class _ClosingHeartbeat(logging.Filter):
    """False for that heartbeat message while its worker closes; True for every other record."""

    def __init__(self, worker) -> None:
        super().__init__()
        self.worker = weakref.ref(worker)  # a threads cluster's workers share the logger: keep none alive

    def filter(self, record: logging.LogRecord) -> bool:
        worker = self.worker()
        if worker is None:  # its worker is gone: another worker of this process may be logging
            logging.getLogger("distributed.worker").removeFilter(self)
            return True
        return not (worker.status in CLOSING and record.getMessage().startswith(HEARTBEAT_FAILED))


HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat"
CLOSING = frozenset({Status.closing, Status.closed, Status.closing_gracefully})


def reuse_freed_memory() -> bool:
    """Let glibc keep and reuse freed batch buffers in this worker process; False where it cannot.

    Distributed's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536. Setting any malloc threshold
    also freezes glibc's mmap threshold at 128 KiB, so every batch's multi-MiB activations were mapped,
    page-faulted and unmapped afresh: the engine ran ~25% slower in a worker than in the main process
    (`MALLOC_TRIM_THRESHOLD_=65536` alone reproduces it). Buffers up to 32 MiB now come from the heap,
    and up to 256 MiB of free heap stays mapped for the next batch.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl without mallopt)
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, WORKER_TRIM_THRESHOLD)) and bool(
        mallopt(M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD)
    )


def set_torch_threads(threads: int) -> None:
    """Intra-op threads for this process; tokenizers stay single-threaded to avoid oversubscription."""
    import torch

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def thread_env(torch_threads: int) -> dict[str, str]:
    """Thread counts for native libraries, read when a worker process starts."""
    threads = str(torch_threads)
    return {
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "TOKENIZERS_PARALLELISM": "false",
    }


def worker_env(torch_threads: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables set on worker processes and written to job scripts: threads, HF cache/offline settings."""
    # Never a secret: tokens reach workers only by inheriting this process's environment (LocalCluster
    # spawns its workers from it; sbatch exports the submitter's environment), so none is ever written.
    environ = os.environ if environ is None else environ
    return {**thread_env(torch_threads), **{k: environ[k] for k in HF_SETTINGS if k in environ}}
