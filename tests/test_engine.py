"""The engine's behaviours beyond batching: OOM back-off, prefetch, memory budgets, int8, engines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curator.classifiers.zero_shot import ZeroShotClassifier
from curator.config import InferenceConfig
from curator.errors import ConfigError
from curator.inference.engine import BatchPlan, RunStats, check_engine, resolve_autocast, run_batches
from curator.inference.memory import bytes_per_token, cuda_token_budget
from tests.conftest import DOCS, MINILM

CPU = torch.device("cpu")


def rows(n: int = 120, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 100, size=rng.integers(1, 60)).tolist() for _ in range(n)]


def summing(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.stack([(input_ids * mask).sum(1), mask.sum(1)], dim=1).float()


def test_oom_splits_the_batch_lowers_the_budget_and_loses_nothing() -> None:
    seen: list[int] = []

    def fragile(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        seen.append(input_ids.numel())
        if input_ids.numel() > 700:  # a device that only holds 700 tokens of activations
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return summing(input_ids, mask)

    data, stats = rows(), RunStats()
    out = run_batches(data, fragile, BatchPlan(token_budget=4000, max_rows=64), 0, CPU, stats=stats)
    assert out[:, 0].tolist() == [float(sum(r)) for r in data]
    assert stats.oom_retries >= 1 and stats.final_budget <= 700
    after_first_success = seen[seen.index(next(s for s in seen if s <= 700)) :]
    assert max(after_first_success) <= 700  # the lowered budget stays for the rest of the partition


def test_a_single_row_that_does_not_fit_is_an_error() -> None:
    def hopeless(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        run_batches([[1, 2, 3]], hopeless, BatchPlan(token_budget=100, max_rows=8), 0, CPU)


def test_other_errors_are_not_retried() -> None:
    def broken(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError, match="shape mismatch"):
        run_batches(rows(10), broken, BatchPlan(token_budget=1000, max_rows=8), 0, CPU)


def test_prefetch_gives_identical_results_and_stats() -> None:
    data = rows(300, seed=3)
    plain, threaded = RunStats(), RunStats()
    a = run_batches(data, summing, BatchPlan(500, 32), 0, CPU, stats=plain)
    b = run_batches(data, summing, BatchPlan(500, 32, prefetch=True), 0, CPU, stats=threaded)
    np.testing.assert_array_equal(a, b)
    assert (plain.batches, plain.padded_tokens) == (threaded.batches, threaded.padded_tokens)


def test_sorting_cuts_padding() -> None:
    data = rows(400, seed=4)
    unsorted, ordered = RunStats(), RunStats()
    run_batches(data, summing, BatchPlan(10**6, 32, sort=False), 0, CPU, stats=unsorted)
    run_batches(data, summing, BatchPlan(10**6, 32, sort=True), 0, CPU, stats=ordered)
    assert unsorted.real_tokens == ordered.real_tokens == sum(len(r) for r in data)
    assert ordered.padded_tokens < 0.75 * unsorted.padded_tokens


def test_cuda_budget_comes_from_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    config = type("C", (), {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12})()
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 * 2**30, 80 * 2**30))
    budget = cuda_token_budget(config, torch.device("cuda"), 512, dtype_bytes=2)
    assert budget == int(8 * 2**30 * 0.7 / bytes_per_token(config, 512, 2))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * 2**30, 80 * 2**30))
    assert cuda_token_budget(config, torch.device("cuda"), 512, 2) == pytest.approx(budget / 2, rel=1e-3)
    assert bytes_per_token(config, 1024, 2) > bytes_per_token(config, 512, 2)


def test_autocast_is_bf16_on_cuda_and_off_on_cpu() -> None:
    assert resolve_autocast("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_autocast("float16", torch.device("cuda")) == torch.float16
    assert resolve_autocast("float32", torch.device("cuda")) is None
    assert resolve_autocast("auto", CPU) is None


def test_autocast_casts_the_weights_once_per_run_not_per_batch() -> None:
    """Under bf16 autocast every batch casts its activations, but the weights' casts are kept for the run
    (under inference_mode torch re-casts every weight on every call)."""
    torch.manual_seed(0)
    embed, linear = torch.nn.Embedding(100, 16), torch.nn.Linear(16, 16)

    def forward(input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = linear(embed(input_ids))
        assert out.dtype == torch.bfloat16
        return out.sum(1)

    plan = BatchPlan(token_budget=64, max_rows=4, autocast=torch.bfloat16)
    stats = RunStats()
    with torch.profiler.profile(record_shapes=True) as prof:
        run_batches(rows(40), forward, plan, pad_id=0, device=CPU, stats=stats)
    casts = [e for e in prof.events() if e.name == "aten::_to_copy" and e.input_shapes]
    assert stats.batches >= 10
    assert len(casts) > stats.batches  # each batch's activations are cast
    assert sum(e.input_shapes[0] == [16, 16] for e in casts) == 1  # the weight: once


def test_crossfit_engine_fails_clearly_without_a_gpu() -> None:
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        check_engine(InferenceConfig(engine="crossfit"))
    with pytest.raises(ConfigError, match="choose native or crossfit"):
        check_engine(InferenceConfig(engine="turbo"))


def test_int8_quantisation_mostly_agrees_with_float32() -> None:
    labels = [(label, label.replace("_", " ")) for label, _ in DOCS]
    texts = [text for _, text in DOCS] * 2
    fp32 = ZeroShotClassifier("q", model=MINILM, labels=labels, pred_column="p", score_column="s")
    int8 = ZeroShotClassifier(
        "q",
        model=MINILM,
        labels=labels,
        pred_column="p",
        score_column="s",
        inference=InferenceConfig(quantize="int8"),
    )
    a, b = fp32.predict(texts), int8.predict(texts)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in int8._runtime()[0].modules())
    assert np.mean(a["p"] == b["p"]) >= 0.9
    assert np.abs(a["s"] - b["s"]).max() < 0.2


def test_int8_on_cuda_is_refused() -> None:
    from curator.inference.engine import quantize_int8

    with pytest.raises(ValueError, match="CPU option"):
        quantize_int8(torch.nn.Linear(2, 2), torch.device("cuda"))
