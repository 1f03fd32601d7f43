"""Benchmark: the project's engine vs a hand-written loop, on the same data, model and threads.

Measures in one run, on a web-like corpus (log-normal word counts, median ~150 words, ~10% of
documents at the 512-token cap) and a BERT-shaped classifier built on the real all-MiniLM-L6-v2
weights (random 26-way head):

- naive: input order, fixed batches of 32 (also 1 and 128 for context), padding="longest",
  truncation at 512 — what people write by hand;
- engine: this project's sorted, token-budget batcher in-process (also in bfloat16, with int8, with
  prefetch, with Hugging Face's modules instead of the fast BERT forward, with PyTorch's attention
  instead of the compiled kernel in float32 and bfloat16, and at other token budgets with --budgets);
- end to end: `python run.py` (read → classify → write) on the same corpus as JSONL files, with
  `inference.dtype=float32` and with the default `auto` (bf16 where the CPU has native bf16), `auto`
  with PyTorch's attention (`inference.native_attention=false`), with a worker process (the default)
  and with a thread worker (no worker start-up: imports, model load);
- DeBERTa (`--deberta-docs`, 0 to skip): a deberta-v3-base-shaped domain classifier (12 layers,
  hidden 768, 12 heads, relative attention with 256 position buckets; random weights, the vocabulary
  cut to MiniLM's tokenizer, which changes no compute) on the first documents of the same corpus:
  Hugging Face's modules and the lean DeBERTa forward, float32, bfloat16 and int8; and the prompt
  task/complexity shape (mean pooling, eight heads) in float32 and bfloat16; the lean float32 row with
  the compiled attention (the default) and with PyTorch's ops (`inference.native_attention=false`).

For each: docs/s, real tokens/s, padding efficiency (real ÷ computed tokens) and the fraction of the
compute bound (real FLOPs/s ÷ the best of 5 2048×2048 matmuls at the same thread count, measured next
to each run): "of fp32" against the float32 matmul rate (DESIGN.md's bound), "own" against the rate
of the dtype the run computes in (bf16 matmuls on a CPU with AMX run several times the fp32 rate).
With --rounds N the rows run in turn N times and each reports its fastest round, against the rates
measured next to that round: on a shared machine whose speed moves for seconds at a time, one round
can land a row in a slow spell (the same engine row twice in one run scored 72% and 94%).
The ceiling per model: a layer's four float32 Linear layers timed alone at the engine's CPU batch
size, and the fraction of the bound the engine would reach if nothing else took time.
Label agreement of bf16 and int8 with float32 per family: labels (MiniLM 26-way, DeBERTa domain,
prompt task type) and the integer score of a regression head (MiniLM with one output).

    python scripts/bench_inference.py [--docs 2000] [--deberta-docs 200] [--threads N]
                                      [--budgets 1024,16384] [--e2e-only] [--only ROWS] [--rounds N]
                                      [--json F]
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
from safetensors.torch import save_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DebertaV2Config,
    DebertaV2Model,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curator.classifiers.mixin import MixinClassifier  # noqa: E402
from curator.classifiers.prompt_task import PromptTaskComplexityClassifier  # noqa: E402
from curator.classifiers.sequence import RegressionClassifier, SequenceClassifier  # noqa: E402
from curator.cluster.workers import reuse_freed_memory  # noqa: E402
from curator.config import InferenceConfig  # noqa: E402
from curator.inference.memory import cpu_token_budget  # noqa: E402
from curator.inference.numerics import cpu_numerics  # noqa: E402
from curator.models.hub import resolve_model  # noqa: E402
from curator.models.native import deberta_attention  # noqa: E402
from curator.models.weights import load_strict, read_safetensors  # noqa: E402
from curator.resources import available_cores  # noqa: E402
from tests.fixtures_deberta import PROMPT_HEADS, mixin_config, prompt_task_config  # noqa: E402

MAX_LENGTH = 512
ATTENTION_WIDTHS = (32, 64, 128, 256, 512)  # padded widths the attention rate is timed at
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def matmul_rate(threads: int, dtype: torch.dtype = torch.float32) -> float:
    """Machine rate in FLOP/s: best of 5 2048x2048 matmuls in `dtype` at `threads`."""
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048).to(dtype), torch.randn(2048, 2048).to(dtype)
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


def make_model(folder: Path, minilm: Path, labels: int = 26) -> Path:
    """A BertForSequenceClassification on the real MiniLM encoder weights with a random head."""
    config = BertConfig.from_pretrained(minilm)
    config.num_labels = labels
    config.id2label = {i: f"label_{i}" for i in range(labels)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    load_strict(model.bert, read_safetensors(minilm))
    # A random head at the usual init (std 0.02) gives near-uniform probabilities, where any rounding
    # flips the argmax; std 1 separates the classes so label agreement (int8 vs fp32) means something.
    torch.nn.init.normal_(model.classifier.weight, std=1.0 if labels > 1 else 0.1)
    if labels == 1:  # a FineWeb-Edu-like score around 0..5
        torch.nn.init.constant_(model.classifier.bias, 2.5)
    model.save_pretrained(folder, safe_serialization=True)
    copy_tokenizer(minilm, folder)
    return folder


def copy_tokenizer(minilm: Path, folder: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, folder / name)


def deberta_base_config(vocab_size: int) -> DebertaV2Config:
    """deberta-v3-base's shipped config with the vocabulary of the tokenizer used here."""
    data = json.loads((ROOT / "curator" / "data" / "backbones" / "deberta-v3-base.json").read_text())
    data.pop("model_type")
    return DebertaV2Config(**{**data, "vocab_size": vocab_size})


