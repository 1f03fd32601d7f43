"""cluster=local_cuda: dask-cuda's LocalCUDACluster, one worker per visible GPU (imported only when used)."""

from __future__ import annotations

import logging
from typing import Any

from curator.cluster.api_choice import require_processes
from curator.cluster.base import given
from curator.config import ClusterConfig
from curator.errors import ConfigError
from curator.optional import GPU_HINT, require
from curator.resources import available_cores, plan_workers

log = logging.getLogger(__name__)


def _size(value: str | None) -> float | str | None:
    """A fraction ("0.8") as a float, a size ("24GB") as it is: what dask-cuda expects for each."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return value


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
        **given(
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
    require_processes("local_cuda")
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
