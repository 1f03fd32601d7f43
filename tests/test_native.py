"""The compiled DeBERTa kernels (attention; bias + GELU, residual + LayerNorm): PyTorch's numbers, built
once per machine, safe to build from many processes at once or to kill mid-build, and PyTorch's ops
where they cannot be built."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from transformers import BertConfig, BertModel, DebertaV2Config, DebertaV2Model

from curator.inference.numerics import FEATURES_ENV
from curator.models import native
from curator.models.fast_deberta import FastDebertaLayer, lean_deberta
from curator.models.fast_encoder import FastLayer, attention_kind, fast_encoder, set_native_attention
from tests.fixtures_deberta import TINY_DEBERTA
from tests.test_fast_deberta import ATOL, SMALL_BUCKETS, ragged

ROOT = Path(__file__).resolve().parent.parent
COMPILER = shutil.which(os.environ.get("CXX") or "c++")
needs_compiler = pytest.mark.skipif(COMPILER is None, reason="no C++ compiler on this machine")
# A process that builds (or loads) the kernel into the cache its environment names, and says which.
BUILD = "from curator.models import native; print('built' if native.deberta_attention() else 'none')"


def encoder(seed: int = 1, **overrides: object) -> tuple[torch.nn.Module, DebertaV2Model]:
    torch.manual_seed(seed)
    config = DebertaV2Config(vocab_size=300, **{**TINY_DEBERTA, **overrides})
    model = DebertaV2Model(config).eval()
    return lean_deberta(lambda e: e, config, model.state_dict(), ""), model


def assert_native_matches(lean: torch.nn.Module, model: DebertaV2Model, batches, atol: float) -> None:
    """The lean forward with the compiled steps equals PyTorch's ops and Hugging Face's modules on
    ragged batches of these lengths, bit-identical run to run."""
    for lengths in batches:
        input_ids, mask = ragged(lengths, seed=len(lengths))
        with torch.inference_mode():
            set_native_attention(lean, True)
            ours = lean(input_ids, mask)
            again = lean(input_ids, mask)
            set_native_attention(lean, False)
            pytorch = lean(input_ids, mask)
            theirs = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        real = mask.bool()
        np.testing.assert_allclose(ours[real].numpy(), pytorch[real].numpy(), atol=atol)
        np.testing.assert_allclose(ours[real].numpy(), theirs[real].numpy(), atol=atol)
        assert torch.equal(ours, again)  # bit-identical run to run
        assert torch.isfinite(ours).all()


@needs_compiler
@pytest.mark.parametrize(
    ("overrides", "atol"),
    [
        ({}, ATOL),
        (SMALL_BUCKETS, ATOL),
        ({"pos_att_type": ["c2p"], "share_att_key": False}, ATOL),
        ({"pos_att_type": ["p2c"], "share_att_key": False, "position_buckets": 16}, ATOL),
        # head size 64, as deberta-v3-base's: float32 rounding reaches 8e-5 here between Hugging Face's
        # modules and PyTorch's lean path too
        ({"hidden_size": 128, "num_attention_heads": 2}, 1e-4),
    ],
)
def test_the_kernel_equals_pytorchs_ops_and_hugging_face(
    overrides: dict, atol: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    lean, model = encoder(**overrides)
    used, fused = [], []
    kernel, fused_steps = FastDebertaLayer.kernel, FastDebertaLayer.fused
    monkeypatch.setattr(
        FastDebertaLayer, "kernel", lambda self, *a: used.append(op := kernel(self, *a)) or op
    )
    monkeypatch.setattr(
        FastDebertaLayer, "fused", lambda self, *a: fused.append(ops := fused_steps(self, *a)) or ops
    )
    # widths below, at and across the 64-query blocks; a one-token row; padding in every batch; a batch
    # narrower than the one before it (nothing of a wider batch carried over)
    assert_native_matches(lean, model, ([1, 3, 9], [64, 17], [65, 130, 2], [200, 7, 140], [40, 3]), atol)
    assert any(op is not None for op in used), "the compiled kernel never ran"
    assert any(ops is not None for ops in fused), "the compiled feed-forward steps never ran"


# The kernel compiled for AVX2 and FMA only (x86-64-v3: an AMD EPYC's vectors, no AVX-512), in a fresh
# process with its own cache, against PyTorch's ops and Hugging Face's modules.
AVX2_CHECK = """
from curator.models import native
native.FLAGS = tuple("-march=x86-64-v3" if f == "-march=native" else f for f in native.FLAGS)
print(native.build(native.SOURCE))
from tests.test_native import assert_native_matches, encoder
assert native.deberta_attention() is not None
lean, model = encoder(hidden_size=128, num_attention_heads=2)
assert_native_matches(lean, model, ([1, 3, 9], [65, 130, 2], [200, 7, 140], [40, 3]), atol=1e-4)
print("equal")
"""


@needs_compiler
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86-64-v3 is an x86 target")
def test_the_kernel_built_for_avx2_only_gives_the_same_numbers(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", AVX2_CHECK], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and done.stdout.split()[-1] == "equal", done.stderr[-3000:]
    library = done.stdout.split()[0]
    objdump = shutil.which("objdump")
    if objdump:  # AVX2 vectors, and no AVX-512 register (zmm, mask, or the upper 16) anywhere
        listing = subprocess.run([objdump, "-d", library], capture_output=True, text=True, check=True).stdout
        assert "%ymm" in listing
        assert not re.search(r"%zmm|%k[1-7]\b|%[xy]mm(1[6-9]|2[0-9]|3[01])\b", listing)


def spy_kernel(monkeypatch: pytest.MonkeyPatch, kind: type = FastLayer) -> list[tuple[torch.dtype, ...]]:
    """The dtypes of q, k and v each time a layer of `kind` calls the compiled attention."""
    seen: list[tuple[torch.dtype, ...]] = []
    kernel = kind.kernel

    def spy(self: FastLayer, *args: object) -> object:
        op = kernel(self, *args)
        return None if op is None else lambda *a: seen.append(tuple(t.dtype for t in a[:3])) or op(*a)

    monkeypatch.setattr(kind, "kernel", spy)
    return seen


@needs_compiler
def test_under_bf16_autocast_the_kernel_computes_the_attention_in_float32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lean, model = encoder(hidden_size=128, num_attention_heads=2)
    seen = spy_kernel(monkeypatch, FastDebertaLayer)
    ids, mask = ragged([64, 17, 130], seed=2)
    real = mask.bool()
    with torch.inference_mode():
        theirs = model(input_ids=ids, attention_mask=mask).last_hidden_state[real]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours = lean(ids, mask)[real].float()
            set_native_attention(lean, False)
            pytorch = lean(ids, mask)[real].float()
    assert seen and set(seen) == {(torch.float32,) * 3}  # bf16 projections, float32 scores
    # bf16's 8 bits in the projections and the feed-forward (mean error 0.027 here); PyTorch's bf16
    # attention adds its own (0.039)
    error, bf16_error = float((ours - theirs).abs().mean()), float((pytorch - theirs).abs().mean())
    assert error < 0.05 and error < bf16_error


@needs_compiler
def test_first_only_and_switched_off_layers_do_not_use_the_kernels() -> None:
    lean, _ = encoder()
    layer = lean.layers[0]
    index = lean.position_index(5, torch.device("cpu"))
    q32, q16 = torch.zeros(1, 2, 5, 16), torch.zeros(1, 2, 5, 16, dtype=torch.bfloat16)
    assert layer.kernel(q32, False, index) is not None
    assert layer.kernel(q16, False, index) is not None  # bf16 autocast: the scores in float32 all the same
    assert layer.kernel(q32.double(), False, index) is None  # float64 is not narrowed to float32
    assert layer.kernel(q32, True, index) is None  # the last layer's first token only
    wide = torch.zeros(1, 2, 4097, 16)
    assert layer.kernel(wide, False, lean.position_index(4097, torch.device("cpu"))) is None
    x32 = torch.zeros(1, 5, 32)
    assert layer.fused(x32) is not None
    assert layer.fused(x32.bfloat16()) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer.fused(x32) is None  # the matmuls would run in bf16
    set_native_attention(lean, False)
    assert layer.kernel(q32, False, index) is None
    assert layer.fused(x32) is None


def bert(seed: int = 3) -> tuple[torch.nn.Module, BertModel]:
    """A BERT encoder with MiniLM's head size (32) on the lean path, and Hugging Face's modules."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=300,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=300,
    )
    model = BertModel(config).eval()
    return fast_encoder(config, model.state_dict()), model