def make_deberta(work: Path, minilm: Path) -> dict[str, Path]:
    """A deberta-v3-base-shaped backbone (random weights) under a domain head and under the prompt
    task/complexity heads, in the published mixin format, with MiniLM's tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    config = deberta_base_config(len(tokenizer))
    backbone_dir = work / "deberta-backbone"
    backbone_dir.mkdir(parents=True)
    (backbone_dir / "config.json").write_text(config.to_json_string())
    torch.manual_seed(0)
    backbone = {k: v.contiguous() for k, v in DebertaV2Model(config).state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    hidden = config.hidden_size
    folders = {"domain": work / "deberta-domain", "prompt": work / "deberta-prompt"}
    for folder in folders.values():
        folder.mkdir()
        copy_tokenizer(minilm, folder)
    labels = [f"label_{i}" for i in range(26)]
    (folders["domain"] / "config.json").write_text(json.dumps(mixin_config(str(backbone_dir), labels)))
    head = {"fc.weight": torch.randn(26, hidden, generator=generator), "fc.bias": torch.zeros(26)}
    save_file(
        {**{f"model.{k}": v for k, v in backbone.items()}, **head}, folders["domain"] / "model.safetensors"
    )
    (folders["prompt"] / "config.json").write_text(json.dumps(prompt_task_config(str(backbone_dir))))
    heads = {}
    for i, size in enumerate(PROMPT_HEADS.values()):
        heads[f"head_{i}.fc.weight"] = torch.randn(size, hidden, generator=generator)
        heads[f"head_{i}.fc.bias"] = torch.zeros(size)
    save_file(
        {**{f"backbone.{k}": v for k, v in backbone.items()}, **heads},
        folders["prompt"] / "model.safetensors",
    )
    return folders


def linear_rate(config, threads: int, tokens: int) -> float:
    """FLOP/s of a layer's four float32 Linear layers (fused Q/K/V, output, up, down) at `tokens` rows,
    the engine's CPU batch: the rate its matmuls can reach, below the square-matmul rate."""
    torch.set_num_threads(threads)
    h, i = config.hidden_size, config.intermediate_size
    shapes = [(3 * h, h), (h, h), (i, h), (h, i)]
    weights = [(torch.randn(o, k), torch.randn(o), torch.randn(tokens, k)) for o, k in shapes]
    layer = lambda: [torch.nn.functional.linear(x, w, b) for w, b, x in weights]  # noqa: E731
    layer()
    best = min(_timed(layer) for _ in range(5))
    return sum(2 * tokens * o * k for o, k in shapes) / best


