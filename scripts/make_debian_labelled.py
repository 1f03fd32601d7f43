"""Build a labelled set of real text nobody on this project wrote: Debian package descriptions by section.

Debian's archive index (bookworm main) holds tens of thousands of package descriptions written by their
maintainers, each package filed under a `Section:`. Seven sections map onto seven of the domain labels
(SECTIONS below). The script fetches the index with apt into a private folder (no change to the
system's apt state; Debian's mirror is reachable where PyPI is), joins each package's Section with its
long English description, drops near-duplicates and library/data/doc packages, and writes a JSONL file
with `id` (the package), `label`, `section` and `text` (short description, blank line, long description).
Per label, packages are ordered by a hash of their name, so the same index gives the same file.

    python scripts/make_debian_labelled.py --out outputs/debian/debian.jsonl [--per-label 400] [--lists DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

# Debian section → domain label (conf/classifier/zero_shot_domain.yaml)
SECTIONS = {
    "games": "Games",
    "science": "Science",
    "math": "Science",
    "sound": "Arts_and_Entertainment",
    "video": "Arts_and_Entertainment",
    "hamradio": "Hobbies_and_Leisure",
    "web": "Internet_and_Telecom",
    "mail": "Internet_and_Telecom",
    "comm": "Internet_and_Telecom",
    "electronics": "Computers_and_Electronics",
    "tex": "Books_and_Literature",  # TeX: typesetting and publishing documents and books
}
SKIP = re.compile(r"^(lib|python3?-|ruby-|node-|golang-|r-cran-|fonts-)|-(data|doc|dev|dbg|common|tools)$")
SUITE = "dists_bookworm_main"  # the release's main index (stable: point releases change little)


def fetch(lists: Path) -> None:
    """apt-get update with English descriptions into `lists` (not /var/lib/apt/lists)."""
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "apt-get",
            "update",
            "-o",
            "Acquire::Languages=en",
            "-o",
            f"Dir::State::Lists={lists}",
            "-o",
            "Debug::NoLocking=1",
        ],
        check=True,
    )


def stanzas(path: Path) -> Iterator[dict[str, str]]:
    """The records of a (compressed) apt index, decompressed by apt's own helper."""
    text = subprocess.run(
        ["/usr/lib/apt/apt-helper", "cat-file", str(path)], check=True, capture_output=True, text=True
    ).stdout
    for block in text.split("\n\n"):
        record: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line.startswith(" ") and key:
                record[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                record[key] = value.strip()
        if record:
            yield record


def description(long: str) -> str:
    """An apt long description as plain text: ' .' lines are paragraph breaks."""
    first, *rest = long.split("\n")
    body = "\n".join("" if line.strip() == "." else line[1:] for line in rest)
    return f"{first.strip()}\n\n{body.strip()}".strip()


def build(lists: Path, per_label: int) -> list[dict[str, str]]:
    """Labelled records, `per_label` (at most) per label, in a stable order."""
    [packages] = lists.glob(f"*_{SUITE}_binary-amd64_Packages*")
    [translations] = lists.glob(f"*_{SUITE}_i18n_Translation-en*")
    texts = {
        (r["Package"], r.get("Description-md5")): description(r["Description-en"])
        for r in stanzas(translations)
        if "Description-en" in r
    }
    seen: set[str] = set()
    by_label: dict[str, list[dict[str, str]]] = {}
    for record in stanzas(packages):
        name, section = record["Package"], record.get("Section", "").split("/")[-1]
        text = texts.get((name, record.get("Description-md5")))
        if section not in SECTIONS or not text or SKIP.search(name) or len(text) < 80:
            continue
        key = text.split("\n\n", 1)[-1][:200]  # one package of a family that shares its description
        if key in seen:
            continue
        seen.add(key)
        row = {"id": name, "label": SECTIONS[section], "section": section, "text": text}
        by_label.setdefault(row["label"], []).append(row)
    out = []
    for label in sorted(by_label):
        rows = sorted(by_label[label], key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())
        out.extend(rows[:per_label])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/debian/debian.jsonl")
    parser.add_argument("--per-label", type=int, default=400)
    parser.add_argument("--lists", help="apt lists folder with Packages and Translation-en (default: fetch)")
    args = parser.parse_args()
    lists = Path(args.lists) if args.lists else Path(args.out).parent / "apt-lists"
    if not list(lists.glob(f"*_{SUITE}_i18n_Translation-en*")):
        fetch(lists.resolve())
    rows = build(lists, args.per_label)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    print(f"{len(rows)} records → {args.out}: {counts}")


if __name__ == "__main__":
    main()