@needs_compiler
def test_bert_layers_use_the_kernel_and_equal_pytorchs_attention_and_hugging_face(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lean, model = bert()
    seen = spy_kernel(monkeypatch)
    for lengths in ([1, 3, 9], [64, 17], [65, 130, 2], [200, 7, 140]):
        ids, mask = ragged(lengths, seed=len(lengths))
        real = mask.bool()
        with torch.inference_mode():
            set_native_attention(lean, True)
            ours = lean(ids, mask)
            set_native_attention(lean, False)
            pytorch = lean(ids, mask)
            theirs = model(input_ids=ids, attention_mask=mask).last_hidden_state
        np.testing.assert_allclose(ours[real].numpy(), pytorch[real].numpy(), atol=1e-5)
        np.testing.assert_allclose(ours[real].numpy(), theirs[real].numpy(), atol=1e-5)
    assert seen and set(seen) == {(torch.float32,) * 3}, "the compiled attention never ran"
    assert attention_kind(lean) == "PyTorch"
    set_native_attention(lean, True)
    assert attention_kind(lean) == "compiled"


@needs_compiler
def test_bert_layers_under_bf16_autocast_compute_the_attention_in_float32(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FEATURES_ENV, "avx512_bf16")  # no AMX (an AMX Xeon runs PyTorch's bf16 attention)
    lean, model = bert(seed=4)
    seen = spy_kernel(monkeypatch)
    ids, mask = ragged([64, 17, 130], seed=2)
    real = mask.bool()
    with torch.inference_mode():
        theirs = model(input_ids=ids, attention_mask=mask).last_hidden_state[real]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours = lean(ids, mask)
            set_native_attention(lean, False)
            pytorch = lean(ids, mask)
    assert ours.dtype == pytorch.dtype  # what autocast's LayerNorm leaves, either way
    assert seen and set(seen) == {(torch.float32,) * 3}  # bf16 projections, float32 scores
    error = float((ours[real].float() - theirs).abs().mean())
    bf16_error = float((pytorch[real].float() - theirs).abs().mean())
    assert error < 0.05 and error <= bf16_error * 1.05


def test_a_bert_layer_takes_the_kernel_only_where_it_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FEATURES_ENV, "avx512_bf16")  # an AMD EPYC (Zen 4): no AMX
    lean, _ = bert()
    layer = lean.layers[0]
    q32 = torch.zeros(1, 2, 5, 32)
    expected = native.deberta_attention()  # None without a compiler: PyTorch's attention everywhere
    assert layer.kernel(q32, False) is expected
    assert layer.kernel(q32.bfloat16(), False) is expected
    assert layer.kernel(q32.double(), False) is None  # float64 is not narrowed to float32
    assert layer.kernel(q32, True) is None  # the last layer's first token only
    assert layer.kernel(torch.zeros(1, 2, 4097, 32), False) is None  # wider than its buffer allows
    kind = "compiled" if expected is not None else "PyTorch"
    assert attention_kind(lean, torch.bfloat16) == kind
    monkeypatch.setenv(FEATURES_ENV, "amx_tile amx_bf16 avx512_bf16")  # an AMX Xeon
    assert layer.kernel(q32.bfloat16(), False) is None  # PyTorch's bf16 attention runs on the tiles
    assert attention_kind(lean, torch.bfloat16) == "PyTorch"
    assert layer.kernel(q32, False) is expected
    assert attention_kind(lean, torch.float32) == kind
    deberta, _ = encoder()  # DeBERTa's layers take the kernel under autocast on AMX too
    assert attention_kind(deberta, torch.bfloat16) == kind
    set_native_attention(lean, False)
    assert layer.kernel(q32, False) is None


