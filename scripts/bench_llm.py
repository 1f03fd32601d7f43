"""Benchmark: AEGIS generation the reference way (NeMo Curator's) vs this project's fast path, one run.

Both classify the same documents with the same tokenizer, model, threads and token budget:

- reference: every batch runs `generate(max_new_tokens=100)` on whole prompts (the ~2,000-token
  category block included), as NeMo Curator does (`generation=reference`);
- fast: the category block's K/V computed once and reused, only each document's suffix is run, rows
  stop once their label is settled (`generation=fast`, the default).

The model is Llama-shaped (a few layers, random weights) and rigged to answer like the real one: a
verdict, then end-of-sequence (' safe</s>', or ' unsafe\\nO3</s>' for documents that contain the
trigger word), so the reference's cost is realistic. The prompt is the real AEGIS template; the
documents are web-like (log-normal word counts, median ~150 words). Prints docs/s, tokens computed per
document, the speed-up, label (and raw reply) agreement, and FLOPs per document saved for a 7B model.

    python scripts/bench_llm.py [--docs 64] [--repeats 2] [--threads 2] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curator.classifiers.aegis import AegisClassifier  # noqa: E402
from curator.classifiers.aegis_prompt import format_aegis  # noqa: E402
from curator.config import InferenceConfig  # noqa: E402
from curator.inference import cache  # noqa: E402
from curator.inference.generation import FastReply  # noqa: E402
from curator.inference.memory import kv_bytes_per_token, llm_weight_bytes  # noqa: E402
from scripts.bench_inference import sample_words  # noqa: E402
from tests.fixtures_llm import TRIGGER, save_lora_adapter, write_llama_tokenizer  # noqa: E402

RESERVED = 8  # hidden dims the rig owns: 0 end-of-prompt, 1-5 the reply chain, 7 the trigger
CHAIN = ["▁safe", "▁unsafe", "<0x0A>", "O", "3"]
FOLLOWING = {"▁safe": "</s>", "▁unsafe": "<0x0A>", "<0x0A>": "O", "O": "3", "3": "</s>"}
# Llama Guard 7B (Llama-2-7B): the model the FLOPs arithmetic is for.
LLAMA_GUARD_7B = dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32
)


def make_corpus(n: int, seed: int, trigger_rate: float) -> list[str]:
    """Web-like documents: words from the bundled sample, log-normal lengths (median 150 words)."""
    words = sample_words()
    rng = np.random.default_rng(seed)
    counts = np.maximum(1, rng.lognormal(mean=np.log(150), sigma=0.75, size=n)).astype(int)
    docs = []
    for count in counts:
        chosen = list(rng.choice(words, size=count))
        if rng.random() < trigger_rate:
            chosen[rng.integers(0, count)] = TRIGGER
        docs.append(" ".join(chosen))
    return docs


def build_model(folder: Path, corpus: list[str], args: argparse.Namespace) -> Path:
    """Tokenizer (learned on the prompt + documents), a rigged Llama-shaped model and a tiny LoRA adapter."""
    vocab = write_llama_tokenizer(folder, vocab_size=args.vocab, corpus=corpus)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,  # Llama Guard 7B has no grouped-query attention
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config)
    rig(model, AutoTokenizer.from_pretrained(folder))
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def rig(model: LlamaForCausalLM, tokenizer: Any, gain: float = 20000.0, magnitude: float = 100.0) -> None:
    """Random layers that never read or write the reserved dims, plus a rigged path through them.

    The reply follows the reserved dims: the prompt's last token → ' safe' unless layer 0's head 0
    (uniform attention: zero queries) carries the trigger word's signal, then ' unsafe'; each reply
    token → the next one, ending with '</s>'. The random part costs what a real model's layers cost.
    """
    ids = tokenizer.convert_tokens_to_ids
    end = tokenizer(format_aegis("x"))["input_ids"][-1]
    hidden = model.config.hidden_size
    head_dim = hidden // model.config.num_attention_heads
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                continue
            param.normal_(0.0, 1.0 if "embed_tokens" in name else 0.02)
            if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight")):
                param[:, :RESERVED] = 0  # layers read no reserved dim
            if name.endswith(("up_proj.weight", "lm_head.weight")):
                param[:, :RESERVED] = 0
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                param[:RESERVED, :] = 0  # and write none
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed[:, :RESERVED] = 0
        embed[end, 0] = 3.0
        head[ids("▁safe"), 0] = 10.0
        embed[ids(f"▁{TRIGGER}"), 7] = 1.0
        head[ids("▁unsafe"), 7] = 10.0
        for dim, token in enumerate(CHAIN, start=1):
            embed[ids(token), dim] = magnitude
            head[ids(FOLLOWING[token]), dim] = 10.0
        attention = model.model.layers[0].self_attn
        attention.q_proj.weight[:head_dim] = 0  # head 0 attends uniformly
        attention.v_proj.weight[:head_dim] = 0
        attention.v_proj.weight[0, 7] = gain  # its value: the trigger dim
        attention.o_proj.weight[:, :head_dim] = 0
        attention.o_proj.weight[7, 0] = 1.0  # written back into the trigger dim


class Counter:
    """Tokens the LLM computes: every forward's input ids (prefills and one-token decode steps)."""

    def __init__(self) -> None:
        self.tokens = self.calls = 0

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.tokens += int(ids.numel())
        self.calls += 1


