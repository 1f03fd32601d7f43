"""Start or join the Dask cluster a run uses; give workers their share of the cores and the HF settings."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import ModuleType
from typing import Any

import dask
from distributed import Client, KilledWorker, LocalCluster, WorkerPlugin, default_client
from distributed.comm.core import CommClosedError

from curator.config import ClusterConfig
from curator.errors import ConfigError, UserError
from curator.resources import available_cores, plan_workers
from curator.validate import CHOICES, MEMORY_KINDS, cluster_problems, raise_problems

log = logging.getLogger(__name__)

KINDS = CHOICES["cluster.kind"]
MEMORY_EVENT = "worker-restart-memory"  # what a nanny logs on the scheduler when it kills its worker
# Non-secret worker settings copied from this process: the model cache and the offline switches.
HF_SETTINGS = (
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_TOKEN_PATH",
)
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|CREDENTIAL|(^|_)KEY(_|$)")
GPU_HINT = "RAPIDS packages for your CUDA version (dask-cuda; cuDF for dataset.backend=cudf)"


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


def is_secret(name: str) -> bool:
    """Variables whose values must never be written to a file (paths to token files are not secrets)."""
    return bool(SECRET_NAME.search(name)) and not name.endswith(("_PATH", "_FILE", "_DIR"))


def check_no_secrets(text: str, where: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to write a file that would hold a secret's value: secrets travel in the environment only."""
    environ = os.environ if environ is None else environ
    for name, value in environ.items():
        if is_secret(name) and len(value) >= 8 and value in text:
            raise ConfigError(
                f"The {where} would contain the value of ${name}. Secrets reach workers through the "
                "environment only; remove it from the cluster settings."
            )


def require(module: str, what: str, extra: str, hint: str = "") -> ModuleType:
    """Import an optional stack when it is first needed; say which extra installs it when missing."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as err:
        more = f" ({hint})" if hint else ""
        raise ConfigError(
            f"{what} needs `{module}`, which cannot be imported here ({err}). "
            f"Install the `{extra}` extra: pip install -e '.[{extra}]'{more}."
        ) from err


def _given(**kwargs: Any) -> dict[str, Any]:
    """Only the arguments that are set, so each library keeps its own defaults for the rest."""
    return {k: v for k, v in kwargs.items() if v is not None}


def _size(value: str | None) -> float | str | None:
    """A fraction ("0.8") as a float, a size ("24GB") as it is: what dask-cuda expects for each."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return value


def dashboard(client: Client) -> str:
    """The dashboard link, or why there is none."""
    try:
        return client.dashboard_link or "disabled"
    except (KeyError, AttributeError):
        return "disabled"


# --- local: distributed.LocalCluster ---------------------------------------------------------------


def start_local(cfg: ClusterConfig) -> tuple[Any, int]:
    """A LocalCluster sized to this machine's usable cores; returns it and each worker's torch threads."""
    cores = available_cores()
    n_workers, threads = plan_workers(cores, cfg.n_workers, cfg.torch_threads)
    extra = {"env": worker_env(threads)} if cfg.processes else {}
    # A paused worker waits for memory that a loaded model never gives back: the run would hang.
    # Unpaused, a worker either fits or is killed at the limit, and the run says so.
    with dask.config.set({"distributed.worker.memory.pause": False}):  # nannies hand it to their workers
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=cfg.threads_per_worker,
            processes=cfg.processes,
            memory_limit=cfg.memory_limit,
            dashboard_address=cfg.dashboard_address,
            **_given(protocol=cfg.protocol, interface=cfg.interface, local_directory=cfg.local_directory),
            **extra,
        )
    log.info(
        "LocalCluster: %d worker(s) x %d task thread(s), %d torch thread(s) each, %d cores",
        n_workers,
        cfg.threads_per_worker,
        threads,
        cores,
    )
    return cluster, threads


# --- local_cuda: dask_cuda.LocalCUDACluster ---------------------------------------------------------


def visible_gpus(cfg: ClusterConfig) -> int:
    """How many GPU workers LocalCUDACluster will start; a clear error when torch sees no GPU."""
    import torch

    found = torch.cuda.device_count()
    if found == 0:
        raise ConfigError(
            "cluster=local_cuda needs an NVIDIA GPU, and torch sees none here (no device, or a CPU-only "
            "torch build). Use cluster=local on this machine."
        )
    return len(cfg.cuda_visible_devices) if cfg.cuda_visible_devices else found


def local_cuda_kwargs(cfg: ClusterConfig) -> dict[str, Any]:
    """LocalCUDACluster arguments: one worker per visible GPU, RMM pool, spilling, protocol."""
    devices = ",".join(str(d) for d in cfg.cuda_visible_devices) if cfg.cuda_visible_devices else None
    return {
        "threads_per_worker": cfg.threads_per_worker,
        "memory_limit": cfg.memory_limit,
        "dashboard_address": cfg.dashboard_address,
        **_given(
            CUDA_VISIBLE_DEVICES=devices,
            rmm_pool_size=_size(cfg.rmm_pool_size),
            device_memory_limit=_size(cfg.device_memory_limit),
            enable_cudf_spill=cfg.enable_cudf_spill or None,  # passed only when asked: newer dask-cuda
            protocol=cfg.protocol,
            interface=cfg.interface,
            local_directory=cfg.local_directory,
        ),
    }