def run_build(cache: Path, **env: str) -> subprocess.Popen:
    environ = {**os.environ, "XDG_CACHE_HOME": str(cache), **env}
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.Popen([sys.executable, "-c", BUILD], cwd=ROOT, env=environ, **pipes)


def libraries(cache: Path) -> list[Path]:
    return sorted((cache / "curator" / "native").glob("*/*.so"))


@needs_compiler
def test_two_processes_building_at_once_share_one_build(tmp_path: Path) -> None:
    first, second = run_build(tmp_path), run_build(tmp_path)
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert [out.strip() for out, _ in outputs] == ["built", "built"], outputs
    assert [p.name for p in libraries(tmp_path)] == ["deberta_attention.so"]  # no partial build left


@needs_compiler
def test_a_build_killed_midway_leaves_nothing_to_wait_on(tmp_path: Path) -> None:
    victim = run_build(tmp_path)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "curator" / "native").glob("*/build.lock")):
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.05)
    time.sleep(1)  # the compiler is running: kill its caller mid-build
    victim.kill()
    victim.wait(timeout=30)
    assert libraries(tmp_path) == []  # the killed build left no library (a half-written one never lands)
    out, err = run_build(tmp_path).communicate(timeout=300)  # would hang on a stale lock
    assert out.strip() == "built", err
    assert [p.name for p in libraries(tmp_path)] == ["deberta_attention.so"]
    # the killed build's compiler ran on, orphaned, and wrote its output: the next run removes it
    orphan_done = time.monotonic() + 300
    while any(str(tmp_path) in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])):
        assert time.monotonic() < orphan_done
        time.sleep(0.2)
    out, err = run_build(tmp_path).communicate(timeout=300)
    assert out.strip() == "built", err
    left = sorted(p.name for p in (tmp_path / "curator" / "native").glob("*/*") if p.name != "build.lock")
    assert left == ["deberta_attention.so"]


