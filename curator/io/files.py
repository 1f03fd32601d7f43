"""Find input files on any fsspec filesystem and name their outputs after them (same relative name)."""

from __future__ import annotations

import glob
import posixpath
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.utils import infer_compression

from curator.errors import ConfigError, InputNotFoundError

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
PARQUET_SUFFIXES = (".parquet", ".pq")
FORMAT_SUFFIXES = {"jsonl": ".jsonl", "parquet": ".parquet"}
COMPRESSED_SUFFIXES = (".gz", ".zst", ".bz2", ".xz")
LIST_PREFIX = "@"  # dataset.path=@files.txt: a text file naming one input (file, folder or glob) per line


@dataclass(frozen=True)
class InputFile:
    """One input file: where it is, its format, its output name (relative, no suffix) and its identity."""

    path: str  # a local path or an fsspec URL (memory://, s3://, ...)
    format: str
    stem: str
    size: int = -1
    modified: str = ""  # mtime, ETag or creation time: with the size, what tells a changed file

    @property
    def name(self) -> str:
        """The name every output of this file starts with."""
        return self.stem

    @property
    def compressed(self) -> bool:
        """Compressed files are read as one stream: they are never split into parts."""
        return self.path.lower().endswith(COMPRESSED_SUFFIXES)

    def output_name(self, fmt: str | None) -> str:
        """Relative output file name: the input's name with the output format's suffix."""
        return self.name + FORMAT_SUFFIXES[fmt or self.format]


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


def modified(info: dict[str, Any]) -> str:
    """A file's change marker from fsspec's info: local mtime, object-store ETag/LastModified, ..."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "ETag", "etag", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def _url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """What fsspec.open needs to find `path` again: plain for local files, a URL otherwise."""
    return path if _is_local(fs) else fs.unstrip_protocol(path)


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def _hidden(relative: str) -> bool:
    """Names starting with . or _ (and everything below such folders) are not inputs."""
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def _static_prefix(pattern: str) -> str:
    """The folder above a glob's first wildcard: matches are named relative to it."""
    parts = pattern.split("/")
    return "/".join(parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))])


def _read_list(entry: str) -> list[str]:
    """Entries of a file list (blank lines and # comments skipped; relative to the list's folder)."""
    url = entry[len(LIST_PREFIX) :]
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.isfile(path):
        raise InputNotFoundError(f"dataset.path: file list {url!r} does not exist.")
    folder = posixpath.dirname(path)
    entries = []
    for line in fs.cat_file(path).decode("utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        absolute = "://" in line or line.startswith(("/", "~"))
        entries.append(line if absolute else _url(fs, posixpath.join(folder, line)))
    if not entries:
        raise InputNotFoundError(f"dataset.path: file list {url!r} names no inputs.")
    return entries


def _expand(entry: str, exclude: str | None, fmt: str | None) -> list[tuple[str, str, dict[str, Any]]]:
    """(url, name relative to its root, fsspec info) of every file an entry names, in a stable order.

    A folder contributes its JSONL and Parquet files (any file when `fmt` is set) except hidden ones
    (a name below it starting with . or _); a glob, every file it matches.
    """
    fs, path = fsspec.core.url_to_fs(entry)
    skip = _excluded(fs, exclude)
    folder = False
    if glob.has_magic(path):
        root = _static_prefix(path)
        matches = fs.glob(path, detail=True)
        files = {p: i for p, i in matches.items() if i.get("type") == "file"}
    elif fs.isdir(path):
        root, folder = path.rstrip("/"), True
        files = fs.find(path, detail=True)
        if fmt is None:
            files = {p: i for p, i in files.items() if detect_format(p)}
    elif fs.isfile(path):
        root = posixpath.dirname(path)
        files = {path: fs.info(path)}
    else:
        raise InputNotFoundError(f"dataset.path: {entry!r} does not exist.")
    found = []
    for file in sorted(files):
        relative = posixpath.relpath(file, root) if root else file.lstrip("/")
        if skip and (file == skip or file.startswith(skip + "/")):
            continue
        if folder and _hidden(relative):  # names a glob or list gives are read whatever they are
            continue
        found.append((_url(fs, file), relative, files[file]))
    return found


def _excluded(fs: fsspec.AbstractFileSystem, exclude: str | None) -> str | None:
    """The output folder as a path on `fs` (so a rerun never reads its own outputs), if on the same fs."""
    if not exclude:
        return None
    out_fs, out_path = fsspec.core.url_to_fs(exclude)
    return out_path.rstrip("/") if out_fs.protocol == fs.protocol else None


def discover(path: str | list[str], fmt: str | None = None, exclude: str | None = None) -> list[InputFile]:
    """Expand files, folders (recursively), globs and @file-lists into input files, in a stable order."""
    entries = [path] if isinstance(path, str) else list(path)
    expanded: list[str] = []
    for entry in entries:
        entry = str(entry)
        expanded.extend(_read_list(entry) if entry.startswith(LIST_PREFIX) else [entry])
    found = [f for entry in expanded for f in _expand(entry, exclude, fmt)]
    if not found:
        raise InputNotFoundError(f"dataset.path: no JSONL or Parquet files found under {path!r}.")
    inputs: list[InputFile] = []
    stems: dict[str, str] = {}
    for url, relative, info in found:
        kind = fmt or detect_format(url)
        if kind not in FORMAT_SUFFIXES:
            raise ConfigError(f"Cannot tell the format of {url!r}; set dataset.format=jsonl or parquet.")
        stem = _strip_suffix(relative)
        if stem in stems:
            raise ConfigError(f"Inputs {stems[stem]!r} and {url!r} would write the same output {stem!r}.")
        stems[stem] = url
        if url.lower().endswith(COMPRESSED_SUFFIXES) and infer_compression(url) is None:
            raise ConfigError(f"Cannot decompress {url!r}: its codec is missing (pip install zstandard).")
        inputs.append(InputFile(url, kind, stem, int(info.get("size") or 0), modified(info)))
    return inputs
