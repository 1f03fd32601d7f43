"""What the data-safety checks cost on the host: reading and writing a JSONL unit, this project's checked
path against the plain one it replaced (json.loads per line; pandas `to_json`), in one run.

    python scripts/bench_io.py                 # 50,000 web-like records, best of 3
    python scripts/bench_io.py --docs 200000 --repeat 5

Reading: `read_jsonl` (strict UTF-8, finite numbers, lone-surrogate scan, working-column renames)
vs decoding + `json.loads` into the same object columns. Writing: `encode_jsonl` (per-record JSON,
a failure quarantines one row) vs `DataFrame.to_json(orient="records", lines=True)`, and
`encode_parquet` with the run's schema vs `pa.Table.from_pandas`. Prints records/s and the ratios.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from curator.io.encode import encode_jsonl, encode_parquet
from curator.io.files import discover
from curator.io.readers import object_frame, read_jsonl
from curator.io.schema import sample_schema

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "data",
    "model",
    "city",
    "river",
    "music",
    "team",
    "market",
    "game",
    "recipe",
    "garden",
    "école",
    "東京",
    "😀",
]


def write_corpus(path: Path, docs: int) -> None:
    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(docs):
            record = {
                "id": f"doc-{i}",
                "url": f"https://example.org/{i}",
                "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 400))),
                "score": rng.random(),
                "tags": [rng.choice(WORDS) for _ in range(3)],
                "meta": {"lang": "en", "len": rng.randint(1, 10_000)},
            }
            handle.write(json.dumps(record, ensure_ascii=rng.random() < 0.5) + "\n")


def plain_read(path: Path) -> pd.DataFrame:
    with path.open("rb") as handle:
        records = [json.loads(raw.decode("utf-8")) for raw in handle if raw.strip()]
    return object_frame(records)


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "web.jsonl"
        write_corpus(path, args.docs)
        spec = discover(str(path))[0]
        checked = read_jsonl(spec, "text")
        frame = checked[[c for c in checked.columns if not str(c).startswith("_curator_")]].copy()
        frame["domain_pred"] = pd.array(
            np.random.default_rng(0).choice(["A", "B"], len(frame)), dtype="string"
        )
        frame["domain_score"] = np.random.default_rng(1).random(len(frame)).astype(np.float32)
        schema = sample_schema([frame])
        rows = {
            "read: plain json.loads": best(lambda: plain_read(path), args.repeat),
            "read: read_jsonl (checked)": best(lambda: read_jsonl(spec, "text"), args.repeat),
            "write jsonl: pandas to_json": best(
                lambda: frame.to_json(orient="records", lines=True, force_ascii=False), args.repeat
            ),
            "write jsonl: encode_jsonl (per-row)": best(lambda: encode_jsonl(frame), args.repeat),
            "write parquet: pa.Table.from_pandas": best(
                lambda: pa.Table.from_pandas(frame, preserve_index=False), args.repeat
            ),
            "write parquet: encode_parquet (run schema)": best(
                lambda: encode_parquet(frame, schema), args.repeat
            ),
        }
    report = {
        name: {"seconds": round(s, 3), "records_per_s": round(args.docs / s)} for name, s in rows.items()
    }
    names = list(rows)
    report["ratios (checked / plain time)"] = {
        "read": round(rows[names[1]] / rows[names[0]], 2),
        "write jsonl": round(rows[names[3]] / rows[names[2]], 2),
        "write parquet": round(rows[names[5]] / rows[names[4]], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
