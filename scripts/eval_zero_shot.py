"""Measure the zero-shot domain classifier on the bundled sample's gold `domain` labels, with task=evaluate.

The same as `python run.py task=evaluate evaluate.label_field=domain`, printed with per-domain recall
and the most frequent confusions.

    python scripts/eval_zero_shot.py [hydra overrides, e.g. classifier.zero_shot_domain.temperature=0.1]
"""

from __future__ import annotations

import sys
import tempfile

from hydra import compose, initialize_config_module

from curator import pipeline
from curator.config import register_configs, to_config


def main(overrides: list[str]) -> float:
    register_configs()
    evaluate = ["task=evaluate", "evaluate.label_field=domain", "quiet=true"]
    with tempfile.TemporaryDirectory() as out:
        with initialize_config_module(config_module="curator.conf", version_base="1.3"):
            cfg = to_config(compose("config", overrides=[f"output.path={out}", *evaluate, *overrides]))
        summary = pipeline.run(cfg)
    name, m = next(iter(summary["classifiers"].items()))
    print(
        f"{name}: documents {m['rows']}  accuracy {m['accuracy']:.3f}  macro recall {m['macro_recall']:.3f}"
    )
    print(f"macro F1 {m['macro_f1']:.3f}, {m['docs_per_task_second']} docs per task second")
    print("\nper gold domain (recall, n):")
    for label, row in m["per_label"].items():
        if row["support"]:
            print(f"  {label:<28} {row['recall']:.2f}  {row['support']}")
    labels, matrix = m["confusion"]["labels"], m["confusion"]["matrix"]
    pairs = [
        (n, labels[i], labels[j]) for i, row in enumerate(matrix) for j, n in enumerate(row) if n and i != j
    ]
    print("\nmost frequent confusions (gold -> predicted):")
    for count, gold, pred in sorted(pairs, key=lambda p: (-p[0], p[1], p[2]))[:8]:
        print(f"  {gold} -> {pred}: {count}")
    return m["accuracy"]


if __name__ == "__main__":
    main(sys.argv[1:])
