"""Benchmark: the project's engine vs a hand-written loop, on the same data, model and threads.

Measures in one run, on a web-like corpus (log-normal word counts, median ~150 words, ~10% of
documents at the 512-token cap) and a BERT-shaped classifier built on the real all-MiniLM-L6-v2
weights (random 26-way head):

- naive: input order, fixed batches of 32 (also 1 and 128 for context), padding="longest",
  truncation at 512 — what people write by hand;
- engine: this project's sorted, token-budget batcher in-process (also with int8, with prefetch, with
  Hugging Face's modules instead of the fast BERT forward, and at other token budgets with --budgets);
- end to end: `python run.py` (read → classify → write) on the same corpus as JSONL files.

For each: docs/s, real tokens/s, padding efficiency (real ÷ computed tokens) and the fraction of the
compute bound (real FLOPs/s ÷ the best of 5 fp32 2048×2048 matmuls at the same thread count).

    python scripts/bench_inference.py [--docs 2000] [--threads N] [--budgets 1024,16384] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curator.classifiers.sequence import SequenceClassifier  # noqa: E402
from curator.config import InferenceConfig  # noqa: E402
from curator.models.hub import resolve_model  # noqa: E402
from curator.models.weights import load_strict, read_safetensors  # noqa: E402
from curator.resources import available_cores  # noqa: E402

MAX_LENGTH = 512
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def matmul_rate(threads: int) -> float:
    """Machine rate in FLOP/s: best of 5 fp32 2048x2048 matmuls at `threads`."""
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(5))
    return 2 * 2048**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sample_words() -> list[str]:
    """Every word of the bundled sample documents, in file order: the vocabulary of generated corpora."""
    import gzip

    words: list[str] = []
    for path in sorted((ROOT / "curator" / "data" / "sample").glob("*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                words += json.loads(line)["text"].split()
    return words


def make_corpus(n: int, seed: int) -> list[str]:
    """Web-like documents: words from the bundled sample, log-normal lengths (median 150 words)."""
    words = sample_words()
    rng = np.random.default_rng(seed)
    counts = np.maximum(1, rng.lognormal(mean=np.log(150), sigma=0.75, size=n)).astype(int)
    return [" ".join(rng.choice(words, size=c)) for c in counts]


def make_model(folder: Path, minilm: Path) -> Path:
    """A BertForSequenceClassification on the real MiniLM encoder weights with a random 26-way head."""
    config = BertConfig.from_pretrained(minilm)
    config.num_labels = 26
    config.id2label = {i: f"label_{i}" for i in range(26)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    load_strict(model.bert, read_safetensors(minilm))
    # A random head at the usual init (std 0.02) gives near-uniform probabilities, where any rounding
    # flips the argmax; std 1 separates the classes so label agreement (int8 vs fp32) means something.
    torch.nn.init.normal_(model.classifier.weight, std=1.0)
    model.save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, folder / name)
    return folder


def flops_per_doc(lengths: np.ndarray, config: BertConfig) -> np.ndarray:
    """2 x non-embedding linear weights per token + 4 x layers x hidden x length per token (attention)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    linear = layers * (4 * h * h + 2 * h * i) + h * h + h * config.num_labels  # + pooler + head
    return lengths * 2 * linear + 4 * layers * h * lengths.astype(np.float64) ** 2


def naive(texts: list[str], folder: Path, batch: int) -> dict:
    """The hand-written loop: input order, fixed batch size, padding="longest", truncation at 512."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    computed = 0
    start = time.perf_counter()
    labels = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tokenizer(
                texts[i : i + batch],
                padding="longest",
                truncation=True,
                max_length=MAX_LENGTH,
                return_tensors="pt",
            )
            computed += enc["input_ids"].numel()
            labels += model(**enc).logits.argmax(-1).tolist()
    return {"seconds": time.perf_counter() - start, "computed_tokens": computed, "labels": labels}


def engine(texts: list[str], folder: Path, **inference) -> dict:
    """This project's engine in-process (model loaded before the clock starts, like the naive loop)."""
    clf = SequenceClassifier(
        "bench",
        model=str(folder),
        pred_column="pred",
        max_length=MAX_LENGTH,
        batch_size=256,
        keep_prob=True,
        prob_column="prob",
        inference=InferenceConfig(**inference),
    )
    clf._runtime()
    start = time.perf_counter()
    out = clf.predict(texts)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "computed_tokens": clf.last_stats.padded_tokens,
        "labels": [int(p.split("_")[1]) for p in out["pred"]],
        "probs": np.stack(out["prob"]),
    }


