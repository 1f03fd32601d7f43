"""Numerics by capability: what `inference.dtype` means on a CPU with and without native bf16, int8's
backend, and the dtype a run used, as the engine reports it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from curator import pipeline
from curator.classifiers.mixin import MixinClassifier
from curator.classifiers.prompt_task import PromptTaskComplexityClassifier
from curator.classifiers.sequence import RegressionClassifier
from curator.columns import STATS_ATTR
from curator.config import InferenceConfig
from curator.inference import cache
from curator.inference.engine import resolve_autocast
from curator.inference.numerics import (
    BF16_FLAGS,
    FEATURES_ENV,
    _cpuinfo_flags,
    cpu_numerics,
    numerics_label,
)
from curator.models.weights import load_strict, read_safetensors
from curator.report import summarise
from curator.report_html import render
from tests.conftest import DOCS, TOKENIZER_FILES, save_tiny_bert
from tests.fixtures_deberta import (
    DOMAIN_LABELS,
    save_backbone,
    texts_of_many_lengths,
    write_mixin_checkpoint,
    write_prompt_task_checkpoint,
)
from tests.test_native import needs_compiler

CPU = torch.device("cpu")
# cpuinfo flags of the two kinds of machine this project runs on
XEON_AMX = ["avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"]
EPYC_AVX2 = ["avx2", "fma", "sse4_2"]
# bf16 vs float32 on the look-alikes (random weights, 2 layers of 32 dims; heads scaled so classes
# differ): labels may flip only at near-ties, probabilities move by bf16's ~3 significant digits.
BF16_LABEL_AGREEMENT = 0.9
BF16_PROB_ATOL = 0.05


def test_flags_decide_bf16_and_int8() -> None:
    xeon, epyc = cpu_numerics(XEON_AMX), cpu_numerics(EPYC_AVX2)
    assert (xeon.bf16, xeon.int8) == (True, True)
    assert (epyc.bf16, epyc.int8) == (False, False)
    assert cpu_numerics(["avx512_bf16"]).bf16 and not cpu_numerics(["avx512_bf16"]).int8  # Cooper Lake
    assert cpu_numerics(["avx_vnni"]).int8 and not cpu_numerics(["avx_vnni"]).bf16


def test_the_environment_replaces_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FEATURES_ENV, "amx_bf16, amx_int8")
    assert cpu_numerics().bf16 and cpu_numerics().flags == {"amx_bf16", "amx_int8"}
    monkeypatch.setenv(FEATURES_ENV, "none")
    assert not cpu_numerics().bf16 and not cpu_numerics().flags
    assert cpu_numerics(XEON_AMX).bf16  # an explicit argument wins over the environment


def test_cpuinfo_flags_are_read(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx2 amx_bf16 avx512_bf16\n\n")
    assert _cpuinfo_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16", "avx512_bf16"}
    assert _cpuinfo_flags(tmp_path / "missing") == set()


def test_detection_here_agrees_with_this_machines_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FEATURES_ENV, raising=False)
    cpuinfo = _cpuinfo_flags()
    if not cpuinfo:
        pytest.skip("no /proc/cpuinfo here")
    assert cpu_numerics().bf16 == bool(cpuinfo & BF16_FLAGS)
    assert cpuinfo <= cpu_numerics().flags


@pytest.mark.parametrize(
    ("dtype", "flags", "expected"),
    [
        ("auto", XEON_AMX, torch.bfloat16),  # native bf16: autocast
        ("auto", EPYC_AVX2, None),  # no native bf16: float32, as before
        ("float32", XEON_AMX, None),  # the pin for bit-identical float32 results
        ("bfloat16", XEON_AMX, torch.bfloat16),
        ("bfloat16", EPYC_AVX2, torch.bfloat16),  # honoured (emulated, with a warning), never ignored
        ("float16", EPYC_AVX2, torch.float16),
    ],
)
def test_dtype_on_cpu_by_capability(dtype: str, flags: list[str], expected: torch.dtype | None) -> None:
    assert resolve_autocast(dtype, CPU, numerics=cpu_numerics(flags)) == expected


def test_auto_with_int8_stays_float_and_uses_the_best_engine() -> None:
    assert resolve_autocast("auto", CPU, "int8", cpu_numerics(XEON_AMX)) is None
    assert resolve_autocast("bfloat16", CPU, "int8", cpu_numerics(XEON_AMX)) == torch.bfloat16
    supported = torch.backends.quantized.supported_engines
    if "onednn" in supported:
        assert cpu_numerics(XEON_AMX).quantized_engine() == "onednn"  # AMX-INT8 tiles
    assert cpu_numerics(EPYC_AVX2).quantized_engine() in supported


def test_labels_name_what_ran() -> None:
    assert numerics_label(None, None) == "float32"
    assert numerics_label(torch.bfloat16, None) == "bfloat16"
    assert numerics_label(None, "int8", "onednn") == "int8/onednn"
    assert numerics_label(torch.bfloat16, "int8", "x86") == "int8/x86+bfloat16"


# ---- bf16 on the CPU, through the engine -----------------------------------------------------------
@pytest.fixture(scope="module")
def deberta_ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    backbone = save_backbone(tmp_path_factory.mktemp("backbone"))
    return {
        "domain": write_mixin_checkpoint(tmp_path_factory.mktemp("domain"), backbone, DOMAIN_LABELS, seed=1),
        "prompt": write_prompt_task_checkpoint(tmp_path_factory.mktemp("prompt"), backbone, seed=3),
    }


def classify(family: type, folder: Path, dtype: str, fast: bool = True) -> tuple[pd.DataFrame, list]:
    """classify_partition on the look-alike texts; also the dtypes a feed-forward Linear produced."""
    clf = family(
        "c", model=str(folder), max_length=48, inference=InferenceConfig(dtype=dtype, fast_encoder=fast)
    )
    model, _, _ = clf._runtime()
    seen: list[torch.dtype] = []
    backbone = getattr(model, "model", None) or model.backbone
    linear = backbone.layers[0].qkv if fast else backbone.encoder.layer[0].intermediate.dense
    handle = linear.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    try:
        out = clf.classify_partition(pd.DataFrame({"text": texts_of_many_lengths()}))
    finally:
        handle.remove()
    return out, seen


@pytest.mark.parametrize("fast", [True, False], ids=["lean", "hf-modules"])
def test_bf16_runs_in_bf16_and_agrees_with_float32(deberta_ckpts: dict[str, Path], fast: bool) -> None:
    half, seen = classify(MixinClassifier, deberta_ckpts["domain"], "bfloat16", fast)
    full, seen32 = classify(MixinClassifier, deberta_ckpts["domain"], "float32", fast)
    assert set(seen) == {torch.bfloat16} and set(seen32) == {torch.float32}
    assert half.attrs[STATS_ATTR]["c"]["dtype"] == "bfloat16"
    assert full.attrs[STATS_ATTR]["c"]["dtype"] == "float32"
    assert (half["pred"] == full["pred"]).mean() >= BF16_LABEL_AGREEMENT
    assert full["pred"].nunique() > 1


def test_bf16_prompt_scores_agree_with_float32(deberta_ckpts: dict[str, Path]) -> None:
    half, _ = classify(PromptTaskComplexityClassifier, deberta_ckpts["prompt"], "bfloat16")
    full, _ = classify(PromptTaskComplexityClassifier, deberta_ckpts["prompt"], "float32")
    assert (half["pred"] == full["pred"]).mean() >= BF16_LABEL_AGREEMENT
    score = "prompt_complexity_score"
    np.testing.assert_allclose(half[score], full[score], atol=BF16_PROB_ATOL)
    assert half.attrs[STATS_ATTR]["c"]["dtype"] == "bfloat16"


@pytest.fixture(scope="module")
def minilm_score(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """A FineWeb-shaped regression head (std 0.1, bias 2.5: scores near the 2.5 rounding boundary) on
    the real MiniLM encoder: bf16's rounding of the score itself would show there."""
    folder = tmp_path_factory.mktemp("minilm-score")
    config = BertConfig.from_pretrained(minilm_path, num_labels=1, problem_type="regression")
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    load_strict(model.bert, read_safetensors(minilm_path))
    torch.nn.init.normal_(model.classifier.weight, std=0.1)
    torch.nn.init.constant_(model.classifier.bias, 2.5)
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm_path / name, folder / name)
    return folder


