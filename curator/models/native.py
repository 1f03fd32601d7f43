"""C++ CPU kernels, compiled on first use for the machine that runs them and cached on disk.

For DeBERTa in float32 (`csrc/deberta_attention.cpp`): its disentangled attention, which PyTorch's
ops can only build in passes over a [rows, heads, n, n] bias in memory, built per (row, head) in cache
instead; and the feed-forward's bias + GELU and residual + bias + LayerNorm steps as one pass each.
The deberta-v3-base shape runs ~1.2x faster on a 2-core Xeon (scripts/bench_inference.py), with the
same results within float rounding. The attention kernel without position terms is BERT's attention too:
the lean BERT-family forward (MiniLM, FineWeb-Edu) uses it, 1.07x in float32 and 1.10-1.13x under bf16
autocast for MiniLM's whole forward on a 2-core AMD EPYC, where PyTorch's bf16 attention at head size 32
is no faster than its float32 one.

The build needs a C++ compiler (`$CXX`, else `c++`) and torch's headers, nothing else (no ninja, no
Python headers); it takes ~10 s once per machine kind. Where it cannot happen (no compiler, a
read-only cache, another OS), PyTorch's ops run and a log line says why. The library lands under
`$XDG_CACHE_HOME/curator/native` (default `~/.cache`), in a folder named by a fingerprint of the
source, torch's version and the CPU's flags (`-march=native`: a shared home across different nodes
keeps one build per kind). A lock the kernel releases when its holder dies serialises builds, and a
build is renamed into place only when complete: two runs at once, or a run killed mid-build, leave
no half-built library and nothing to wait on forever (the output a killed build's compiler writes
later is removed by the next run).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "deberta_attention.cpp"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-std=c++20", "-fPIC", "-shared")
BUILD_SECONDS = 600  # a compiler that runs longer is stuck: PyTorch's ops run instead


def cpu_flags() -> str:
    """The CPU's feature flags as the kernel reports them (what -march=native compiles for)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.processor()


def cache_folder(source: bytes) -> Path:
    """Where this source's library for this torch and this kind of CPU lives."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "curator" / "native"
    key = "\n".join([torch.__version__, platform.machine(), cpu_flags(), " ".join(FLAGS)]).encode()
    return base / hashlib.sha256(source + key).hexdigest()[:16]


def compile_command(source: Path, target: Path) -> list[str]:
    """One compiler call: the source → a shared library linked against torch's."""
    from torch.utils import cpp_extension

    includes = [f"-isystem{path}" for path in cpp_extension.include_paths()]
    libraries = [f"-L{path}" for path in cpp_extension.library_paths()]
    compiler = os.environ.get("CXX") or "c++"
    # -z defs: a symbol torch's libraries lack (sgemm_ in a build without BLAS) fails here, not at a call
    link = [*libraries, "-lc10", "-ltorch_cpu", "-Wl,-z,defs"]
    return [compiler, *FLAGS, *includes, str(source), "-o", str(target), *link]


def build(source: Path) -> Path:
    """The compiled library for `source`: from the cache, else built once (other processes wait)."""
    import fcntl  # POSIX only; elsewhere the ImportError sends the caller to PyTorch's ops

    folder = cache_folder(source.read_bytes())
    library = folder / f"{source.stem}.so"
    if library.exists():
        remove_abandoned(folder)
        return library
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
        if library.exists():  # built while this process waited
            return library
        remove_abandoned(folder)
        partial = folder / f"{library.name}.{os.getpid()}.partial"
        try:
            log.info("Compiling %s for this CPU (once per machine kind, ~10 s)", source.name)
            done = subprocess.run(
                compile_command(source, partial), capture_output=True, text=True, timeout=BUILD_SECONDS
            )
            if done.returncode != 0:
                raise RuntimeError(f"the compiler failed: {(done.stderr or done.stdout).strip()[-600:]}")
            os.replace(partial, library)
        finally:
            partial.unlink(missing_ok=True)
    return library


def remove_abandoned(folder: Path) -> None:
    """Delete the outputs of builds whose process died: its compiler runs on and writes one later.

    Called with the lock held, or once the library exists: no live build is writing then.
    """
    for stale in folder.glob("*.partial"):
        with contextlib.suppress(OSError):  # a read-only cache keeps it, and its library still loads
            stale.unlink(missing_ok=True)


@functools.cache
def kernels() -> Any | None:
    """`torch.ops.curator` with the compiled kernels for this CPU; None (logged once) where they cannot be."""
    if sys.platform != "linux":
        log.info("The compiled attention kernels are built on Linux only: PyTorch's ops run")
        return None
    try:
        torch.ops.load_library(str(build(SOURCE)))
        return torch.ops.curator
    except Exception as exc:  # any failure: the same results come from PyTorch's ops
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        log.info("Compiled attention kernels not available (%s): PyTorch's ops run (same results)", reason)
        return None


def deberta_attention() -> Callable[..., torch.Tensor] | None:
    """`torch.ops.curator.deberta_attention`, compiled for this CPU, or None."""
    ops = kernels()
    return ops.deberta_attention if ops is not None else None
