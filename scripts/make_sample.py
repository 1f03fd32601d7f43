"""Build the bundled sample dataset from the hand-written documents in scripts/sample_src/.

The documents were written for this project (not downloaded). This script shuffles them with a fixed
seed, gives each an id, and splits them into a few JSONL files of unequal size (one gzip-compressed),
so the default run exercises several partitions and both plain and compressed input.

    python scripts/make_sample.py
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "scripts" / "sample_src"
TARGET = ROOT / "curator" / "data" / "sample"
# (file name, share of the documents): unequal on purpose.
SPLITS = [
    ("crawl_a.jsonl", 0.45),
    ("crawl_b.jsonl", 0.30),
    ("crawl_c.jsonl.gz", 0.17),
    ("crawl_d.jsonl", 0.08),
]


def main() -> None:
    docs = []
    for path in sorted(SOURCE.glob("*.jsonl")):
        docs += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(20261201).shuffle(docs)
    TARGET.mkdir(parents=True, exist_ok=True)
    for old in TARGET.glob("*.jsonl*"):
        old.unlink()
    start = 0
    for i, (name, share) in enumerate(SPLITS):
        end = len(docs) if i == len(SPLITS) - 1 else start + round(share * len(docs))
        lines = [
            json.dumps(
                {"id": f"sample-{n:04d}", "domain": d["domain"], "text": d["text"]}, ensure_ascii=False
            )
            for n, d in enumerate(docs[start:end], start=start)
        ]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        if name.endswith(".gz"):
            (TARGET / name).write_bytes(gzip.compress(data, mtime=0))
        else:
            (TARGET / name).write_bytes(data)
        print(f"{name}: {end - start} documents")
        start = end


if __name__ == "__main__":
    main()