def score_texts(n: int = 48) -> list[str]:
    """Web-like texts of 5 to 120 words drawn from the look-alike documents' words."""
    words = " ".join(text for _, text in DOCS).split()
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=rng.integers(5, 120))) for _ in range(n)]


@pytest.mark.parametrize("fast", [True, False], ids=["lean", "hf-modules"])
def test_bf16_scores_keep_float32_heads(minilm_score: Path, fast: bool) -> None:
    """Under bf16 the encoder's matmuls run in bf16 but the head in float32: the score is not cut to
    bf16's 8 significant bits (steps of 1/64 at 2.5, which flipped 4.5% of the bench's integer scores)."""

    def scores(dtype: str) -> np.ndarray:
        inference = InferenceConfig(dtype=dtype, fast_encoder=fast)
        clf = RegressionClassifier("s", model=str(minilm_score), pred_column="s", inference=inference)
        return np.asarray(clf.predict(score_texts())["s"], dtype=np.float32)

    half, full = scores("bfloat16"), scores("float32")
    on_bf16_grid = torch.from_numpy(half).bfloat16().float().numpy() == half
    assert on_bf16_grid.mean() < 0.2  # a float32 score lands on the bf16 grid only by chance
    assert full.std() > 0.01  # the texts' scores differ: a precision test on them means something
    # bf16 matmuls move the score by ~4e-4 on average here; a bf16 output alone by ~4e-3
    assert np.abs(half - full).mean() < 1.5e-3


