"""Find input files on any fsspec filesystem and name their outputs after them (same relative name)."""

from __future__ import annotations

import glob
import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec.utils import infer_compression

from curator.errors import ConfigError, InputNotFoundError
from curator.io.lock import LOCK, MANIFEST, MARKER, data_outputs
from curator.io.paths import Options, is_local, real_path, url_to_fs

log = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
PARQUET_SUFFIXES = (".parquet", ".pq")
ARROW_SUFFIXES = (".arrow", ".feather")  # Arrow IPC, streaming (datasets.save_to_disk) or file format
FORMAT_SUFFIXES = {"jsonl": ".jsonl", "parquet": ".parquet"}  # the formats a run writes
WRITES = {"jsonl": "jsonl", "parquet": "parquet", "arrow": "parquet"}  # output.format=null: by input format
# What datasets.save_to_disk writes beside its data-*.arrow files: metadata, never inputs
SAVED_DATASET_FILES = ("state.json", "dataset_info.json", "dataset_dict.json")
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
    # dataset.storage_options: opens it again on any worker; may hold credentials, so never shown
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

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
        return self.name + FORMAT_SUFFIXES[output_format(fmt, self.format)]


def output_format(fmt: str | None, input_format: str) -> str:
    """The format a unit is written in: output.format, else its input's (Arrow inputs: Parquet)."""
    return fmt or WRITES.get(input_format, input_format)


def detect_format(path: str) -> str | None:
    """jsonl, parquet or arrow from the file name; None when the suffix says none of them."""
    lower = path.lower()
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(ARROW_SUFFIXES):
        return "arrow"
    return None


def _strip_suffix(name: str) -> str:
    for suffix in sorted(JSONL_SUFFIXES + PARQUET_SUFFIXES + ARROW_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def modified(info: dict[str, Any]) -> str:
    """A file's change marker from fsspec's info: local mtime, object-store ETag/LastModified, ..."""
    keys = ("mtime", "LastModified", "last_modified", "updated", "ETag", "etag", "blob_id", "created")
    for key in keys:
        if info.get(key) is not None:
            return str(info[key])
    return ""


def _url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """What fsspec.open needs to find `path` again: plain for local files, a URL otherwise."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def _hidden(relative: str) -> bool:
    """Names starting with . or _ (and everything below such folders) are not inputs."""
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def entry_root(entry: str, options: Options = None) -> str:
    """The file or folder an entry covers (a glob: the folder above its first wildcard), as a URL."""
    fs, path = url_to_fs(entry, options)
    return _url(fs, _static_prefix(path) if _is_glob(fs, path) else path.rstrip("/") or "/")


def _is_glob(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """A pattern to expand: a name with glob characters (`part[1].jsonl`) that exists is that file."""
    return glob.has_magic(path) and not fs.exists(path)


def _static_prefix(pattern: str) -> str:
    """The folder above a glob's first wildcard: matches are named relative to it."""
    parts = pattern.split("/")
    return "/".join(parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))])


def _read_list(entry: str, options: Options = None) -> list[str]:
    """Entries of a file list (blank lines and # comments skipped; relative to the list's folder)."""
    url = entry[len(LIST_PREFIX) :]
    fs, path = url_to_fs(url, options)
    if not fs.isfile(path):
        raise InputNotFoundError(f"dataset.path: file list {url!r} does not exist.")
    folder = posixpath.dirname(path)
    entries = []
    try:
        text = fs.cat_file(path).decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"dataset.path: file list {url!r} is not UTF-8 text ({err.reason} at byte {err.start}); "
            "save it as UTF-8, one path per line."
        ) from err
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        absolute = "://" in line or line.startswith(("/", "~"))
        entries.append(line if absolute else _url(fs, posixpath.join(folder, line)))
    if not entries:
        raise InputNotFoundError(f"dataset.path: file list {url!r} names no inputs.")
    return entries


def _expand(entry: str, fmt: str | None, options: Options = None) -> list[tuple[str, str, dict[str, Any]]]:
    """(url, name relative to its root, fsspec info) of every file an entry names, in a stable order.

    A folder contributes its JSONL, Parquet and Arrow files (any file when `fmt` is set) except hidden
    ones (a name below it starting with . or _), the metadata of a `datasets.save_to_disk` folder and,
    inside an earlier run's output folder (known by its marker), all but that run's data files; a glob,
    every file it matches. Only regular files are read: FIFOs, sockets, devices, broken symlinks and
    symlink loops are skipped with a warning.
    """
    fs, path = url_to_fs(entry, options)
    folder = False
    if _is_glob(fs, path):
        root = _static_prefix(path)
        files = _without_dataset_metadata(fs.glob(path, detail=True))
    elif fs.isdir(path):
        root, folder = path.rstrip("/"), True
        files = _without_dataset_metadata(_outside_run_folders(fs, fs.find(path, detail=True)))
        if fmt is None:  # regular files only: a link to a folder, a loop or a FIFO gets its own warning below
            unknown = {
                p for p in files if not detect_format(p) and _followed(fs, p, files[p]).get("type") == "file"
            }
            _warn_unknown_suffixes(root, sorted(unknown))
            files = {p: i for p, i in files.items() if p not in unknown}
    elif fs.exists(path) or fs.lexists(path):
        root = posixpath.dirname(path)
        files = {path: fs.info(path)}
    else:
        raise InputNotFoundError(f"dataset.path: {entry!r} does not exist.")
    found = []
    for file in sorted(files):
        relative = posixpath.relpath(file, root) if root else file.lstrip("/")
        if folder and _hidden(relative):  # names a glob or list gives are read whatever they are
            continue
        info = _followed(fs, file, files[file])
        if info.get("type") == "directory":
            if info.get("islink"):
                log.warning("Skipping %s: a link to a folder (not followed; name it in dataset.path)", file)
            continue
        if info.get("type") != "file":
            log.warning("Skipping %s: not a regular file (FIFO, socket, device, broken link or loop)", file)
            continue
        found.append((_url(fs, file), relative, info))
    return found


