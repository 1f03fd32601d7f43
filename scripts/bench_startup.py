"""Benchmark: how long a fresh process or Dask worker takes to have a classifier ready to run.

Every worker of every run (and every SLURM job) pays this before its first batch. Measured in fresh
interpreters, alternating, on the bench's MiniLM-based classifier (or `--model FOLDER`):

- hand-written: `AutoModelForSequenceClassification.from_pretrained` + `AutoTokenizer` — the baseline;
- project, fast path: `SequenceClassifier._runtime()` with `inference.fast_encoder=true` (the default:
  built from the checkpoint's tensors, no transformers modelling import, no random initialisation);
- project, Hugging Face's modules: the same with `inference.fast_encoder=false`;
- cluster: `connect()` a one-worker LocalCluster, model ready on the worker, close — fast vs HF modules.

Each figure counts from after `import torch` (a worker has torch imported by the plugin already).

    python scripts/bench_startup.py [--rounds 3] [--model FOLDER]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

IN_PROCESS = """
import json, sys, time
import torch
start = time.perf_counter()
folder, how = sys.argv[1], sys.argv[2]
if how == "hand-written":
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        model(**tokenizer(["warm up"], return_tensors="pt"))
else:
    from curator.classifiers.sequence import SequenceClassifier
    from curator.config import InferenceConfig
    clf = SequenceClassifier("b", model=folder, pred_column="p", max_length=512,
                             inference=InferenceConfig(fast_encoder=how == "fast"))
    clf.predict(["warm up"])
print(json.dumps({"ready": time.perf_counter() - start}))
"""

ON_A_WORKER = """
import json, sys, time

def ready(folder, fast):
    from curator.classifiers.sequence import SequenceClassifier
    from curator.config import InferenceConfig
    clf = SequenceClassifier("b", model=folder, pred_column="p", max_length=512,
                             inference=InferenceConfig(fast_encoder=fast))
    clf.predict(["warm up"])

if __name__ == "__main__":
    from curator.cluster import connect
    from curator.config import ClusterConfig
    folder, fast = sys.argv[1], sys.argv[2] == "fast"
    t0 = time.perf_counter()
    context = connect(ClusterConfig(kind="local", n_workers=1))
    client = context.__enter__()
    t1 = time.perf_counter()
    client.submit(ready, folder, fast, pure=False).result()
    t2 = time.perf_counter()
    context.__exit__(None, None, None)
    t3 = time.perf_counter()
    print(json.dumps({"start": t1 - t0, "ready": t2 - t1, "close": t3 - t2, "total": t3 - t0}))
"""


def measure(script: str, *args: str) -> dict[str, float]:
    """Run a script in a fresh interpreter and read the JSON line it prints last."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(script)
    out = subprocess.run(
        [sys.executable, handle.name, *args], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    Path(handle.name).unlink()
    return json.loads(out.strip().splitlines()[-1])


def bench_model(work: Path) -> Path:
    """The inference bench's classifier: real all-MiniLM-L6-v2 weights, random 26-way head."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_inference import make_model

    from curator.models.hub import resolve_model

    return make_model(work / "model", resolve_model("sentence-transformers/all-MiniLM-L6-v2"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", type=Path, help="a sequence-classification folder (default: the bench's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(args.model or bench_model(Path(tmp)))
        rows: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.rounds):  # alternating, so drift hits every row alike
            for how in ("hand-written", "fast", "hf"):
                rows.setdefault(f"process, {how}", []).append(measure(IN_PROCESS, folder, how))
            for how in ("fast", "hf"):
                rows.setdefault(f"worker, {how}", []).append(measure(ON_A_WORKER, folder, how))

    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in rows[name])

    base = median("process, hand-written", "ready")
    print(f"median of {args.rounds} rounds, seconds after `import torch`\n")
    print(f"{'':<28}{'model ready':>12}{'vs hand-written':>17}")
    for name in ("process, hand-written", "process, fast", "process, hf"):
        print(f"{name:<28}{median(name, 'ready'):>12.2f}{base / median(name, 'ready'):>16.2f}x")
    print(f"\n{'':<28}{'start':>8}{'ready':>8}{'close':>8}{'total':>8}")
    for name in ("worker, fast", "worker, hf"):
        cells = "".join(f"{median(name, key):>8.2f}" for key in ("start", "ready", "close", "total"))
        print(f"{name:<28}{cells}")


if __name__ == "__main__":
    main()
