"""Paths compared as the filesystem sees them: symlinks resolved locally, normalised on other filesystems."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from typing import IO, Any

import fsspec
from fsspec.core import OpenFile
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import infer_compression

Options = Mapping[str, Any] | None  # fsspec storage options (dataset./output.storage_options)


def absolute(path: str) -> str:
    """A local path made absolute (`~` expanded); URLs unchanged."""
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def url_to_fs(url: str, options: Options = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem of a path or URL, built with the storage options (endpoints, ...), and the path."""
    if literal_local(url):
        fs = LocalFileSystem()
        return fs, fs._strip_protocol(url)
    return fsspec.core.url_to_fs(url, **dict(options or {}))


def open_url(url: str, mode: str = "rb", options: Options = None, **kwargs: Any) -> IO[bytes]:
    """fsspec.open with the storage options (a context manager, like fsspec.open)."""
    if literal_local(url):
        compression = kwargs.pop("compression", None)
        compression = infer_compression(url) if compression == "infer" else compression
        return OpenFile(LocalFileSystem(), url, mode, compression=compression, **kwargs)  # type: ignore[return-value]
    return fsspec.open(url, mode, **kwargs, **dict(options or {}))  # type: ignore[return-value]


def literal_local(url: str) -> bool:
    """A local path with `::` in a name: fsspec reads `in/a::b.jsonl` as a chain of URLs and opens `in/a`.
    A real chain starts with a protocol (`simplecache::s3://...`); this does not."""
    head = url.split("::", 1)[0]
    return "::" in url and "://" not in head and head not in fsspec.available_protocols()


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """True for the local filesystem (the only one with symlinks, PIDs and exclusive creates we can trust)."""
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def real_path(url: str, options: Options = None) -> tuple[str, str]:
    """(filesystem, path) of a URL with symlinks followed (local) or `.`/`..`/`//` removed (fsspec URLs)."""
    fs, path = url_to_fs(url, options)
    if is_local(fs):
        return "file", os.path.realpath(os.path.expanduser(path))
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol, posixpath.normpath("/" + path.strip("/"))


def inside(path: tuple[str, str], folder: tuple[str, str]) -> bool:
    """True when `path` is `folder` or below it, on the same filesystem (both from real_path)."""
    if path[0] != folder[0]:
        return False
    return path[1] == folder[1] or path[1].startswith(folder[1].rstrip("/") + "/")


def move_file(fs: fsspec.AbstractFileSystem, source: str, target: str) -> None:
    """Rename one file, names taken literally: on object stores and memory:// `mv` expands glob
    characters, so `a*.jsonl` was copied into a new folder `a*.jsonl/` and then deleted."""
    if is_local(fs):
        fs.mv(source, target)
    else:
        fs.cp_file(source, target)
        fs.rm_file(source)
