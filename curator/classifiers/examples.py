"""Labelled example texts for zero-shot label prototypes: read, checked and fingerprinted on the client."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from curator.errors import ConfigError

PARQUET = (".parquet", ".pq")


def _rows(path: Path, text_field: str, label_field: str) -> tuple[list[object], list[object]]:
    """The text and label values of a JSONL or Parquet file (record order), or ConfigError."""
    if path.name.lower().endswith(PARQUET):
        frame = pd.read_parquet(path)
        records = frame.to_dict("records")
    else:
        records = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}: line {number} is not JSON ({err.msg})") from err
    if not records:
        raise ConfigError(f"{path}: no examples in the file")
    for key in (text_field, label_field):
        if any(not isinstance(r, dict) or key not in r for r in records):
            seen = list(records[0]) if isinstance(records[0], dict) else []
            raise ConfigError(f"{path}: records lack field {key!r} (fields found: {seen})")
    return [r[text_field] for r in records], [r[label_field] for r in records]


def read_examples(
    path: str, labels: Sequence[str], text_field: str = "text", label_field: str = "label"
) -> dict[str, list[str]]:
    """Example texts per label from a JSONL/Parquet file; unknown labels and empty texts are errors."""
    file = Path(os.path.expanduser(path))
    if not file.is_file():
        raise ConfigError(f"examples_path {path!r}: no such file")
    texts, names = _rows(file, text_field, label_field)
    bad = [i + 1 for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ConfigError(f"{path}: empty or non-text {text_field!r} in record(s) {bad[:10]}")
    unknown = sorted({str(n) for n in names} - set(labels))
    if unknown:
        raise ConfigError(f"{path}: unknown label(s) {unknown}; the classifier's labels: {list(labels)}")
    out: dict[str, list[str]] = {}
    for text, name in zip(texts, names, strict=True):
        out.setdefault(str(name), []).append(text)
    return out


def inline_problems(key: str, examples: dict[str, Sequence[str]]) -> Iterator[str]:
    """Empty texts given under a label's `examples:` in YAML."""
    for label, texts in examples.items():
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            yield f"{key}: label {label!r} has an empty example text"


def file_digest(path: str) -> str:
    """SHA-256 of the examples file's bytes (enters the run's fingerprint: edited examples rerun)."""
    digest = hashlib.sha256()
    with open(os.path.expanduser(path), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
