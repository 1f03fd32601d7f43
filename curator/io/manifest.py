"""The done-manifest `<output>/.curator/manifest.jsonl`: a header with the config fingerprint, then one
JSON line per finished unit, appended only after all of that unit's outputs are renamed into place. A
rerun skips what it lists, so killing a run at any moment loses at most the units in flight."""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import fsspec

from curator.errors import ConfigError
from curator.io.lock import MANIFEST, TMP_MARK, live_temporary
from curator.io.partitions import Part
from curator.io.paths import Options, url_to_fs
from curator.io.writers import atomic_write

log = logging.getLogger(__name__)

SUMMARY = "_summary.json"  # beside the outputs; `_` keeps it out of Arrow/Dask dataset reads
VERSION = 1
MODES = ("resume", "overwrite", "error")


def fingerprint(settings: dict[str, Any]) -> str:
    """A short stable hash of everything that decides what the outputs contain."""
    text = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two settings trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    if json.dumps(old, sort_keys=True, default=str) == json.dumps(new, sort_keys=True, default=str):
        return []
    return [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def signature(part: Part) -> dict[str, Any]:
    """What must still match for a finished unit to count as done: its input file's size and change time."""
    return {"size": part.file.size, "modified": part.file.modified}


@dataclass
class Manifest:
    """The manifest of one output folder: finished units by name, and where to append more."""

    fs: fsspec.AbstractFileSystem
    root: str  # the output folder, as a path on fs
    header: dict[str, Any]
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return posixpath.join(self.root, MANIFEST)

    def done(self, part: Part) -> dict[str, Any] | None:
        """The entry of a unit finished earlier from the same input (size and change time unchanged)."""
        entry = self.entries.get(part.name)
        if entry and entry.get("input") == part.path and entry.get("signature") == signature(part):
            return entry
        return None

    def stale(self, parts: Iterable[Part]) -> list[dict[str, Any]]:
        """Entries of this run's input files that no longer match them (the file changed, or its split)."""
        paths = {p.path for p in parts}
        current = {p.name for p in parts if self.done(p)}
        return [e for n, e in self.entries.items() if e.get("input") in paths and n not in current]

    def others(self, parts: Iterable[Part]) -> list[dict[str, Any]]:
        """Entries of input files this run does not read (renamed, deleted, or another dataset.path)."""
        paths = {p.path for p in parts}
        return [e for e in self.entries.values() if e.get("input") not in paths]

    def record(self, entries: list[dict[str, Any]]) -> None:
        """Append finished units in one write (all outputs of each are already in place)."""
        for entry in entries:
            self.entries[entry["unit"]] = entry
        text = "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in entries)
        try:
            with self.fs.open(self.path, "ab") as handle:
                handle.write(text.encode("utf-8"))
        except (NotImplementedError, ValueError):  # object stores without append: rewrite it whole
            self.rewrite()

    def rewrite(self) -> None:
        """Write header and entries afresh, atomically (drops torn or superseded lines)."""
        lines = [self.header, *self.entries.values()]
        text = "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in lines)
        atomic_write(self.fs, self.path, lambda handle: handle.write(text.encode("utf-8")))

    def remove_outputs(self, entries: Iterable[dict[str, Any]]) -> None:
        """Delete the outputs these entries recorded and forget them."""
        for entry in list(entries):
            for name in entry.get("outputs", []):
                path = posixpath.join(self.root, name)
                if self.fs.exists(path):
                    self.fs.rm_file(path)
            self.entries.pop(entry["unit"], None)


def _load(fs: fsspec.AbstractFileSystem, path: str) -> tuple[dict | None, dict[str, dict], bool]:
    """Header, latest entry per unit, and whether the file needs tidying (a torn or unreadable line)."""
    if not fs.exists(path):
        return None, {}, False
    raw = fs.cat_file(path).decode("utf-8", errors="replace")
    header, entries, untidy = None, {}, not raw.endswith("\n")
    for line in raw.splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            untidy = True  # a run killed mid-append: that unit is simply done again
            continue
        if "manifest" in item and header is None:
            header = item
        elif "unit" in item:
            entries[item["unit"]] = item
    if header is None:  # entries under no known configuration are not trusted
        return None, {}, True
    return header, entries, untidy


def open_manifest(output: str, settings: dict[str, Any], mode: str, options: Options = None) -> Manifest:
    """Check the output folder against this run's settings, then return its manifest (created if new).

    resume: finished units are skipped, but only under the same fingerprint; overwrite: the previous
    run's recorded outputs are removed first; error: refuse a folder that already holds a run.
    `options` (output.storage_options) build the filesystem; they are never part of the fingerprint.
    """
    if mode not in MODES:
        raise ConfigError(f"output.mode={mode!r}: choose one of {', '.join(MODES)}.")
    fs, root = url_to_fs(output, options)
    root = root.rstrip("/")
    header, entries, untidy = _load(fs, posixpath.join(root, MANIFEST))
    current = fingerprint(settings)
    new_header = {"manifest": VERSION, "fingerprint": current, "settings": settings, "created": time.time()}
    manifest = Manifest(fs, root, header or new_header, entries)
    if header is not None and mode == "error":
        raise ConfigError(
            f"output.path {output!r} already holds a run ({len(entries)} finished unit(s)); "
            "use output.mode=resume to continue it or output.mode=overwrite to replace it."
        )
    if header is not None and mode == "overwrite":
        manifest.remove_outputs(entries.values())
        for name in (MANIFEST, SUMMARY):
            if fs.exists(posixpath.join(root, name)):
                fs.rm_file(posixpath.join(root, name))
        manifest.header, header = new_header, None
    if header is not None and header.get("fingerprint") != current:
        changes = _differences(header.get("settings", {}), settings) or ["(manifest from another version)"]
        raise ConfigError(
            f"output.path {output!r} holds results of a different configuration "
            f"(fingerprint {header.get('fingerprint')} -> {current}); changed: {'; '.join(changes[:10])}. "
            "Reusing them would mix outputs: choose another output.path, or pass output.mode=overwrite "
            "to replace them."
        )
    remove_temporaries(fs, root)
    if header is None or untidy:
        manifest.rewrite()
    return manifest


def remove_temporaries(fs: fsspec.AbstractFileSystem, root: str) -> int:
    """Delete half-written files killed runs left behind (`*.curator-tmp-*`); return how many.

    Called while holding the output folder's lock; a file another live process on this host is still
    writing is left alone all the same.
    """
    if not fs.isdir(root):
        return 0
    names = [p for p in fs.find(root) if TMP_MARK in posixpath.basename(p)]
    stale = [p for p in names if not live_temporary(posixpath.basename(p))]
    for path in stale:
        fs.rm_file(path)
    if stale:
        log.info("Removed %d temporary file(s) left by an interrupted run", len(stale))
    return len(stale)
