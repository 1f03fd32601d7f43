"""Checks before any work: inputs and outputs never overlap (on resolved real paths, symlinks followed),
and no two units write the same output name, nor one longer than a file name may be."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from curator.errors import ConfigError
from curator.io.files import InputFile, entry_root
from curator.io.partitions import Part
from curator.io.paths import Options, inside, real_path
from curator.io.writers import NAME_MAX, OutputTarget, output_names


class OverlapError(ConfigError):
    """Output folder and input share files: a run would read its own outputs or overwrite its inputs."""


def _shown(real: tuple[str, str]) -> str:
    return real[1] if real[0] == "file" else f"{real[0]}://{real[1].lstrip('/')}"


def _named(given: str, real: tuple[str, str]) -> str:
    """A path as the user gave it, plus where it really leads when that differs."""
    return repr(given) if _shown(real) == given else f"{given!r} ({_shown(real)})"


def check_overlap(
    entries: Sequence[str],
    files: Sequence[InputFile],
    output: str,
    options: Options = None,
    output_options: Options = None,
) -> None:
    """Refuse an output folder equal to, inside or around an input entry, and an input file inside it.

    `options` and `output_options` are dataset.storage_options and output.storage_options.
    """
    out = real_path(output, output_options)
    for entry in entries:
        root = real_path(entry_root(entry, options), options)
        if inside(out, root):
            where = "is" if out == root else "is inside"
            raise OverlapError(
                f"output.path {_named(output, out)} {where} the input {_named(entry, root)}: "
                "a run must never write where it reads. Choose an output.path outside the inputs."
            )
        if inside(root, out):
            raise OverlapError(
                f"The input {_named(entry, root)} is inside output.path {_named(output, out)}: "
                "a run must never read its own outputs. Choose another output.path."
            )
    for file in files:  # a link inside an input folder can still lead into the output folder
        real = real_path(file.path, file.storage_options)
        if inside(real, out):
            raise OverlapError(
                f"The input {file.path!r} resolves to {_shown(real)}, inside output.path {output!r}: a run "
                "must never read its own outputs. Remove the link or choose another output.path."
            )


def planned_names(part: Part, target: OutputTarget) -> list[str]:
    """Every output name a unit may write: its data file, filtered rows (if kept) and quarantine file."""
    data, filtered, quarantine = output_names(part, target)
    return [data, filtered, quarantine] if target.write_filtered else [data, quarantine]


def check_names(parts: Sequence[Part], target: OutputTarget) -> None:
    """Refuse a plan where two units write one name (`a.jsonl` split in parts next to `a.part0001.jsonl`)."""
    owners: dict[str, Part] = {}
    for part in parts:
        for name in planned_names(part, target):
            if len(posixpath.basename(name).encode()) > NAME_MAX:
                raise ConfigError(
                    f"Input {_unit(part)} would write {posixpath.basename(name)!r}, a name longer than "
                    f"the {NAME_MAX} bytes a file name may have: rename the input file."
                )
            other = owners.setdefault(name, part)
            if other is not part:
                split = (part.index, other.index) != (None, None)
                hint = " (or set dataset.blocksize=null to keep files whole)" if split else ""
                raise ConfigError(
                    f"Inputs {_unit(other)} and {_unit(part)} would both write {name!r} in the output "
                    f"folder: rename or move one of them{hint}."
                )


def _unit(part: Part) -> str:
    return repr(part.path) if part.index is None else f"{part.path!r} (part {part.name})"