@pytest.mark.parametrize("fast", [True, False], ids=["lean", "hf-modules"])
def test_a_checkpoint_saved_in_bf16_keeps_a_float32_head(
    tmp_path: Path, minilm_path: Path, fast: bool
) -> None:
    """A config saying bfloat16 loads the encoder in bf16; the head is float32 all the same (and runs)."""
    folder = save_tiny_bert(tmp_path, BertForSequenceClassification, minilm_path, num_labels=1)
    BertForSequenceClassification.from_pretrained(folder).to(torch.bfloat16).save_pretrained(folder)
    inference = InferenceConfig(dtype="float32", fast_encoder=fast)
    clf = RegressionClassifier("s", model=str(folder), pred_column="s", inference=inference)
    model, _, _ = clf._runtime()
    assert {p.dtype for p in model.model.classifier.parameters()} == {torch.float32}
    assert torch.bfloat16 in {p.dtype for p in model.parameters()}
    scores = np.asarray(clf.predict(score_texts(8))["s"])
    assert np.isfinite(scores).all() and len(set(scores.tolist())) > 1


def test_summary_json_and_report_carry_the_dtype_per_worker(
    make_config,
    docs_dir: Path,
    tmp_path: Path,
    deberta_ckpts: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FEATURES_ENV, ",".join(XEON_AMX))  # auto → bf16 (emulated on a CPU without it)
    cfg = make_config(
        f"dataset.path={docs_dir}",
        "classifier=domain",
        f"classifier.domain.model={deberta_ckpts['domain']}",
        "classifier.domain.max_length=48",
    )
    pipeline.run(cfg, run_dir=str(tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    engine = summary["classifiers"]["domain"]
    assert engine["dtype"] == "bfloat16" and set(engine["dtype_by_worker"].values()) == {"bfloat16"}
    assert summary["written"] == len(DOCS)
    assert all(part["classify"]["domain"]["dtype"] == "bfloat16" for part in summary["per_file"])
    page = render(summary)
    assert '"dtype_by_worker"' in page and 'id="numerics"' in page


@pytest.mark.parametrize(
    ("dtype", "native"),
    [
        pytest.param("float32", True, marks=needs_compiler),
        ("float32", False),
        pytest.param("bfloat16", True, marks=needs_compiler),  # float32 scores under bf16 autocast
    ],
    ids=["compiled", "pytorch", "bf16-compiled"],
)
def test_summary_says_how_a_deberta_run_on_cpu_computed_its_attention(
    make_config, docs_dir: Path, tmp_path: Path, deberta_ckpts: dict[str, Path], dtype: str, native: bool
) -> None:
    cfg = make_config(
        f"dataset.path={docs_dir}",
        "classifier=domain",
        f"classifier.domain.model={deberta_ckpts['domain']}",
        "classifier.domain.max_length=48",
        f"inference.dtype={dtype}",
        f"inference.native_attention={str(native).lower()}",
    )
    pipeline.run(cfg, run_dir=str(tmp_path / "run"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    engine = summary["classifiers"]["domain"]
    kind = "compiled" if native else "PyTorch"
    assert engine["dtype"] == dtype and engine["attention"] == kind
    assert set(engine["attention_by_worker"].values()) == {kind}
    assert '"attention_by_worker"' in render(summary)


@pytest.mark.parametrize(
    ("dtype", "native"),
    [pytest.param("bfloat16", True, marks=needs_compiler), ("float32", False)],
    ids=["bf16-compiled", "pytorch"],
)
def test_summary_says_how_a_bert_run_on_cpu_computed_its_attention(
    make_config, docs_dir: Path, tmp_path: Path, tiny_fineweb: Path, dtype: str, native: bool
) -> None:
    cfg = make_config(
        f"dataset.path={docs_dir}",
        "classifier=fineweb_edu",
        f"classifier.fineweb_edu.model={tiny_fineweb}",
        f"inference.dtype={dtype}",
        f"inference.native_attention={str(native).lower()}",
    )
    pipeline.run(cfg, run_dir=str(tmp_path / "run"))
    engine = json.loads((tmp_path / "run" / "summary.json").read_text())["classifiers"]["fineweb_edu"]
    amx = "amx_bf16" in cpu_numerics().flags  # there bf16 attention stays PyTorch's, on the tiles
    compiled = native and not (amx and dtype != "float32")
    assert engine["dtype"] == dtype and engine["attention"] == ("compiled" if compiled else "PyTorch")


def test_a_partition_with_no_text_to_classify_loads_no_model_for_its_numerics(
    deberta_ckpts: dict[str, Path],
) -> None:
    """The attention field reports the model that ran; a partition of only empty or bad rows runs none,
    and must not load a DeBERTa (or a 7B guard model) just to label its numerics."""
    cache.clear()
    clf = MixinClassifier(
        "c", model=str(deberta_ckpts["domain"]), max_length=48, inference=InferenceConfig(dtype="float32")
    )
    before = cache.load_count()
    out = clf.classify_partition(pd.DataFrame({"text": pd.Series([], dtype=object)}))
    stats = out.attrs[STATS_ATTR]["c"]
    assert cache.load_count() == before and stats["dtype"] == "float32" and "attention" not in stats
    clf.classify_partition(pd.DataFrame({"text": ["A document about the weather."]}))
    assert cache.load_count() > before  # the model (and tokenizer) that ran: now its attention is reported
    ran = clf.classify_partition(pd.DataFrame({"text": pd.Series([], dtype=object)}))
    assert ran.attrs[STATS_ATTR]["c"]["attention"] in {"compiled", "PyTorch"}


def test_summary_shows_each_workers_dtype() -> None:
    unit = {"read": 1, "written": 1, "filtered": 0, "quarantined": 0, "labels": {}, "input": "a"}
    parts = [
        {
            **unit,
            "classify": {
                "c": {
                    "documents": 1,
                    "seconds": 1.0,
                    "real_tokens": 4,
                    "padded_tokens": 4,
                    "dtype": dtype,
                    "worker": worker,
                }
            },
        }
        for worker, dtype in (("tcp://a:1", "bfloat16"), ("tcp://b:1", "float32"), ("tcp://a:1", "bfloat16"))
    ]
    parts[1]["classify"]["c"]["attention"] = "PyTorch"  # the float32 worker's lean DeBERTa, no compiler
    engine = summarise(parts, 1.0, "out")["classifiers"]["c"]
    assert engine["dtype_by_worker"] == {"tcp://a:1": "bfloat16", "tcp://b:1": "float32"}
    assert engine["attention_by_worker"] == {"tcp://b:1": "PyTorch"} and engine["attention"] == "PyTorch"
    assert engine["dtype"] == "bfloat16, float32" and engine["documents"] == 3