def start_local_cuda(cfg: ClusterConfig) -> tuple[Any, int]:
    """A LocalCUDACluster (dask-cuda imported only now); torch threads are the cores' share per GPU."""
    dask_cuda = require("dask_cuda", "cluster=local_cuda", "gpu", GPU_HINT)
    gpus = visible_gpus(cfg)
    _, threads = plan_workers(available_cores(), gpus, cfg.torch_threads)
    kwargs = local_cuda_kwargs(cfg)
    cluster = dask_cuda.LocalCUDACluster(**kwargs)
    log.info(
        "LocalCUDACluster: %d GPU worker(s), %d torch thread(s) each, protocol %s, RMM pool %s",
        gpus,
        threads,
        kwargs.get("protocol", "tcp"),
        kwargs.get("rmm_pool_size", "off"),
    )
    return cluster, threads


# --- slurm: dask_jobqueue.SLURMCluster --------------------------------------------------------------


def _exports(variables: Mapping[str, str]) -> list[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in variables.items()]


def slurm_kwargs(cfg: ClusterConfig, environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any], int]:
    """SLURMCluster arguments for one job's workers, and the torch threads each worker gets."""
    # SLURM reserves `cores` CPUs per job (job_cpu); Dask runs `threads_per_worker` task threads per
    # worker (its cores = workers x those) and torch gets the worker's share of the reserved cores.
    # GPU jobs run `dask cuda worker`, which starts one worker per GPU SLURM gives the job.
    if not cfg.cores or not cfg.memory:
        raise ConfigError("cluster=slurm needs cluster.cores (CPUs per job) and cluster.memory (e.g. 64GB).")
    if cfg.gpus and cfg.n_workers not in (None, cfg.gpus):
        raise ConfigError("cluster.gpus > 0 runs one worker per GPU; leave cluster.n_workers unset.")
    workers, threads = plan_workers(cfg.cores, cfg.gpus or cfg.n_workers, cfg.torch_threads)
    default_command = "dask cuda worker" if cfg.gpus else "distributed.cli.dask_worker"
    gres = [f"--gres=gpu:{cfg.gpus}"] if cfg.gpus else []
    kwargs = {
        "cores": workers * cfg.threads_per_worker,  # --nthreads = cores / processes
        "processes": workers,
        "job_cpu": cfg.cores,
        "memory": cfg.memory,
        "walltime": cfg.walltime,
        "job_name": "curator-worker",
        "worker_command": cfg.worker_command or default_command,
        "worker_extra_args": list(cfg.worker_extra_args),
        "job_extra_directives": [*gres, *cfg.job_extra_directives],
        "job_script_prologue": [*cfg.job_script_prologue, *_exports(worker_env(threads, environ))],
        "scheduler_options": (
            {"dashboard_address": cfg.dashboard_address}
            if cfg.dashboard_address
            else {"dashboard": False, "dashboard_address": ":0"}  # its HTTP server stays (health checks)
        ),
        **_given(
            queue=cfg.partition,
            account=cfg.account,
            local_directory=cfg.local_directory,
            log_directory=cfg.log_directory,
            interface=cfg.interface,
            protocol=cfg.protocol,
            python=cfg.python,
        ),
    }
    if any(d.startswith("--export") and "ALL" not in d for d in cfg.job_extra_directives):
        log.warning("--export without ALL: HF_TOKEN reaches workers only via the HF token file on the nodes")
    return kwargs, threads


def new_slurm_cluster(cfg: ClusterConfig) -> tuple[Any, int]:
    """A SLURMCluster with no jobs yet (dask-jobqueue imported only now); its job script holds no secret."""
    jobqueue = require("dask_jobqueue", "cluster=slurm", "slurm")
    kwargs, threads = slurm_kwargs(cfg)
    cluster = jobqueue.SLURMCluster(**kwargs)
    try:
        check_no_secrets(cluster.job_script(), "SLURM job script")
    except ConfigError:
        cluster.close()
        raise
    return cluster, threads


def slurm_job_script(cfg: ClusterConfig) -> str:
    """The sbatch script each worker job would run (no job is submitted): to review or to test."""
    cluster, _ = new_slurm_cluster(cfg)
    with cluster:
        return cluster.job_script()


def start_slurm(cfg: ClusterConfig) -> tuple[Any, int]:
    """Submit `cluster.jobs` worker jobs; they join this process's scheduler as SLURM starts them."""
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "cluster=slurm submits worker jobs with sbatch, which is not on PATH here: run on a SLURM "
            "login node, or submit whole runs with hydra/launcher=slurm."
        )
    cluster, threads = new_slurm_cluster(cfg)
    try:
        log.debug("SLURM worker job script:\n%s", cluster.job_script())
        cluster.scale(jobs=cfg.jobs)
    except BaseException:
        cluster.close()
        raise
    log.info("SLURMCluster: %d job(s) submitted, %d torch thread(s) per worker", cfg.jobs, threads)
    return cluster, threads


