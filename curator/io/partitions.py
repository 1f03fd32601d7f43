"""Units of work: large files split into parts (byte ranges on line starts, Parquet row groups), small
files grouped. Each part writes `<name>.partNNNN.<ext>`; a file that is not split keeps `<name>.<ext>`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq
from dask.utils import parse_bytes

from curator.errors import ConfigError
from curator.io.files import FORMAT_SUFFIXES, InputFile, output_format
from curator.io.paths import open_url

PART_DIGITS = 4  # part numbers are zero-padded to at least this many digits
_CHUNK = 8 << 20  # bytes read at a time when counting lines


@dataclass(frozen=True)
class Part:
    """A whole input file (index None) or one part of it: a byte range (JSONL) or row groups (Parquet)."""

    file: InputFile
    index: int | None = None
    count: int = 1
    start: int = 0  # JSONL: first byte (always the start of a line)
    end: int | None = None  # JSONL: byte after the last line; None: end of file
    row_groups: tuple[int, ...] | None = None  # Parquet: the row groups; None: all
    first_row: int = 0  # Parquet: the file row number of this part's first row

    @property
    def path(self) -> str:
        return self.file.path

    @property
    def format(self) -> str:
        return self.file.format

    @property
    def name(self) -> str:
        """`<name>` for a whole file, `<name>.partNNNN` for a part: what every output of it is called."""
        if self.index is None:
            return self.file.stem
        digits = max(PART_DIGITS, len(str(self.count - 1)))
        return f"{self.file.stem}.part{self.index:0{digits}d}"

    @property
    def size(self) -> int:
        """Bytes this part covers (a whole file: its size), for grouping."""
        if self.end is not None:
            return self.end - self.start
        return max(self.file.size, 0)

    @property
    def counted(self) -> bool:
        """True for JSONL parts after the first: their first line number comes from counting earlier parts."""
        return self.format == "jsonl" and bool(self.index)

    def output_name(self, fmt: str | None) -> str:
        """Relative output file name of this unit in format `fmt` (None: the input's format)."""
        return self.name + FORMAT_SUFFIXES[output_format(fmt, self.format)]


def as_part(spec: InputFile | Part) -> Part:
    """A whole-file Part for an InputFile (the Python API reads whole files)."""
    return spec if isinstance(spec, Part) else Part(spec)


def parse_blocksize(value: Any) -> int | None:
    """dataset.blocksize as bytes: an int, or a string such as "128MiB"; None/0: never split."""
    if value in (None, 0, "", "none", "None"):
        return None
    try:
        size = int(value) if isinstance(value, int) else parse_bytes(str(value))
    except ValueError as err:
        raise ConfigError(f"dataset.blocksize={value!r} is not a size (try 128MiB or 134217728).") from err
    if size <= 0:
        raise ConfigError(f"dataset.blocksize={value!r} must be positive (or null to never split).")
    return size


def plan_parts(files: Iterable[InputFile], blocksize: int | None) -> list[Part]:
    """Every input file as one Part, or as several when it is larger than `blocksize` and splittable
    (plain JSONL and Parquet; compressed files and Arrow files are one unit each)."""
    parts: list[Part] = []
    for file in files:
        if not blocksize or file.size <= blocksize or file.compressed or file.format == "arrow":
            parts.append(Part(file))
        elif file.format == "jsonl":
            parts.extend(_jsonl_parts(file, blocksize))
        else:
            parts.extend(_parquet_parts(file, blocksize))
    return parts


def _jsonl_parts(file: InputFile, blocksize: int) -> list[Part]:
    """Byte ranges of about `blocksize`, each moved forward to the next line start (a few small reads)."""
    bounds = [0]
    with open_url(file.path, "rb", file.storage_options) as handle:
        for target in range(blocksize, file.size, blocksize):
            if target <= bounds[-1]:  # a long line already carried us past this target
                continue
            handle.seek(target - 1)
            bound = target - 1 + len(handle.readline())  # the line holding byte target-1 ends here
            if bound >= file.size:
                break
            bounds.append(bound)
    bounds.append(file.size)
    count = len(bounds) - 1
    if count == 1:
        return [Part(file)]
    return [Part(file, i, count, start=bounds[i], end=bounds[i + 1]) for i in range(count)]


def _parquet_parts(file: InputFile, blocksize: int) -> list[Part]:
    """Consecutive row groups of about `blocksize` compressed bytes (the footer is all that is read)."""
    with open_url(file.path, "rb", file.storage_options) as handle:
        meta = pq.ParquetFile(handle).metadata
    groups: list[list[int]] = []
    size = blocksize  # the first row group starts a part
    for i in range(meta.num_row_groups):
        if size >= blocksize:
            groups.append([])
            size = 0
        groups[-1].append(i)
        group = meta.row_group(i)
        size += sum(group.column(c).total_compressed_size for c in range(group.num_columns))
    if len(groups) <= 1:
        return [Part(file)]
    parts, first = [], 0
    for i, rows in enumerate(groups):
        parts.append(Part(file, i, len(groups), row_groups=tuple(rows), first_row=first))
        first += sum(meta.row_group(r).num_rows for r in rows)
    return parts


def group_parts(parts: Sequence[Part], files_per_partition: int, blocksize: int | None) -> list[list[Part]]:
    """Consecutive whole small files share a task (up to `files_per_partition`, together ≤ blocksize)."""
    if files_per_partition < 1:
        raise ConfigError(f"dataset.files_per_partition={files_per_partition} must be at least 1.")
    groups: list[list[Part]] = []
    size = 0
    for part in parts:
        current = groups[-1] if groups else None
        fits = (
            current is not None
            and part.index is None
            and current[-1].index is None
            and len(current) < files_per_partition
            and (blocksize is None or size + part.size <= blocksize)
        )
        if fits:
            current.append(part)
            size += part.size
        else:
            groups.append([part])
            size = part.size
    return groups


SMALL_FILE_BYTES = 256 * 2**10  # files this small on average make tasks mostly of per-task overhead
MANY_FILES = 64
TASK_TARGET_BYTES = 4 * 2**20  # what a suggested group of small files should hold
TASKS_PER_GROUP_HINT = 8  # ...while leaving at least this many tasks


def small_files_hint(parts: Sequence[Part], files_per_partition: int) -> str | None:
    """Advice for many small whole files read one per task (each its own batches and task overhead):
    the `dataset.files_per_partition` that fills tasks, or None when it would not help."""
    whole = [p for p in parts if p.index is None]
    if files_per_partition != 1 or len(whole) < MANY_FILES or any(p.file.size < 0 for p in whole):
        return None  # (a store that lists no sizes: nothing to judge by)
    mean = sum(p.size for p in whole) / len(whole)
    if mean >= SMALL_FILE_BYTES:
        return None
    suggested = max(2, min(int(TASK_TARGET_BYTES // max(mean, 1)), len(whole) // TASKS_PER_GROUP_HINT))
    return (
        f"{len(whole)} small input files (on average {mean / 2**10:.1f} KiB): each is a task of its own, "
        f"classified in its own batches. dataset.files_per_partition={suggested} would put up to that many "
        "in one task, each still written to its own output file."
    )


def count_lines(part: Part) -> int:
    """Lines in a JSONL part's byte range (each part ends after a newline, except perhaps the last)."""
    lines, left, last = 0, None if part.end is None else part.end - part.start, b""
    with open_url(part.path, "rb", part.file.storage_options) as handle:
        handle.seek(part.start)
        while left is None or left > 0:
            chunk = handle.read(_CHUNK if left is None else min(_CHUNK, left))
            if not chunk:
                break
            lines += chunk.count(b"\n")
            last = chunk[-1:]
            if left is not None:
                left -= len(chunk)
    return lines + (1 if last and last != b"\n" else 0)
