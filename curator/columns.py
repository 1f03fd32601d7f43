"""Working column names shared by readers, classifiers and writers (kept apart from input columns).

The run's own columns start with `_curator_`. An input column that happens to start with that prefix
is renamed on read (`_curator_input:` + its name) and renamed back on write, so no input column can
collide with a working column and every input column is written back under its own name.
"""

from __future__ import annotations

from collections.abc import Iterable

HIDDEN_PREFIX = "_curator_"
ERROR_COLUMN = "_curator_error"  # why a row is quarantined (None: a good row)
STAGE_COLUMN = "_curator_stage"  # where it went wrong: read | classify | write
RAW_COLUMN = "_curator_raw"  # the raw line (str) or bytes of a record that could not be parsed
LINE_COLUMN = "_curator_line"  # 1-based JSONL line or 0-based Parquet row, for ids and quarantine
ESCAPE = "_curator_input:"  # prefix of an input column whose own name starts with HIDDEN_PREFIX

STATS_ATTR = "curator_classify"  # DataFrame.attrs: per-classifier timing and token counts
LINES_ATTR = "curator_lines"  # DataFrame.attrs: physical lines a JSONL part spans (recorded for resume)
REPAIRED_ATTR = "curator_repaired"  # DataFrame.attrs: records whose invalid text was repaired


def escape(name: str) -> str:
    """An input column's name inside the run (unchanged unless it starts with the working prefix)."""
    return ESCAPE + name if name.startswith(HIDDEN_PREFIX) else name


def unescape(name: str) -> str:
    """The input column's own name again (what is written)."""
    return name[len(ESCAPE) :] if name.startswith(ESCAPE) else name


def is_working(name: object) -> bool:
    """True for the run's own columns, which are never written as data."""
    return isinstance(name, str) and name.startswith(HIDDEN_PREFIX) and not name.startswith(ESCAPE)


def data_columns(columns: Iterable[object]) -> list[object]:
    """The columns that are data (input or classifier columns), in order."""
    return [c for c in columns if not is_working(c)]