STARTERS: dict[str, Callable[[ClusterConfig], tuple[Any, int]]] = {
    "local": start_local,
    "local_cuda": start_local_cuda,
    "slurm": start_slurm,
}


# --- connect: every kind --------------------------------------------------------------------------


def scheduler_address(cfg: ClusterConfig) -> str | None:
    """cluster.scheduler_address, or its older name cluster.address."""
    if cfg.address and cfg.scheduler_address and cfg.address != cfg.scheduler_address:
        raise ConfigError("cluster.address is the older name of cluster.scheduler_address: set only one.")
    return cfg.scheduler_address or cfg.address


@contextlib.contextmanager
def join(cfg: ClusterConfig) -> Iterator[Client]:
    """Join a running scheduler (started with `dask scheduler`); its workers are not ours to close."""
    address = scheduler_address(cfg)
    if not (address or cfg.scheduler_file):
        raise ConfigError("cluster=scheduler needs cluster.scheduler_address or cluster.scheduler_file.")
    with Client(address, scheduler_file=cfg.scheduler_file) as client:
        workers = len(client.scheduler_info().get("workers", {}))
        log.info("Joined Dask scheduler %s with %d worker(s)", client.scheduler.address, workers)
        log.info("Dask dashboard: %s", dashboard(client))
        client.register_plugin(TorchThreads(cfg.torch_threads))  # threads as the workers chose, unless set
        yield client


@contextlib.contextmanager
def connect(cfg: ClusterConfig) -> Iterator[Client | None]:
    """Yield a Client for the configured cluster (None in sync mode); close what was started, on error too."""
    raise_problems(list(cluster_problems(cfg)))  # e.g. n_workers=-1 would start nothing and wait forever
    if cfg.kind == "sync":
        _, threads = plan_workers(available_cores(), 1, cfg.torch_threads)
        set_torch_threads(threads)
        log.info("Dask synchronous scheduler in this process (no dashboard)")
        with dask.config.set(scheduler="synchronous"):
            yield None
        return
    if cfg.kind == "scheduler":
        with join(cfg) as client:
            yield client
        return
    if cfg.kind not in STARTERS:
        raise ConfigError(f"Unknown cluster.kind {cfg.kind!r}; choose one of {', '.join(KINDS)}.")
    cluster, threads = STARTERS[cfg.kind](cfg)
    with cluster, Client(cluster) as client:
        client.register_plugin(TorchThreads(threads))
        log.info("Dask dashboard: %s", dashboard(client))
        yield client


# --- workers killed for memory ----------------------------------------------------------------------


class WorkerMemoryError(UserError, MemoryError):
    """Workers were killed for going over cluster.memory_limit (the model and its batches do not fit)."""


def memory_kills(client: Client, since: float = 0.0) -> list[dict[str, Any]]:
    """The workers their nanny killed for exceeding the memory limit (since a time, by the scheduler)."""
    try:
        return [event for stamp, event in client.get_events(MEMORY_EVENT) if stamp >= since]
    except Exception:  # the scheduler is gone: nothing more to learn
        return []


def memory_message(cfg: ClusterConfig, kills: list[dict[str, Any]]) -> str:
    """One line: which setting, what the worker reached, and a value to try."""
    from dask.utils import format_bytes

    rss = max(int(kill.get("rss", 0)) for kill in kills)  # the kill comes at 95% of the limit
    suggest = max(4, 2 * -(-rss // 2**30))  # GiB: at least double what was not enough
    setting = (
        f"cluster.memory_limit={cfg.memory_limit}"
        if cfg.kind in MEMORY_KINDS
        else "their memory limit (dask worker --memory-limit, or the job's memory)"
    )
    return (
        f"{len(kills)} worker(s) killed for using more memory than {setting} allows (a worker reached "
        f"{format_bytes(rss)}): the model and its batches do not fit. Set cluster.memory_limit={suggest}GiB "
        "or more, or run fewer workers per machine"
    )


def explain_lost_workers(client: Client, cfg: ClusterConfig, outcomes: Iterable[Any]) -> Iterator[Any]:
    """Pass (units, outcome) pairs on; a failure from a worker its nanny killed for memory says so."""
    since = time.time() - 1  # a joined scheduler may remember kills from earlier runs
    for group, outcome in outcomes:
        if isinstance(outcome, KilledWorker | CommClosedError):
            kills = memory_kills(client, since)
            if kills:
                outcome = WorkerMemoryError(memory_message(cfg, kills))
        yield group, outcome


@contextlib.contextmanager
def ensure_client(cfg: ClusterConfig | None = None) -> Iterator[Client | None]:
    """The Python API's rule: the current Dask client if there is one, else a local cluster for this call."""
    try:
        current = default_client()
    except ValueError:
        current = None
    if current is not None:
        yield current
        return
    with connect(cfg or ClusterConfig()) as client:
        yield client
