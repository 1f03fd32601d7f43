"""GPU benchmark (run on a CUDA machine): the engine on a deberta-v3-base-shaped classifier in bf16.

Reports docs/s, real tokens/s, padding efficiency, the fraction of the chip's bf16 peak, the token
budget the memory estimate chose, and the OOM back-off when the budget is set far too high.

    python scripts/bench_gpu.py [--docs 20000] [--peak-tflops 790]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, DebertaV2Config, DebertaV2ForSequenceClassification

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_inference import TOKENIZER_FILES, make_corpus  # noqa: E402

from curator.classifiers.sequence import SequenceClassifier  # noqa: E402
from curator.config import InferenceConfig  # noqa: E402
from curator.models.hub import resolve_model  # noqa: E402

MAX_LENGTH = 512


def make_deberta(folder: Path) -> DebertaV2Config:
    """deberta-v3-base's shape (MODELS.md) with random weights and MiniLM's tokenizer files."""
    config = DebertaV2Config(
        vocab_size=128100,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=512,
        relative_attention=True,
        position_buckets=256,
        pos_att_type=["p2c", "c2p"],
        share_att_key=True,
        norm_rel_ebd="layer_norm",
        position_biased_input=False,
        type_vocab_size=0,
        layer_norm_eps=1e-7,
        hidden_act="gelu",
        num_labels=26,
        id2label={i: f"label_{i}" for i in range(26)},
    )
    DebertaV2ForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    minilm = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, folder / name)
    return config


def flops(lengths: np.ndarray, config: DebertaV2Config) -> float:
    """Dense layers plus attention at each document's true length (DESIGN.md's definition)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    linear = layers * (4 * h * h + 2 * h * i)
    return float((lengths * 2 * linear + 4 * layers * h * lengths.astype(np.float64) ** 2).sum())


def run(texts: list[str], folder: Path, rows: int = 4096, **inference) -> tuple[float, SequenceClassifier]:
    clf = SequenceClassifier(
        "gpu",
        model=str(folder),
        pred_column="pred",
        max_length=MAX_LENGTH,
        batch_size=rows,
        inference=InferenceConfig(device="cuda", **inference),
    )
    clf.predict(texts[:64])  # load and warm up
    torch.cuda.synchronize()
    start = time.perf_counter()
    clf.predict(texts)
    torch.cuda.synchronize()
    return time.perf_counter() - start, clf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="the chip's dense bf16 peak")
    args = parser.parse_args()
    assert torch.cuda.is_available(), "this benchmark needs a CUDA GPU"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "deberta"
        config = make_deberta(folder)
        texts = make_corpus(args.docs, seed=0)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        lengths = np.array(
            [len(t) for t in tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]]
        )
        work = flops(lengths, config)
        results = {"gpu": torch.cuda.get_device_name(), "docs": len(texts), "real_tokens": int(lengths.sum())}
        for name, options in {"bf16 autocast": {}, "fp32": {"dtype": "float32"}}.items():
            torch.cuda.reset_peak_memory_stats()
            seconds, clf = run(texts, folder, **options)
            stats = clf.last_stats
            results[name] = {
                "docs_per_s": len(texts) / seconds,
                "real_tokens_per_s": int(lengths.sum()) / seconds,
                "padding_efficiency": stats.real_tokens / stats.padded_tokens,
                "fraction_of_bf16_peak": work / seconds / (args.peak_tflops * 1e12),
                "token_budget": stats.final_budget,
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
            }
            print(name, json.dumps(results[name], indent=1), flush=True)
        # A budget far beyond the device: the first batches must fail, split, and carry on.
        seconds, clf = run(texts[:8000], folder, rows=100_000, token_budget=50_000_000)
        results["oom_backoff"] = {
            "oom_retries": clf.last_stats.oom_retries,
            "final_budget": clf.last_stats.final_budget,
            "seconds": seconds,
        }
        print("oom back-off", results["oom_backoff"], flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
