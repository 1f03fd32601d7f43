"""A generated hostile JSONL corpus through `run.py`: exit 0, and every input record accounted for.

Records mix real text nobody on the project wrote (the descriptions of installed packages) with random
Unicode (lone surrogates, control characters, NUL, RTL, combining marks), random JSON types and nesting,
huge and empty values, and broken lines (invalid JSON, invalid UTF-8, non-objects, a byte-order mark).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pyarrow.parquet as pq
import pytest

RUN = Path(__file__).resolve().parent.parent / "run.py"
RANGES = [(0x0, 0x1F), (0x20, 0x7E), (0xA0, 0x24F), (0x590, 0x6FF), (0x300, 0x36F), (0x4E00, 0x4EFF),
          (0xD800, 0xDFFF), (0x1F600, 0x1F64F), (0xFFF0, 0xFFFF)]  # fmt: skip


def real_texts(limit: int = 60) -> list[str]:
    """Paragraphs of installed packages' descriptions (real prose, code, tables, markup)."""
    texts = []
    for dist in sorted(metadata.distributions(), key=lambda d: d.metadata["Name"] or ""):
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        texts.extend(p.strip() for p in body.split("\n\n") if len(p.strip()) > 40)
        if len(texts) >= limit:
            break
    return texts[:limit] or ["fallback text"]


def noise(rng: random.Random, length: int) -> str:
    return "".join(chr(rng.randint(*rng.choice(RANGES))) for _ in range(length))


def value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(11 if depth < 3 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**31, 2**63 - 1, 2**64 - 1, -(2**70), rng.randint(-1000, 1000)])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e-320, 3.14159, 1e20])
    if kind == 4:
        return rng.choice(["", " ", "00123", "2024-01-01", noise(rng, rng.randint(0, 30))])
    if kind == 5:
        return noise(rng, rng.randint(0, 5))
    if kind == 6:
        return {}
    if kind in (7, 8):
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {
        noise(rng, 3) if rng.random() < 0.3 else f"k{i}": value(rng, depth + 1)
        for i in range(rng.randint(0, 3))
    }


def line(rng: random.Random, texts: list[str], i: int) -> bytes:
    """One input line: mostly documents, some of them hostile, some broken."""
    roll = rng.random()
    if roll < 0.04:
        return rng.choice([b'{"text": "unterminated', b"[1, 2]", b"42", b'"just a string"', b"{'single': 1}"])
    if roll < 0.07:
        return b'{"text": "latin-1 caf\xe9 ' + str(i).encode() + b'"}'
    record: dict = {"id": f"f{i}"} if rng.random() < 0.7 else {}
    text_roll = rng.random()
    if text_roll < 0.6:
        record["text"] = rng.choice(texts)
    elif text_roll < 0.75:
        record["text"] = rng.choice(texts)[:200] + noise(rng, rng.randint(1, 40))
    elif text_roll < 0.8:
        record["text"] = "x" * rng.choice([0, 200_000])
    elif text_roll < 0.9:
        record["text"] = value(rng)  # any type, maybe a string
    for k in range(rng.randint(0, 4)):
        record[rng.choice(["meta", "score", "tags", f"extra{k}", "_curator_x", "url"])] = value(rng)
    try:
        return json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: JSON escapes, as web-crawl dumps carry them
        return json.dumps(record, ensure_ascii=True).encode("ascii")


def write_corpus(folder: Path, seed: int) -> dict[str, int]:
    """Two hostile files; returns each file's record count (non-blank lines)."""
    rng, texts = random.Random(seed), real_texts()
    folder.mkdir(parents=True)
    counts = {}
    for name, n in (("web_a", 160), ("web_b", 120)):
        lines = [line(rng, texts, i) for i in range(n)]
        lines[0] = b"\xef\xbb\xbf" + lines[0]
        lines.insert(n // 2, b"   ")  # a blank line is not a record
        (folder / f"{name}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
        counts[name] = n
    return counts


def count_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        return pq.read_metadata(path).num_rows
    return sum(1 for raw in path.read_bytes().splitlines() if raw.strip())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_hostile_corpus_every_record_accounted_for(tmp_path: Path, fmt: str) -> None:
    counts = write_corpus(tmp_path / "in", seed=7)
    out = tmp_path / "out"
    command = [
        sys.executable, str(RUN), "cluster=sync", "dataset=jsonl", f"dataset.path={tmp_path / 'in'}",
        f"output.path={out}", f"output.format={fmt}", "filter.min_score=0.3", "filter.write_filtered=true",
        "dataset.blocksize=16KiB", "quiet=true",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["read"] == sum(counts.values()) and summary["quarantined"] > 0 and summary["written"] > 0
    for unit in summary["per_file"]:
        assert unit["read"] == unit["written"] + unit["filtered"] + unit["quarantined"], unit
        name = unit["unit"]
        data = out / unit["output"]
        filtered = out / "_filtered" / unit["output"]
        bad = out / "_quarantine" / f"{name}.jsonl"
        assert count_rows(data) == unit["written"] and count_rows(filtered) == unit["filtered"]
        assert (count_rows(bad) if bad.exists() else 0) == unit["quarantined"]
    for name, n in counts.items():  # parts of a file add up to the whole file
        assert sum(u["read"] for u in summary["per_file"] if u["input"].endswith(f"{name}.jsonl")) == n
    for record in (json.loads(q) for p in (out / "_quarantine").glob("*.jsonl") for q in p.open()):
        assert record["stage"] in {"read", "classify", "write"} and record["reason"]
        assert {"raw", "raw_base64", "record"} & set(record)
    if fmt == "parquet":  # one schema for the whole run
        schemas = {pq.read_schema(p) for p in out.glob("*.parquet")} | {
            pq.read_schema(p) for p in (out / "_filtered").glob("*.parquet")
        }
        assert len(schemas) == 1