def attention_rates(config, threads: int, budget: int) -> dict[int, float]:
    """FLOP/s of an engine batch's attention products (Q·Kᵀ, then weights·V) as `torch.bmm` runs them,
    per padded width: head-size-deep products reach well below the square-matmul rate."""
    torch.set_num_threads(threads)
    heads = config.num_attention_heads
    size = config.hidden_size // heads
    rates = {}
    for width in ATTENTION_WIDTHS:
        batch = max(1, budget // width) * heads
        q, k = torch.randn(batch, width, size), torch.randn(batch, size, width)
        weights, v = torch.randn(batch, width, width), torch.randn(batch, width, size)
        products = lambda q=q, k=k, weights=weights, v=v: (torch.bmm(q, k), torch.bmm(weights, v))  # noqa: E731
        products()
        rates[width] = 4 * batch * width * width * size / min(_timed(products) for _ in range(5))
    return rates


def ceiling(
    config, lengths: np.ndarray, head: int, pooler: bool, rate: float, threads: int, position_terms: int = 0
) -> str:
    """The fractions of the float32 bound the engine could reach if everything but its Linear layers
    (attention, position terms, norms, activations) took no time: those run at `linear_rate`; and if
    only its matmuls took time: the Linear layers, plus the attention products at `attention_rates`
    for each document's width (Q·Kᵀ and weights·V, and `position_terms` more products of the same size:
    DeBERTa's content→position and position→content scores, which the bound does not count)."""
    linear = float(lengths.sum()) * 2 * linear_weights(config, head, pooler)
    total = float(flops_per_doc(lengths, config, head, pooler).sum())
    budget = cpu_token_budget(config, MAX_LENGTH)
    achieved = linear_rate(config, threads, budget)
    rates = attention_rates(config, threads, budget)
    products = (2 + position_terms) * 2 * config.num_hidden_layers * config.hidden_size
    widths = [next(w for w in ATTENTION_WIDTHS if w >= n) for n in lengths]
    attention = sum(products * float(n) ** 2 / rates[w] for n, w in zip(lengths, widths))
    return (
        f"float32 Linear layers at the engine's {budget}-token batches: {achieved / 1e9:.0f} GFLOP/s, "
        f"{achieved / rate:.0%} of the square-matmul rate; with all else free the engine would reach "
        f"{total / (linear / achieved) / rate:.0%} of the float32 bound; with the attention products too "
        f"(at {'/'.join(f'{rates[w] / 1e9:.0f}' for w in ATTENTION_WIDTHS)} GFLOP/s for widths "
        f"{'/'.join(map(str, ATTENTION_WIDTHS))}"
        + (f", {position_terms} position-term products" if position_terms else "")
        + f") and nothing else, {total / (linear / achieved + attention) / rate:.0%}"
    )


def flops_per_doc(lengths: np.ndarray, config, head: int, pooler: bool = True) -> np.ndarray:
    """2 x non-embedding linear weights per token + 4 x layers x hidden x length per token (attention)."""
    attention = 4 * config.num_hidden_layers * config.hidden_size * lengths.astype(np.float64) ** 2
    return lengths * 2 * linear_weights(config, head, pooler) + attention


def linear_weights(config, head: int, pooler: bool = True) -> int:
    """Non-embedding Linear weights a token passes through (layers, pooler, head)."""
    h, i, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    return layers * (4 * h * h + 2 * h * i) + (h * h if pooler else 0) + h * head


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
            labels += [f"label_{i}" for i in model(**enc).logits.argmax(-1).tolist()]
    return {"seconds": time.perf_counter() - start, "computed_tokens": computed, "labels": labels}


def engine(texts: list[str], folder: Path, family: str = "sequence", **inference) -> dict:
    """This project's engine in-process (model loaded before the clock starts, like the naive loop)."""
    common = dict(pred_column="pred", max_length=MAX_LENGTH, inference=InferenceConfig(**inference))
    if family == "regression":
        clf = RegressionClassifier("bench", model=str(folder), int_column="int_score", **common)
    elif family == "prompt":
        clf = PromptTaskComplexityClassifier("bench", model=str(folder), **common)
    else:
        kind = MixinClassifier if family == "mixin" else SequenceClassifier
        clf = kind("bench", model=str(folder), batch_size=256, keep_prob=True, prob_column="prob", **common)
    clf._runtime()
    start = time.perf_counter()
    out = clf.predict(texts)
    seconds = time.perf_counter() - start
    labels = out["int_score"] if family == "regression" else out["pred"]
    return {
        "seconds": seconds,
        "computed_tokens": clf.last_stats.padded_tokens,
        "labels": [str(label) for label in labels],
        "probs": np.stack(out["prob"]) if "prob" in out else None,
        "dtype": clf.numerics_used()["dtype"],
    }


def end_to_end(texts: list[str], folder: Path, threads: int, work: Path, *overrides: str) -> dict:
    """`python run.py` on the corpus written as 4 JSONL files; pipeline seconds from summary.json."""
    work = work / "-".join(["e2e", *(o.replace("=", "_") for o in overrides)])
    shutil.rmtree(work, ignore_errors=True)  # an earlier round's run (--rounds): a fresh output folder
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
        "dtype": engine.get("dtype", "float32"),
        "seconds": summary["seconds"],
        "wall_seconds": wall,
        "computed_tokens": engine["padded_tokens"],
        "worker_classify_seconds": engine["seconds"],
    }


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SHOWN_FLAGS = {"amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni"}


