"""Find input files and name their outputs: one output file per input file, same base name."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from curator.errors import ConfigError, InputNotFoundError

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
PARQUET_SUFFIXES = (".parquet", ".pq")
FORMAT_SUFFIXES = {"jsonl": ".jsonl", "parquet": ".parquet"}


@dataclass(frozen=True)
class InputFile:
    """One input file: where it is, its format, and the name its outputs take (relative, no suffix)."""

    path: str
    format: str
    stem: str

    def output_name(self, fmt: str | None) -> str:
        """Relative output file name: the input's name with the output format's suffix."""
        return self.stem + FORMAT_SUFFIXES[fmt or self.format]


def detect_format(path: str) -> str | None:
    """jsonl or parquet from the file name; None when the suffix says neither."""
    lower = path.lower()
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def _strip_suffix(name: str) -> str:
    for suffix in sorted(JSONL_SUFFIXES + PARQUET_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def discover(path: str | list[str], fmt: str | None = None) -> list[InputFile]:
    """Expand files, directories (recursively) and globs into input files, in a stable order."""
    entries = [path] if isinstance(path, str) else list(path)
    found: list[tuple[str, str]] = []  # (file, root it is named relative to)
    for entry in entries:
        entry = os.path.expanduser(str(entry))
        if os.path.isdir(entry):
            for file in sorted(Path(entry).rglob("*")):
                visible = file.is_file() and not file.name.startswith((".", "_"))
                if visible and (fmt is not None or detect_format(str(file))):
                    found.append((str(file), entry))
        elif os.path.isfile(entry):
            found.append((entry, os.path.dirname(entry)))
        elif glob.has_magic(entry):
            found.extend((m, os.path.dirname(m)) for m in sorted(glob.glob(entry, recursive=True)))
        else:
            raise InputNotFoundError(f"dataset.path: {entry!r} does not exist.")
    if not found:
        raise InputNotFoundError(f"dataset.path: no JSONL or Parquet files found under {path!r}.")
    inputs: list[InputFile] = []
    stems: dict[str, str] = {}
    for file, root in found:
        kind = fmt or detect_format(file)
        if kind not in FORMAT_SUFFIXES:
            raise ConfigError(f"Cannot tell the format of {file!r}; set dataset.format=jsonl or parquet.")
        stem = _strip_suffix(os.path.relpath(file, root) if root else os.path.basename(file))
        if stem in stems:
            raise ConfigError(f"Inputs {stems[stem]!r} and {file!r} would write the same output {stem!r}.")
        stems[stem] = file
        inputs.append(InputFile(path=file, format=kind, stem=stem))
    return inputs