@needs_compiler
def test_a_stale_partial_build_in_a_read_only_cache_does_not_stop_the_library_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = native.build(native.SOURCE)  # this machine's library, from the default cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = native.cache_folder(native.SOURCE.read_bytes())
    folder.mkdir(parents=True)
    shutil.copy(built, folder / built.name)
    (folder / f"{built.name}.123.partial").write_bytes(b"half")

    def read_only(self: Path, missing_ok: bool = False) -> None:  # as a read-only mount (root ignores chmod)
        raise PermissionError(13, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    assert native.build(native.SOURCE) == folder / built.name


def test_without_a_compiler_pytorchs_ops_run_and_the_log_says_why(tmp_path: Path) -> None:
    check = (
        "import logging, torch; logging.basicConfig(level=logging.INFO)\n"
        "from curator.models import native\n"
        "from tests.test_native import encoder\n"
        "from tests.test_fast_deberta import ragged\n"
        "assert native.deberta_attention() is None\n"
        "lean, model = encoder()\n"
        "ids, mask = ragged([5, 40])\n"
        "with torch.inference_mode():\n"
        "    ours = lean(ids, mask); theirs = model(input_ids=ids, attention_mask=mask).last_hidden_state\n"
        "print(float((ours - theirs)[mask.bool()].abs().max()))\n"
    )
    environ = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "CXX": str(tmp_path / "no-such-compiler")}
    command = [sys.executable, "-c", check]
    done = subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) < ATOL
    assert "Compiled attention kernels not available" in done.stderr and "no-such-compiler" in done.stderr
    assert libraries(tmp_path) == []


def test_the_cache_folder_differs_by_cpu_and_source(monkeypatch: pytest.MonkeyPatch) -> None:
    here = native.cache_folder(b"source")
    assert native.cache_folder(b"other source") != here
    monkeypatch.setattr(native, "cpu_flags", lambda: "sse2 avx2")  # another kind of node, same home
    assert native.cache_folder(b"source") != here


@needs_compiler
def test_a_symbol_torch_lacks_fails_the_build_not_a_later_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A torch whose BLAS has no `sgemm_` must fall back at build time: a library with an unresolved
    symbol would load lazily and end the process at its first call."""
    source = tmp_path / "deberta_attention.cpp"
    source.write_text(native.SOURCE.read_text().replace("sgemm_(", "sgemm_missing_("))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="sgemm_missing_"):
        native.build(source)
    assert libraries(tmp_path / "cache") == []
