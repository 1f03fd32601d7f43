"""`curator-classifiers`: every classifier config with its model, columns and labels, without loading a model.

curator-classifiers                     # the shipped classifiers
curator-classifiers domain aegis        # only these
curator-classifiers --config-dir my_conf --json
"""

from __future__ import annotations

import argparse
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from curator.classifiers.registry import family_class, load_config
from curator.config import ClassifierConfig

CONTENT_TYPES = [
    "Product/Company/Organization/Personal Websites", "Explanatory Articles", "News", "Blogs", "MISC",
    "Boilerplate Content", "Analytical Exposition", "Online Comments", "Reviews", "Books and Literature",
    "Conversational",
]  # fmt: skip


def published_labels(model: str) -> list[str] | None:
    """Label sets of the published checkpoints (their config.json holds them; these need no download)."""
    if model in ("nvidia/domain-classifier", "nvidia/multilingual-domain-classifier"):
        # the same 26 labels as the offline zero-shot stand-in
        return [label.name for label in load(config_files([])["zero_shot_domain"]).labels]
    return {
        "nvidia/quality-classifier-deberta": ["High", "Medium", "Low"],
        "nvidia/content-type-classifier-deberta": CONTENT_TYPES,
    }.get(model)


def config_files(config_dirs: list[str]) -> dict[str, Path]:
    """classifier name → YAML file: the shipped ones, then the user's (which win on equal names)."""
    folders = [Path(str(resources.files("curator.conf") / "classifier"))]
    folders += [Path(d) / "classifier" for d in config_dirs]
    found: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.yaml")):
            found[path.stem] = path
    return found


def load(path: Path) -> ClassifierConfig:
    """One classifier YAML through its family's schema (a typo fails here too)."""
    return load_config(OmegaConf.load(path))


def labels(cfg: ClassifierConfig) -> tuple[list[str], str]:
    """The labels and where they come from (the YAML, the family, the published checkpoint, its config)."""
    named = family_class(cfg.family).config_labels(cfg)
    if named is not None:
        return named
    published = published_labels(cfg.model)
    if published:
        return published, "published checkpoint"
    local = Path(os.path.expanduser(cfg.model)) / "config.json"
    if local.is_file():
        data = json.loads(local.read_text())
        mapping = data.get("label2id") or {}
        return [n for n, _ in sorted(mapping.items(), key=lambda item: int(item[1]))], "checkpoint"
    return [], "the checkpoint's config.json"


def describe(name: str, cfg: ClassifierConfig) -> dict[str, Any]:
    """Everything the listing shows about one classifier."""
    names, source = labels(cfg)
    return {
        "name": name,
        "family": cfg.family,
        "model": cfg.model,
        "base_model": getattr(cfg, "base_model", None),
        "adapter": getattr(cfg, "adapter", None),
        "columns": family_class(cfg.family).config_columns(cfg),
        "labels": names,
        "labels_from": source,
        "max_length": cfg.max_length,
        "max_chars": cfg.max_chars,
        "batch_size": cfg.batch_size,
    }


def format_entry(entry: dict[str, Any]) -> str:
    """A few readable lines per classifier."""
    models = entry["model"] + "".join(
        f" + {key} {entry[key]}" for key in ("adapter", "base_model") if entry[key]
    )
    shown = ", ".join(entry["labels"]) if entry["labels"] else f"none here; from {entry['labels_from']}"
    count = f" ({len(entry['labels'])}, {entry['labels_from']})" if entry["labels"] else ""
    limits = f"{entry['max_length'] or 'model'} tokens, {entry['max_chars'] or 'no'} char cut"
    limits += f", batch ≤ {entry['batch_size']}"
    return "\n".join(
        [
            f"{entry['name']}  [{entry['family']}]",
            f"  model:   {models}",
            f"  columns: {', '.join(entry['columns'])}",
            f"  labels:  {shown}{count}",
            f"  limits:  {limits}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """List classifiers: `python run.py classifier=NAME` takes any name shown."""
    parser = argparse.ArgumentParser(prog="curator-classifiers", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="only these classifiers")
    parser.add_argument("--config-dir", action="append", default=[], help="also your own conf folder(s)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    missing = [d for d in args.config_dir if not Path(d).is_dir()]
    if missing:  # as `run.py --config-dir` refuses one
        parser.exit(2, f"--config-dir {missing[0]!r} is not a folder\n")
    files = config_files(args.config_dir)
    unknown = [n for n in args.names if n not in files]
    if unknown:
        parser.exit(2, f"Unknown classifier(s) {unknown}; available: {sorted(files)}\n")
    chosen = args.names or sorted(files)
    entries = [describe(name, load(files[name])) for name in chosen]
    print(json.dumps(entries, indent=2) if args.json else "\n\n".join(format_entry(e) for e in entries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