def end_to_end(texts: list[str], folder: Path, threads: int, work: Path, *overrides: str) -> dict:
    """`python run.py` on the corpus written as 4 JSONL files; pipeline seconds from summary.json."""
    work = work / "-".join(["e2e", *(o.replace("=", "_") for o in overrides)])
    data = work / "corpus"
    data.mkdir(parents=True)
    for part, chunk in enumerate(np.array_split(np.arange(len(texts)), 4)):
        with open(data / f"part{part}.jsonl", "w", encoding="utf-8") as handle:
            for i in chunk:
                handle.write(json.dumps({"id": int(i), "text": texts[i]}) + "\n")
    conf = work / "conf" / "classifier"
    conf.mkdir(parents=True)
    (conf / "bench.yaml").write_text(
        f"# @package classifier.bench\nfamily: sequence_classification\nmodel: {folder}\n"
        f"pred_column: pred\nscore_column: score\nmax_length: {MAX_LENGTH}\nbatch_size: 256\n"
    )
    command = [
        sys.executable,
        str(ROOT / "run.py"),
        "--config-dir",
        str(work / "conf"),
        "classifier=bench",
        "dataset=jsonl",
        f"dataset.path={data}",
        f"output.path={work / 'out'}",
        f"hydra.run.dir={work / 'run'}",
        "cluster.n_workers=1",
        f"cluster.torch_threads={threads}",
        "quiet=true",
        *overrides,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=work, capture_output=True)
    wall = time.perf_counter() - start
    summary = json.loads((work / "run" / "summary.json").read_text())
    engine = summary["classifiers"]["bench"]
    return {
        "seconds": summary["seconds"],
        "wall_seconds": wall,
        "computed_tokens": engine["padded_tokens"],
        "worker_classify_seconds": engine["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-context", action="store_true", help="skip naive batch 1 and 128")
    parser.add_argument("--budgets", default="", help="also run the engine at these token budgets (a,b,...)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"

    minilm = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = make_model(work / "model", minilm)
        config = BertConfig.from_pretrained(folder)
        texts = make_corpus(args.docs, args.seed)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        tokenize_seconds = _timed(lambda: tokenizer(texts, truncation=True, max_length=MAX_LENGTH))
        lengths = np.array(
            [len(ids) for ids in tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]]
        )
        real_tokens = int(lengths.sum())
        flops = float(flops_per_doc(lengths, config).sum())
        rate = matmul_rate(args.threads)
        print(
            f"corpus: {len(texts)} docs, median {int(np.median(lengths))} tokens, "
            f"{np.mean(lengths >= MAX_LENGTH):.1%} at the {MAX_LENGTH}-token cap, {real_tokens} real tokens"
        )
        print(
            f"machine: {rate / 1e9:.1f} GFLOP/s fp32 matmul at {args.threads} thread(s); "
            f"model: {flops / len(texts) / 1e9:.2f} GFLOP per document on average"
        )
        print(f"tokenisation alone: {tokenize_seconds:.2f} s for the corpus")

        plan = {
            "naive b32": lambda: naive(texts, folder, 32),
            "naive b1": lambda: naive(texts, folder, 1),
            "naive b128": lambda: naive(texts, folder, 128),
            "engine": lambda: engine(texts, folder),
            "engine prefetch": lambda: engine(texts, folder, prefetch=True),
            "engine int8": lambda: engine(texts, folder, quantize="int8"),
            "engine, HF modules": lambda: engine(texts, folder, fast_encoder=False),
            "end to end (run.py)": lambda: end_to_end(texts, folder, args.threads, work),
            "end to end, thread worker": lambda: end_to_end(
                texts, folder, args.threads, work, "cluster.processes=false"
            ),
        }
        if args.skip_context:
            del plan["naive b1"], plan["naive b128"]
        for budget in filter(None, args.budgets.split(",")):
            plan[f"engine budget {int(budget)}"] = lambda b=int(budget): engine(texts, folder, token_budget=b)
        runs: dict[str, dict] = {}
        for name, measure in plan.items():
            # This machine's speed drifts; each run is judged against the matmul rate measured next to it.
            before = matmul_rate(args.threads)
            runs[name] = measure()
            runs[name]["rate"] = max(before, matmul_rate(args.threads))
            torch.set_num_threads(args.threads)

    base = len(texts) / runs["naive b32"]["seconds"]
    print(f"\n{'':<24}{'docs/s':>9}{'tokens/s':>10}{'pad eff':>9}{'of bound':>10}{'vs naive':>10}")
    results = {}
    for name, run in runs.items():
        docs_s = len(texts) / run["seconds"]
        computed = run.get("computed_tokens")
        row = {
            "docs_per_s": docs_s,
            "real_tokens_per_s": real_tokens / run["seconds"],
            "padding_efficiency": real_tokens / computed if computed else None,
            "fraction_of_bound": flops / run["seconds"] / run["rate"],
            "vs_naive_b32": docs_s / base,
        }
        results[name] = row
        eff = f"{row['padding_efficiency']:.0%}" if computed else "–"
        print(
            f"{name:<24}{docs_s:>9.1f}{row['real_tokens_per_s']:>10.0f}{eff:>9}"
            f"{row['fraction_of_bound']:>10.0%}{row['vs_naive_b32']:>9.2f}x"
        )
    fp32, int8 = runs["engine"], runs["engine int8"]
    agreement = float(np.mean(np.array(fp32["labels"]) == np.array(int8["labels"])))
    naive_agreement = float(np.mean(np.array(fp32["labels"]) == np.array(runs["naive b32"]["labels"])))
    e2e = runs["end to end (run.py)"]
    print(
        f"\nend to end: {e2e['wall_seconds']:.1f} s wall for run.py, {e2e['seconds']:.1f} s in pipeline.run, "
        f"{e2e['worker_classify_seconds']:.1f} s classifying on the worker "
        f"(in-process engine: {runs['engine']['seconds']:.1f} s)"
    )
    max_diff = float(np.abs(fp32["probs"] - int8["probs"]).max())
    print(
        f"\nlabels: engine vs naive b32 agree on {naive_agreement:.2%}; "
        f"int8 vs fp32 agree on {agreement:.2%} (max |Δp| {max_diff:.4f})"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "docs": len(texts),
                    "threads": args.threads,
                    "machine_flops": rate,
                    "runs": results,
                    "int8_agreement": agreement,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