def _warn_unknown_suffixes(root: str, paths: list[str]) -> None:
    """Say which files of a folder are not read for their suffix (`.ndjson`, `.jsonl.bz2`, ...): a
    skipped file's records appear in no count, so its name must appear in the log."""
    names = [posixpath.relpath(p, root) for p in sorted(paths)]
    names = [n for n in names if not _hidden(n)]  # .crc, _SUCCESS and the like are skipped quietly
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        log.warning(
            "Skipping %d file(s) under %s whose suffix is not one this reads (.jsonl, .json, .parquet, "
            ".arrow, ...; .gz/.zst for JSONL): %s. Set dataset.format=jsonl or parquet to read every "
            "file of the folder as that format.",
            len(names),
            root,
            shown,
        )


def _followed(fs: fsspec.AbstractFileSystem, path: str, info: dict[str, Any]) -> dict[str, Any]:
    """fsspec's info with a symlink followed (listings describe the link itself as type "other")."""
    if not info.get("islink"):
        return info
    try:
        return fs.info(path)
    except OSError:  # dangling or a loop
        return {**info, "type": "other"}


def _without_dataset_metadata(files: dict[str, Any]) -> dict[str, Any]:
    """Drop the JSON files of `datasets.save_to_disk` folders (a folder holding state.json and .arrow
    files, and the dataset_dict.json above such folders): their data-*.arrow files are the inputs."""
    saved = {
        posixpath.dirname(p)
        for p in files
        if posixpath.basename(p) == "state.json"
        and any(q.startswith(posixpath.dirname(p) + "/") and q.endswith(".arrow") for q in files)
    }
    if not saved:
        return files

    def metadata(path: str) -> bool:
        name, folder = posixpath.basename(path), posixpath.dirname(path)
        if name == "dataset_dict.json":
            return any(s == folder or s.startswith(folder + "/") for s in saved)
        return name in SAVED_DATASET_FILES and folder in saved

    return {p: i for p, i in files.items() if not metadata(p)}


def _outside_run_folders(fs: fsspec.AbstractFileSystem, files: dict[str, Any]) -> dict[str, Any]:
    """Drop what an earlier run's output folder holds besides its data (quarantine, filtered, manifest)."""
    marks = (MARKER, MANIFEST, LOCK)
    runs = {p[: -len(m) - 1] for p in files for m in marks if p.endswith("/" + m)}
    for run in sorted(runs):
        keep = {posixpath.join(run, name) for name in data_outputs(fs, run)}
        log.info("%s is an earlier run's output folder: reading only its %d data file(s)", run, len(keep))
        files = {p: i for p, i in files.items() if not p.startswith(run + "/") or p in keep}
    return files


def expand_entries(path: str | list[str], options: Options = None) -> list[str]:
    """dataset.path as a list of files, folders and globs (each @file-list replaced by its lines)."""
    entries = [path] if isinstance(path, str) else list(path)
    expanded: list[str] = []
    for entry in entries:
        entry = str(entry)
        expanded.extend(_read_list(entry, options) if entry.startswith(LIST_PREFIX) else [entry])
    return expanded


def _distinct(
    found: list[tuple[str, str, dict[str, Any]]], options: Options = None
) -> list[tuple[str, str, dict[str, Any]]]:
    """The first of files that resolve to the same real file (overlapping entries, links): read once."""
    seen: dict[tuple[str, str], str] = {}
    kept = []
    for item in found:
        real = real_path(item[0], options)
        if real in seen:
            log.info("Reading %s once: %s is the same file", seen[real], item[0])
            continue
        seen[real] = item[0]
        kept.append(item)
    return kept


def discover(path: str | list[str], fmt: str | None = None, options: Options = None) -> list[InputFile]:
    """Expand files, folders (recursively), globs and @file-lists into input files, in a stable order.

    `options` (dataset.storage_options) build the filesystems: endpoints and the like for object stores.
    """
    entries = expand_entries(path, options)
    found = _distinct([f for entry in entries for f in _expand(entry, fmt, options)], options)
    if not found:
        raise InputNotFoundError(
            f"dataset.path: no JSONL or Parquet files (nor Arrow files) found under {path!r}."
        )
    inputs: list[InputFile] = []
    stems: dict[str, str] = {}
    for url, relative, info in found:
        kind = fmt or detect_format(url)
        if kind not in WRITES:
            raise ConfigError(
                f"Cannot tell the format of {url!r}; set dataset.format=jsonl, parquet or arrow."
            )
        stem = _strip_suffix(relative)
        if stem in stems:
            raise ConfigError(f"Inputs {stems[stem]!r} and {url!r} would write the same output {stem!r}.")
        stems[stem] = url
        if url.lower().endswith(COMPRESSED_SUFFIXES) and infer_compression(url) is None:
            raise ConfigError(f"Cannot decompress {url!r}: its codec is missing (pip install zstandard).")
        size = int(info.get("size") or 0)
        inputs.append(InputFile(url, kind, stem, size, modified(info), dict(options or {})))
    return inputs
