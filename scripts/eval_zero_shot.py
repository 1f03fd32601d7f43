"""Measure the zero-shot domain classifier's accuracy on the bundled sample's gold `domain` labels.

Runs the real pipeline (the same code as `python run.py`) and compares `domain_pred` with `domain`.

    python scripts/eval_zero_shot.py [hydra overrides, e.g. classifier.zero_shot_domain.temperature=0.1]
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_module

from curator import pipeline
from curator.config import register_configs, to_config


def main(overrides: list[str]) -> float:
    register_configs()
    with tempfile.TemporaryDirectory() as out:
        with initialize_config_module(config_module="curator.conf", version_base="1.3"):
            cfg = to_config(compose("config", overrides=[f"output.path={out}", "quiet=true", *overrides]))
        summary = pipeline.run(cfg)
        frame = pd.concat(pd.read_json(p, lines=True, dtype=False) for p in sorted(Path(out).glob("*.jsonl")))
    correct = frame["domain_pred"] == frame["domain"]
    accuracy = float(correct.mean())
    print(f"documents: {len(frame)}  accuracy: {accuracy:.3f}  ({int(correct.sum())}/{len(frame)})")
    print(f"throughput: {summary['docs_per_second']} docs/s end to end ({summary['seconds']} s)")
    print("\nper gold domain (accuracy, n):")
    for domain, group in frame.groupby("domain"):
        print(f"  {domain:<28} {(group['domain_pred'] == domain).mean():.2f}  {len(group)}")
    confusions = Counter(zip(frame.loc[~correct, "domain"], frame.loc[~correct, "domain_pred"]))
    print("\nmost frequent confusions (gold -> predicted):")
    for (gold, pred), count in confusions.most_common(8):
        print(f"  {gold} -> {pred}: {count}")
    return accuracy


if __name__ == "__main__":
    main(sys.argv[1:])
