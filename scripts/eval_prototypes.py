"""Description-only zero-shot vs label prototypes vs trained heads, on a held-out split of a labelled file.

Per label, records are ordered by a hash of their id: the first --examples become the prototypes'
examples, the first N of each --head-per-label train a head (task=train), and the records after all
of those (at most --test-per-label) are the test set every method is scored on with task=evaluate.
Labels must be domain labels (conf/classifier/zero_shot_domain.yaml gives their descriptions); the
zero-shot runs compete over all 26 domain labels ("all") or only the data's labels ("data").

    python scripts/eval_prototypes.py --data curator/data/sample --label-field domain \\
        --examples 4 --head-per-label 4
    python scripts/make_debian_labelled.py --out outputs/debian/debian.jsonl
    python scripts/eval_prototypes.py --data outputs/debian/debian.jsonl \\
        --examples 10 --head-per-label 10,50 --test-per-label 60
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from curator import pipeline
from curator.config import register_configs, to_config


def read_records(path: Path) -> list[dict[str, Any]]:
    """JSONL records of a file or of every .jsonl/.jsonl.gz file in a folder, in name order."""
    files = (
        sorted(p for p in path.rglob("*") if p.name.endswith((".jsonl", ".jsonl.gz")))
        if path.is_dir()
        else [path]
    )
    rows = []
    for file in files:
        opener = gzip.open if file.name.endswith(".gz") else open
        with opener(file, "rt", encoding="utf-8") as handle:
            rows.extend(json.loads(line) for line in handle if line.strip())
    return rows


def split(
    rows: list[dict], label_field: str, examples: int, heads: list[int], test: int | None
) -> dict[str, list]:
    """Examples, head training sets and the test set, disjoint from all of them, per label by id hash."""
    by_label: dict[str, list[dict]] = {}
    for row in rows:
        by_label.setdefault(str(row[label_field]), []).append(row)
    start = max([examples, *heads])
    parts: dict[str, list] = {"examples": [], "test": [], **{f"head_{n}": [] for n in heads}}
    for label in sorted(by_label):
        ordered = sorted(by_label[label], key=lambda r: hashlib.sha256(str(r["id"]).encode()).hexdigest())
        if len(ordered) <= start:
            raise SystemExit(f"label {label!r} has {len(ordered)} records: none left for testing")
        parts["examples"] += [{"text": r["text"], "label": label} for r in ordered[:examples]]
        for n in heads:
            parts[f"head_{n}"] += ordered[:n]
        parts["test"] += ordered[start:][:test]
    return parts


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def zero_shot_yaml(conf: Path, name: str, labels: list[str] | None, examples: Path | None) -> None:
    """A copy of zero_shot_domain.yaml: only `labels` (None: all 26), optionally with examples_path."""
    node = OmegaConf.load(str(resources.files("curator.conf") / "classifier" / "zero_shot_domain.yaml"))
    if labels is not None:
        node.labels = [x for x in node.labels if x.name in labels]
    if examples is not None:
        node.examples_path = str(examples)
    path = conf / "classifier" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# @package classifier.{name}\n" + OmegaConf.to_yaml(node), encoding="utf-8")


def run(overrides: list[str]) -> dict[str, Any]:
    with initialize_config_module(config_module="curator.conf", version_base="1.3"):
        return pipeline.run(to_config(compose("config", overrides=overrides)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--label-field", default="label")
    parser.add_argument("--examples", type=int, default=10, help="examples per label for the prototypes")
    parser.add_argument("--head-per-label", default="50", help="comma-separated training set sizes per label")
    parser.add_argument("--test-per-label", type=int, default=None)
    parser.add_argument("--validation", type=float, default=0.2, help="train.validation of the heads")
    parser.add_argument("--work", default="outputs/eval_prototypes")
    parser.add_argument("--cluster", default="sync")
    args = parser.parse_args()
    register_configs()
    heads = [int(n) for n in args.head_per_label.split(",") if n]
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    parts = split(read_records(Path(args.data)), args.label_field, args.examples, heads, args.test_per_label)
    files = {name: write_jsonl(work / "data" / f"{name}.jsonl", rows) for name, rows in parts.items()}
    labels = sorted({str(r[args.label_field]) for r in parts["test"]})
    conf = work / "conf"
    zero_shot_yaml(conf, "description_all", None, None)
    zero_shot_yaml(conf, "description_data", labels, None)
    zero_shot_yaml(conf, "prototypes_all", None, files["examples"])
    zero_shot_yaml(conf, "prototypes_data", labels, files["examples"])
    common = [f"cluster={args.cluster}", "quiet=true", f"hydra.searchpath=[file://{conf}]"]
    for n in heads:
        train = [
            "task=train",
            f"train.name=head_{n}",
            f"dataset.path={files[f'head_{n}']}",
            f"train.label_field={args.label_field}",
            f"train.validation={args.validation}",
            f"train.output={conf}",
            f"output.path={work / 'runs' / f'train_{n}'}",
        ]
        run([*common, *train])
    methods = ["description_all", "description_data", "prototypes_all", "prototypes_data"]
    methods += [f"head_{n}" for n in heads]
    results = {}
    for name in methods:
        summary = run(
            [
                *common,
                f"classifier={name}",
                "task=evaluate",
                f"evaluate.data={files['test']}",
                f"evaluate.label_field={args.label_field}",
                f"output.path={work / 'runs' / name}",
            ]
        )
        results[name] = summary["classifiers"][name]
    sizes = {k: len(v) for k, v in parts.items()}
    print(f"data {args.data}: {len(labels)} labels, split sizes {sizes}")
    print("| method | macro recall | accuracy | macro F1 |\n|---|---|---|---|")
    for name, m in results.items():
        print(f"| {name} | {m['macro_recall']:.3f} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} |")
    (work / "results.json").write_text(json.dumps({"sizes": sizes, "results": results}, indent=2))


if __name__ == "__main__":
    main()
