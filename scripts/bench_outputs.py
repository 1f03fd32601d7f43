"""Bytes a run writes: documents + columns (`output.content=all`) against attribute sidecars
(`output.content=attributes`), plain and compressed, JSONL and Parquet, on the bundled sample and on a
web-like corpus, in one run. The classifier is the default zero-shot one (the real MiniLM).

    python scripts/bench_outputs.py                 # the sample + 1,000 web-like documents
    python scripts/bench_outputs.py --docs 5000

Prints a JSON table: bytes of the data files (not the manifest, summary or report) per setting, the
input's bytes, and each setting's size relative to `content=all` in the same format.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from bench_io import write_corpus  # noqa: E402

from curator import pipeline  # noqa: E402
from curator.config import package_data  # noqa: E402
from tests.conftest import compose_config  # noqa: E402

SETTINGS = [
    ("all", "jsonl", "none"),
    ("attributes", "jsonl", "none"),
    ("all", "jsonl", "zstd"),
    ("attributes", "jsonl", "zstd"),
    ("all", "parquet", None),
    ("attributes", "parquet", None),
]


def data_bytes(folder: Path) -> int:
    """Bytes of the data files (top level: what a reader of the output folder reads)."""
    return sum(
        p.stat().st_size for p in folder.iterdir() if p.is_file() and not p.name.startswith(("_", "."))
    )


def measure(name: str, inputs: Path, work: Path) -> dict:
    sizes = {}
    for content, fmt, codec in SETTINGS:
        out = work / f"{name}-{content}-{fmt}-{codec}"
        overrides = [
            "cluster=sync",
            "quiet=true",
            f"dataset.path={inputs}",
            f"output.path={out}",
            f"output.content={content}",
            f"output.format={fmt}",
            # the model reads each document's first 400 characters: it keeps the bench short, and the
            # bytes written do not depend on it (every column is written whole)
            "classifier.zero_shot_domain.max_chars=400",
        ] + ([f"output.compression={codec}"] if codec else [])
        pipeline.run(compose_config(overrides))
        sizes[f"{content} {fmt} {codec or 'snappy'}"] = data_bytes(out)
    ratios = {
        key: round(value / sizes[f"all {key.split()[1]} {key.split()[2]}"], 3) for key, value in sizes.items()
    }
    files = [p for p in inputs.rglob("*") if p.is_file()]
    return {"input_bytes": sum(p.stat().st_size for p in files), "bytes": sizes, "relative_to_all": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        web = work / "web"
        web.mkdir()
        write_corpus(web / "web.jsonl", args.docs)
        report = {
            "sample": measure("sample", Path(package_data("sample")), work),
            f"web-like ({args.docs} docs)": measure("web", web, work),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