def agreement(runs: dict[str, dict], a: str, b: str) -> float | None:
    """Fraction of documents whose label (or integer score) is the same in runs `a` and `b`."""
    if a not in runs or b not in runs:
        return None
    return float(np.mean(np.array(runs[a]["labels"]) == np.array(runs[b]["labels"])))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--deberta-docs", type=int, default=200, help="0: skip the DeBERTa rows")
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-context", action="store_true", help="skip naive batch 1 and 128")
    parser.add_argument("--skip-e2e", action="store_true", help="skip the run.py rows")
    parser.add_argument("--e2e-only", action="store_true", help="only the run.py rows (larger corpora)")
    parser.add_argument("--budgets", default="", help="also run the engine at these token budgets (a,b,...)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the rows in turn this many times; each reports its fastest"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--only", default="", help="run only the rows whose names start with one of these (a,b,...)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    reuse_freed_memory()  # the in-process rows run with the allocator settings every worker process gets

    minilm = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = make_model(work / "model", minilm)
        regression = make_model(work / "regression", minilm, labels=1)
        config = BertConfig.from_pretrained(folder)
        texts = make_corpus(args.docs, args.seed)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        tokenize_seconds = _timed(lambda: tokenizer(texts, truncation=True, max_length=MAX_LENGTH))
        lengths = np.array(
            [len(ids) for ids in tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]]
        )
        deberta_texts = texts[: args.deberta_docs]
        corpora = {"minilm": (texts, lengths), "deberta": (deberta_texts, lengths[: args.deberta_docs])}
        flops = {
            "minilm": float(flops_per_doc(lengths, config, head=26).sum()),
            "deberta": float(flops_per_doc(corpora["deberta"][1], deberta_base_config(1), 26, False).sum()),
            "prompt": float(
                flops_per_doc(
                    corpora["deberta"][1], deberta_base_config(1), sum(PROMPT_HEADS.values()), False
                ).sum()
            ),
        }
        numerics = cpu_numerics()
        print(
            f"corpus: {len(texts)} docs, median {int(np.median(lengths))} tokens, "
            f"{np.mean(lengths >= MAX_LENGTH):.1%} at the {MAX_LENGTH}-token cap, "
            f"{int(lengths.sum())} real tokens"
        )
        print(
            f"CPU: native bf16 {numerics.bf16}, native int8 {numerics.int8} "
            f"(flags {' '.join(sorted(numerics.flags & SHOWN_FLAGS))}); "
            f"int8 engine {numerics.quantized_engine()}"
        )
        for dtype in DTYPES:
            print(f"machine: {matmul_rate(args.threads, DTYPES[dtype]) / 1e9:.1f} GFLOP/s {dtype} matmul")
        print(f"MiniLM: {flops['minilm'] / len(texts) / 1e9:.2f} GFLOP per document on average")
        fp32_rate = matmul_rate(args.threads)
        print("MiniLM " + ceiling(config, lengths, 26, True, fp32_rate, args.threads))
        if args.deberta_docs:
            shape, cut = deberta_base_config(1), lengths[: args.deberta_docs]
            print("DeBERTa " + ceiling(shape, cut, 26, False, fp32_rate, args.threads, position_terms=2))
        print(f"tokenisation alone: {tokenize_seconds:.2f} s for the corpus")

        # (name, corpus, FLOPs key, measure)
        plan = [
            ("naive b32", "minilm", lambda: naive(texts, folder, 32)),
            ("naive b1", "minilm", lambda: naive(texts, folder, 1)),
            ("naive b128", "minilm", lambda: naive(texts, folder, 128)),
            ("engine", "minilm", lambda: engine(texts, folder, dtype="float32")),
            ("engine bf16", "minilm", lambda: engine(texts, folder, dtype="bfloat16")),
            (
                "engine fp32, PyTorch attention",
                "minilm",
                lambda: engine(texts, folder, dtype="float32", native_attention=False),
            ),
            (
                "engine bf16, PyTorch attention",
                "minilm",
                lambda: engine(texts, folder, dtype="bfloat16", native_attention=False),
            ),
            ("engine prefetch", "minilm", lambda: engine(texts, folder, dtype="float32", prefetch=True)),
            ("engine int8", "minilm", lambda: engine(texts, folder, quantize="int8")),
            (
                "engine, HF modules",
                "minilm",
                lambda: engine(texts, folder, dtype="float32", fast_encoder=False),
            ),
            ("regression fp32", "minilm", lambda: engine(texts, regression, "regression", dtype="float32")),
            ("regression bf16", "minilm", lambda: engine(texts, regression, "regression", dtype="bfloat16")),
            ("regression int8", "minilm", lambda: engine(texts, regression, "regression", quantize="int8")),
        ]
        if not args.skip_e2e:
            plan += [
                ("e2e fp32 (run.py)", "minilm", lambda: e2e("inference.dtype=float32")),
                ("e2e auto (run.py)", "minilm", lambda: e2e()),
                ("e2e auto, PyTorch attention", "minilm", lambda: e2e("inference.native_attention=false")),
                (
                    "e2e fp32, thread worker",
                    "minilm",
                    lambda: e2e("inference.dtype=float32", "cluster.processes=false"),
                ),
                ("e2e auto, thread worker", "minilm", lambda: e2e("cluster.processes=false")),
            ]
        if args.deberta_docs:
            deberta = make_deberta(work, minilm)
            native_attention = deberta_attention()  # compiled (once per machine) before any clock starts
            print(f"compiled DeBERTa kernels: {'yes' if native_attention else 'no (PyTorch ops)'}")
            dom, prompt = deberta["domain"], deberta["prompt"]
            plan += [
                (
                    "deberta HF fp32",
                    "deberta",
                    lambda: engine(deberta_texts, dom, "mixin", dtype="float32", fast_encoder=False),
                ),
                (
                    "deberta HF bf16",
                    "deberta",
                    lambda: engine(deberta_texts, dom, "mixin", dtype="bfloat16", fast_encoder=False),
                ),
                (
                    "deberta lean fp32",
                    "deberta",
                    lambda: engine(deberta_texts, dom, "mixin", dtype="float32"),
                ),
                (
                    "deberta lean fp32, PyTorch ops",
                    "deberta",
                    lambda: engine(deberta_texts, dom, "mixin", dtype="float32", native_attention=False),
                ),
                (
                    "deberta lean bf16",
                    "deberta",
                    lambda: engine(deberta_texts, dom, "mixin", dtype="bfloat16"),
                ),
                (
                    "deberta lean int8",
                    "deberta",
                    lambda: engine(deberta_texts, dom, "mixin", quantize="int8"),
                ),
                (
                    "prompt lean fp32",
                    "prompt",
                    lambda: engine(deberta_texts, prompt, "prompt", dtype="float32"),
                ),
                (
                    "prompt lean bf16",
                    "prompt",
                    lambda: engine(deberta_texts, prompt, "prompt", dtype="bfloat16"),
                ),
            ]

        def e2e(*overrides: str) -> dict:
            return end_to_end(texts, folder, args.threads, work, *overrides)

        drop = {"naive b1", "naive b128"} if args.skip_context else set()
        for budget in filter(None, args.budgets.split(",")):
            plan.append(
                (
                    f"engine budget {int(budget)}",
                    "minilm",
                    lambda b=int(budget): engine(texts, folder, token_budget=b),
                )
            )
        only = tuple(filter(None, args.only.split(",")))
        plan = [
            (name, corpus, measure)
            for name, corpus, measure in plan
            if name not in drop
            and (name.startswith("e2e") or not args.e2e_only)
            and (not only or name.startswith(only))
        ]
        runs: dict[str, dict] = {}
        for _ in range(max(1, args.rounds)):  # rows in turn, round after round: a slow spell hits all alike
            for name, corpus, measure in plan:
                # The machine's speed drifts: each run is judged against the matmul rates measured next to it
                before = {d: matmul_rate(args.threads, t) for d, t in DTYPES.items()}
                run = measure()
                after = {d: matmul_rate(args.threads, t) for d, t in DTYPES.items()}
                run["rates"] = {d: max(before[d], after[d]) for d in DTYPES}
                run["corpus"] = corpus
                torch.set_num_threads(args.threads)
                if name not in runs or run["seconds"] < runs[name]["seconds"]:
                    runs[name] = run  # the fastest round, with the rates measured next to it

    base = len(texts) / runs["naive b32"]["seconds"] if "naive b32" in runs else None
    header = f"{'':<26}{'dtype':>18}{'docs/s':>9}{'tokens/s':>10}{'pad eff':>9}"
    header += f"{'of fp32':>9}{'own':>7}{'vs ref':>9}"
    print("\n" + header)
    results = {}
    for name, run in runs.items():
        docs, doc_lengths = corpora["deberta" if run["corpus"] == "prompt" else run["corpus"]]
        key = run["corpus"]
        docs_s = len(docs) / run["seconds"]
        computed = run.get("computed_tokens")
        dtype = run.get("dtype", "float32")
        own = run["rates"]["bfloat16" if "bfloat16" in dtype else "float32"]
        reference = {"minilm": base, "deberta": None, "prompt": None}[key]
        if key != "minilm" and "deberta HF fp32" in runs:
            reference = len(docs) / runs["deberta HF fp32"]["seconds"]
        row = {
            "dtype": dtype,
            "docs_per_s": docs_s,
            "real_tokens_per_s": float(doc_lengths.sum()) / run["seconds"],
            "padding_efficiency": float(doc_lengths.sum()) / computed if computed else None,
            "fraction_of_fp32_bound": flops[key] / run["seconds"] / run["rates"]["float32"],
            "fraction_of_own_bound": flops[key] / run["seconds"] / own,
            "vs_reference": docs_s / reference if reference else None,
        }
        results[name] = row
        eff = f"{row['padding_efficiency']:.0%}" if computed else "–"
        versus = f"{row['vs_reference']:.2f}x" if reference else "–"
        print(
            f"{name:<26}{dtype:>18}{docs_s:>9.1f}{row['real_tokens_per_s']:>10.0f}{eff:>9}"
            f"{row['fraction_of_fp32_bound']:>9.0%}{row['fraction_of_own_bound']:>7.0%}{versus:>9}"
        )
    print("(vs ref: MiniLM rows against naive b32, DeBERTa rows against Hugging Face's modules in float32)")
    agreements = {
        "minilm engine vs naive b32": agreement(runs, "engine", "naive b32"),
        "minilm bf16 vs fp32": agreement(runs, "engine bf16", "engine"),
        "minilm int8 vs fp32": agreement(runs, "engine int8", "engine"),
        "regression int score bf16 vs fp32": agreement(runs, "regression bf16", "regression fp32"),
        "regression int score int8 vs fp32": agreement(runs, "regression int8", "regression fp32"),
        "deberta lean vs HF fp32": agreement(runs, "deberta lean fp32", "deberta HF fp32"),
        "deberta bf16 vs fp32": agreement(runs, "deberta lean bf16", "deberta lean fp32"),
        "deberta int8 vs fp32": agreement(runs, "deberta lean int8", "deberta lean fp32"),
        "prompt task type bf16 vs fp32": agreement(runs, "prompt lean bf16", "prompt lean fp32"),
    }
    print("\nlabel agreement:")
    for what, value in agreements.items():
        if value is not None:
            print(f"  {what:<36}{value:.2%}")
    for a, b in (
        ("engine bf16", "engine"),
        ("deberta lean bf16", "deberta lean fp32"),
        ("deberta lean fp32", "deberta HF fp32"),
    ):
        if a in runs and b in runs and runs[a]["probs"] is not None:
            print(f"  max |Δp| {a} vs {b}: {float(np.abs(runs[a]['probs'] - runs[b]['probs']).max()):.4f}")
    ratios = {
        "minilm e2e auto / e2e fp32": ("e2e fp32 (run.py)", "e2e auto (run.py)"),
        "minilm e2e, thread worker, auto / fp32": ("e2e fp32, thread worker", "e2e auto, thread worker"),
        "minilm engine bf16 / fp32": ("engine", "engine bf16"),
        "deberta lean fp32 / HF fp32": ("deberta HF fp32", "deberta lean fp32"),
        "deberta lean bf16 / HF fp32": ("deberta HF fp32", "deberta lean bf16"),
        "deberta lean bf16 / lean fp32": ("deberta lean fp32", "deberta lean bf16"),
        "deberta lean fp32, compiled / PyTorch ops": (
            "deberta lean fp32, PyTorch ops",
            "deberta lean fp32",
        ),
    }
    print("\nspeed-ups (same run):")
    for what, (slow, fast) in ratios.items():
        if slow in runs and fast in runs:
            print(f"  {what:<48}{runs[slow]['seconds'] / runs[fast]['seconds']:.2f}x")
    e2e_names = [name for name in runs if name.startswith("e2e")]
    if e2e_names:
        print("\nend to end (the rest of pipeline.run: worker start-up, reading, writing):")
    for name in e2e_names:
        e2e_run = runs[name]
        print(
            f"  {name}: {e2e_run['wall_seconds']:.1f} s wall for run.py, "
            f"{e2e_run['seconds']:.1f} s in pipeline.run, "
            f"{e2e_run['worker_classify_seconds']:.1f} s classifying on the worker"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"docs": len(texts), "threads": args.threads, "runs": results, "agreement": agreements},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
