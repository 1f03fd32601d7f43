"""What the CPU computes natively (bf16, int8), so `inference.dtype=auto` and int8 use the fast path it has.

On an Intel Xeon with AMX a 2048² bf16 matmul runs about 5–6× the float32 rate (2 threads); on a CPU
without native bf16 torch emulates it and bf16 is slower than float32. So `auto` means bf16 autocast
only where the matmul is native. Detection: torch's own probes plus the kernel's /proc/cpuinfo flags;
`CURATOR_CPU_FEATURES` (a comma-separated flag list, or `none`) replaces both, to pin a run's numerics
or to test either branch on any machine.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

FEATURES_ENV = "CURATOR_CPU_FEATURES"
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})  # bf16 dot products in hardware
INT8_FLAGS = frozenset({"amx_int8", "avx512_vnni", "avx_vnni"})  # int8 dot products in hardware
# torch's probes (private, so each is optional) and the cpuinfo flag each one stands for
TORCH_PROBES = {
    "_is_amx_tile_supported": ("amx_tile", "amx_bf16", "amx_int8"),  # AMX ships BF16 and INT8 tiles
    "_is_avx512_bf16_supported": ("avx512_bf16",),
    "_is_vnni_supported": ("avx512_vnni",),
    "_is_amx_fp16_supported": ("amx_fp16",),
}


@dataclass(frozen=True)
class CpuNumerics:
    """The CPU's native number formats, from its feature flags."""

    flags: frozenset[str]

    @property
    def bf16(self) -> bool:
        """bf16 matmuls run in hardware (AMX-BF16 or AVX512-BF16): bf16 autocast is a speed-up."""
        return bool(self.flags & BF16_FLAGS)

    @property
    def int8(self) -> bool:
        """int8 dot products run in hardware (VNNI or AMX-INT8)."""
        return bool(self.flags & INT8_FLAGS)

    def quantized_engine(self) -> str:
        """The best quantized backend torch has here: oneDNN drives AMX-INT8 tiles; x86 picks otherwise."""
        supported = torch.backends.quantized.supported_engines
        for engine in ("onednn",) if "amx_int8" in self.flags else ():
            if engine in supported:
                return engine
        return next((e for e in ("x86", "fbgemm", "onednn", "qnnpack") if e in supported), "none")


def _cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first processor's flags from /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@functools.cache
def _detected_flags() -> frozenset[str]:
    """This machine's flags, probed once per process."""
    return frozenset(_torch_flags() | _cpuinfo_flags())


def _torch_flags() -> set[str]:
    """Flags torch's own CPU probes confirm."""
    found: set[str] = set()
    for probe, flags in TORCH_PROBES.items():
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                found.update(flags)
        except Exception:  # a probe this build lacks or cannot run: /proc/cpuinfo still answers
            continue
    return found


def cpu_numerics(flags: Iterable[str] | None = None) -> CpuNumerics:
    """The CPU's numerics from `flags`, else `CURATOR_CPU_FEATURES`, else torch's probes and cpuinfo."""
    if flags is None:
        forced = os.environ.get(FEATURES_ENV)
        if forced is not None:
            flags = [] if forced.strip().lower() == "none" else forced.replace(",", " ").split()
    if flags is None:
        flags = _detected_flags()
    return CpuNumerics(frozenset(f.strip().lower() for f in flags if f.strip()))


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Log a numerics warning once per process (plans are made per partition)."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def cpu_autocast(dtype: str, quantize: str | None, numerics: CpuNumerics) -> torch.dtype | None:
    """The CPU autocast dtype for `inference.dtype`: `auto` is bf16 where native (never with int8)."""
    if dtype == "float32" or (dtype == "auto" and (quantize == "int8" or not numerics.bf16)):
        return None
    if dtype == "auto" or dtype == "bfloat16":
        if not numerics.bf16:
            warn_once(
                "inference.dtype=bfloat16 on a CPU without native bf16 (AMX/AVX512-BF16): emulated, slow"
            )
        return torch.bfloat16
    if dtype == "float16":
        if not numerics.flags & {"amx_fp16", "avx512_fp16"}:
            warn_once("inference.dtype=float16 on a CPU without native fp16 matmuls: emulated, slow")
        return torch.float16
    raise ValueError(f"inference.dtype={dtype!r}")


def numerics_label(autocast: torch.dtype | None, quantize: str | None, engine: str | None = None) -> str:
    """What the model's matmuls run in, as summary.json shows it: 'float32', 'bfloat16', 'int8/onednn'."""
    floats = str(autocast).removeprefix("torch.") if autocast is not None else "float32"
    if quantize == "int8":
        engine = engine or torch.backends.quantized.engine
        return f"int8/{engine}" + (f"+{floats}" if autocast is not None else "")
    return floats


def worker_name() -> str:
    """The Dask worker running this task (its address), else host/pid: where a dtype was used."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):  # not inside a distributed worker (sync scheduler, the Python API)
        return f"{socket.gethostname()}/{os.getpid()}"