def run(clf: AegisClassifier, docs: list[str]) -> dict[str, Any]:
    """Classify `docs` once (model already loaded): wall and CPU time, tokens the LLM computed."""
    model = clf._runtime()[0]
    counter = Counter()
    hook = model.lm.register_forward_pre_hook(counter, with_kwargs=True)
    started, cpu = time.perf_counter(), time.process_time()
    out = clf.predict(docs)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    hook.remove()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "tokens": counter.tokens,
        "forward_calls": counter.calls,
        "batches": clf.last_stats.batches,
        "labels": list(out["aegis_pred"]),
        "raw": list(out.get("_aegis_raw_pred", [])),
    }


def flops_per_doc(prefix: int, suffix: float, generated: float, cached: bool) -> float:
    """FLOPs of one document on Llama Guard 7B: 2 x weights per token + causal attention + the head.

    Prompt tokens see every earlier token (4 x layers x hidden per pair); each generated token too;
    the output head runs once per generated token. With `cached`, the prefix is not recomputed.
    """
    c = LLAMA_GUARD_7B
    hidden, layers = c["hidden_size"], c["num_hidden_layers"]
    weights = layers * (4 * hidden * hidden + 3 * hidden * c["intermediate_size"])
    head = 2 * c["vocab_size"] * hidden
    total = prefix + suffix
    start = prefix if cached else 0
    prompt = (total - start) * 2 * weights + 4 * layers * hidden * (total**2 - start**2) / 2
    decode = generated * (2 * weights + head + 4 * layers * hidden * (total + generated / 2))
    return prompt + decode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1376)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--trigger-rate", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each path, in turn; the best counts")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    docs = make_corpus(args.docs, args.seed, args.trigger_rate)
    with tempfile.TemporaryDirectory() as tmp:
        base = build_model(Path(tmp) / "base", make_corpus(2000, args.seed + 1, 0.0), args)
        adapter = save_lora_adapter(base, Path(tmp) / "adapter", b_std=1e-4, rank=4)
        results = compare(base, adapter, docs, args.repeats)
    report(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def compare(base: Path, adapter: Path, docs: list[str], repeats: int) -> dict[str, Any]:
    """The reference and the fast path on the same documents (one partition), in turn `repeats` times,
    each path's fastest run kept (load from other processes hits both alike). The prefix K/V, computed
    once per worker, is timed on its own."""
    inference = InferenceConfig(device="cpu")
    options = {
        "reference": dict(generation="reference", keep_raw_pred=True),
        "fast": dict(generation="fast"),
        "fast_raw": dict(generation="fast", keep_raw_pred=True),
    }
    clfs = {
        name: AegisClassifier("aegis", model=str(adapter), base_model=str(base), inference=inference, **kw)
        for name, kw in options.items()
    }
    for clf in clfs.values():
        clf._runtime()  # load outside the timing (both paths load the same model)
    started = time.perf_counter()
    with torch.inference_mode():
        clfs["fast"]._runtime()[0].prefix(torch.device("cpu"))  # once per worker, kept with the model
    prefix_seconds = time.perf_counter() - started
    tries: dict[str, list[dict[str, Any]]] = {name: [] for name in clfs}
    for _ in range(repeats):
        for name, clf in clfs.items():
            tries[name].append(run(clf, docs))
    runs = {name: min(t, key=lambda r: r["seconds"]) for name, t in tries.items()}
    for name, result in runs.items():
        result |= {
            "docs_per_s": len(docs) / result["seconds"],
            "cpu_s_per_doc": result["cpu_seconds"] / len(docs),
        }
        result |= {
            "tokens_per_doc": result["tokens"] / len(docs),
            "all_seconds": [r["seconds"] for r in tries[name]],
        }
    fast_model, tokenizer, _ = clfs["fast"]._runtime()
    assert isinstance(fast_model, FastReply)
    prefix = len(clfs["fast"].layout(tokenizer).prefix)
    cache.clear()
    prompts = [len(tokenizer(format_aegis(d[:6000]))["input_ids"]) for d in docs]
    reference, fast = runs["reference"], runs["fast"]
    return {
        "docs": len(docs),
        "repeats": repeats,
        "prefix_tokens": prefix,
        "prefix_seconds": prefix_seconds,
        "speedup_with_prefix": len(docs) / (fast["seconds"] + prefix_seconds) / reference["docs_per_s"],
        "prompt_tokens_per_doc": float(np.mean(prompts)),
        "reference": {k: v for k, v in reference.items() if k not in ("labels", "raw")},
        "fast": {k: v for k, v in fast.items() if k not in ("labels", "raw")},
        "speedup": fast["docs_per_s"] / reference["docs_per_s"],
        "cpu_speedup": reference["cpu_s_per_doc"] / fast["cpu_s_per_doc"],
        "label_agreement": float(np.mean([a == b for a, b in zip(reference["labels"], fast["labels"])])),
        "raw_agreement": float(np.mean([a == b for a, b in zip(reference["raw"], runs["fast_raw"]["raw"])])),
        "unsafe_share": float(np.mean([label != "safe" for label in reference["labels"]])),
    }


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the comparison and the 7B arithmetic."""
    ref, fast = results["reference"], results["fast"]
    prefix = results["prefix_tokens"]
    print(
        f"model: Llama-shaped, {args.layers} layers, hidden {args.hidden}, {args.heads} heads, "
        f"vocab {args.vocab}; CPU, {args.threads} threads; {results['docs']} documents "
        f"({results['unsafe_share']:.0%} unsafe); best of {results['repeats']} runs each, in turn"
    )
    tokens = results["prompt_tokens_per_doc"]
    print(f"prompt: {tokens:.0f} tokens per document, {prefix} of them the shared prefix")
    for name, run_ in (("reference", ref), ("fast", fast)):
        print(
            f"{name:>9}: {run_['docs_per_s']:6.2f} docs/s, {run_['cpu_s_per_doc']:6.3f} CPU s/doc, "
            f"{run_['tokens_per_doc']:6.1f} tokens computed/doc ({run_['batches']} batches, "
            f"{run_['forward_calls']} forward passes, {run_['seconds']:.1f} s)"
        )
    fewer = ref["tokens_per_doc"] / fast["tokens_per_doc"]
    print(
        f"  speed-up: {results['speedup']:.1f}x docs/s ({results['cpu_speedup']:.1f}x by CPU time); "
        f"{fewer:.1f}x fewer tokens computed"
    )
    print(
        f"  the prefix K/V ({prefix} tokens) took {results['prefix_seconds']:.2f} s once per worker; "
        f"charged to this one partition: {results['speedup_with_prefix']:.1f}x docs/s"
    )
    print(
        f"  label agreement: {results['label_agreement']:.0%}; raw replies (keep_raw_pred) identical: "
        f"{results['raw_agreement']:.0%}"
    )
    suffix = results["prompt_tokens_per_doc"] - prefix
    print(seven_b(prefix, suffix))


def seven_b(prefix: int, suffix: float, fast_steps: float = 1.5, reference_steps: float = 4.0) -> str:
    """FLOPs per document on Llama Guard 7B, reference vs fast, by arithmetic.

    Decode steps after the prompt's pass: a reply is ' safe</s>' (1 step) or ' unsafe\\nO3</s>' (4);
    the reference's batch steps until its longest reply ends (4 with any unsafe row among 64), the
    fast path drops finished rows (1.5 on average at 15% unsafe).
    """
    config = LlamaConfig(**LLAMA_GUARD_7B)
    reference = flops_per_doc(prefix, suffix, reference_steps, cached=False)
    fast = flops_per_doc(prefix, suffix, fast_steps, cached=True)
    once = flops_per_doc(prefix, 0, 0, cached=False)
    kv = kv_bytes_per_token(config, 2)
    return "\n".join(
        [
            f"7B arithmetic (Llama Guard 7B; {prefix}-token prefix, {suffix:.0f}-token suffix per document):",
            f"  reference {reference / 1e12:.2f} TFLOP/doc (all the prompt, {reference_steps:.0f} steps)",
            f"  fast      {fast / 1e12:.2f} TFLOP/doc (suffix, {fast_steps:.1f} steps)",
            f"  saved     {(reference - fast) / 1e12:.2f} TFLOP/doc ({reference / fast:.1f}x fewer); "
            f"the prefix costs {once / 1e12:.2f} TFLOP once per worker",
            f"  memory: weights {llm_weight_bytes(config, 2) / 2**30:.1f} GiB bf16, "
            f"KV {kv / 2**20:.2f} MiB/token, cached prefix {prefix * kv / 2**30:.2f} GiB",
        ]
    )


if __name__ == "__main__":
    main()
