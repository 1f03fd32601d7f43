"""Sum per-file counts into a run summary; print it and keep it as JSON in the run directory."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pandas as pd

COUNTS = ("read", "written", "filtered", "quarantined")  # per unit and per run: read = the other three
EXAMPLES = 3  # example snippets per label in the report
EXAMPLE_CHARS = 200  # code points per snippet


def label_examples(
    rows: pd.DataFrame, column: str, text_field: str, k: int = EXAMPLES, chars: int = EXAMPLE_CHARS
) -> dict[str, list[str]]:
    """The first `k` texts of each label of `column`, in row order, cut to `chars` code points (…);
    small on purpose: it travels with a unit's counts."""
    if column not in rows.columns or text_field not in rows.columns:
        return {}
    first = rows[[column, text_field]].groupby(column, sort=False, dropna=True).head(k)
    out: dict[str, list[str]] = {}
    for label, text in zip(first[column], first[text_field], strict=True):
        text = str(text)
        out.setdefault(str(label), []).append(text[:chars] + ("…" if len(text) > chars else ""))
    return out


def merge_examples(stats: Sequence[dict[str, Any]], k: int = EXAMPLES) -> dict[str, dict[str, list[str]]]:
    """The first `k` examples of each label over all units, in the order the units are given (input
    order); units skipped as done by an earlier run carry none."""
    merged: dict[str, dict[str, list[str]]] = {}
    for s in stats:
        for column, by_label in (s.get("examples") or {}).items():
            into = merged.setdefault(column, {})
            for label, texts in by_label.items():
                have = into.setdefault(label, [])
                have.extend(texts[: max(0, k - len(have))])
    return merged


def summarise(stats: Sequence[dict[str, Any]], seconds: float, output_path: str) -> dict[str, Any]:
    """Totals, label distributions and throughput of a run; read = written + filtered + quarantined."""
    totals = {key: sum(s[key] for s in stats) for key in COUNTS}
    totals["repaired"] = sum(s.get("repaired") or 0 for s in stats)  # invalid text replaced with U+FFFD
    stages: Counter = Counter()
    for s in stats:
        stages.update(s.get("quarantined_by_stage") or {})
    totals["quarantined_by_stage"] = dict(stages)
    labels: dict[str, Counter] = {}
    for s in stats:
        for column, counts in s["labels"].items():
            labels.setdefault(column, Counter()).update(counts)
    fresh = [s for s in stats if s.get("status", "done") == "done"]  # not units skipped as done before
    classified = sum(s["read"] - s["quarantined"] for s in fresh)
    engine: dict[str, dict[str, float]] = {}
    for s in stats:
        for name, part in s.get("classify", {}).items():
            into = engine.setdefault(name, {})
            for key, value in part.items():
                if not isinstance(value, (dict, str)):  # histograms are merged below, numerics next
                    into[key] = into.get(key, 0) + value
            for kind in ("dtype", "attention"):  # per worker: dtype=auto differs by CPU, a compiler by host
                if kind in part:
                    into.setdefault(f"{kind}_by_worker", {})[part.get("worker", "?")] = part[kind]
    for part in engine.values():
        for kind in ("dtype", "attention"):
            if f"{kind}_by_worker" in part:
                part[kind] = ", ".join(sorted(set(part[f"{kind}_by_worker"].values())))
        part["docs_per_task_second"] = (
            round(part["documents"] / part["seconds"], 2) if part["seconds"] else None
        )
        part["padding_efficiency"] = (
            round(part["real_tokens"] / part["padded_tokens"], 4) if part["padded_tokens"] else None
        )
    add_device_figures(engine, stats)
    return {
        **totals,
        "files": len({s["input"] for s in stats}),
        "parts": len(stats),
        "labels": {column: dict(counts.most_common()) for column, counts in labels.items()},
        "seconds": round(seconds, 3),
        "docs_per_second": round(classified / seconds, 2) if seconds > 0 else None,
        "classifiers": engine,
        "histograms": merge_histograms(stats),
        "examples": merge_examples(stats),
        "output_path": output_path,
        "per_file": [{k: v for k, v in s.items() if k != "examples"} for s in stats],
    }


def worker_seconds(stats: Sequence[dict[str, Any]]) -> float:
    """Wall seconds the workers spent on this run's tasks: per worker, first task start to last end."""
    spans: dict[str, list[float]] = {}
    for s in stats:
        timing = s.get("timing")
        if timing and timing.get("finished") is not None:
            span = spans.setdefault(timing["worker"], [timing["started"], timing["finished"]])
            span[0], span[1] = min(span[0], timing["started"]), max(span[1], timing["finished"])
    return sum(end - start for start, end in spans.values())


def add_device_figures(engine: dict[str, dict[str, Any]], stats: Sequence[dict[str, Any]]) -> None:
    """Per classifier: `device_busy` (the share of the workers' wall time the device had a batch) and
    host seconds by stage (read and write are the units', shared by the classifiers that read them)."""
    wall = worker_seconds(stats)
    read = sum((s.get("timing") or {}).get("read", 0.0) for s in stats)
    write = sum((s.get("timing") or {}).get("write", 0.0) for s in stats)
    for part in engine.values():
        busy = part.get("device_seconds")
        part["device_busy"] = round(busy / wall, 4) if wall and busy is not None else None
        part["host_seconds"] = {
            "read": round(read, 4),
            "tokenise": round(part.get("tokenise_seconds", 0.0), 4),
            "postprocess": round(part.get("postprocess_seconds", 0.0), 4),
            "write": round(write, 4),
        }


def merge_histograms(stats: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Add up the per-file score histograms of every classifier (same bins everywhere)."""
    merged: dict[str, dict[str, Any]] = {}
    for s in stats:
        for part in s.get("classify", {}).values():
            for column, hist in part.get("histograms", {}).items():
                empty = {"range": hist["range"], "counts": [0] * len(hist["counts"])}
                into = merged.setdefault(column, empty)
                into["counts"] = [a + b for a, b in zip(into["counts"], hist["counts"], strict=True)]
    return merged


def format_summary(summary: dict[str, Any], top: int = 10) -> str:
    """A short human-readable summary for the terminal."""
    lines = [
        f"Documents read {summary['read']}, written {summary['written']}, "
        f"filtered {summary['filtered']}, quarantined {summary['quarantined']} "
        f"({summary['files']} file(s))",
        f"Throughput {summary['docs_per_second']} docs/s over {summary['seconds']} s",
    ]
    stages = summary.get("quarantined_by_stage") or {}
    if stages or summary.get("repaired"):
        where = ", ".join(f"{stage} {count}" for stage, count in sorted(stages.items())) or "none"
        lines.append(
            f"Quarantined by stage: {where}; repaired (invalid text → U+FFFD): {summary.get('repaired', 0)}"
        )
    for column, counts in summary["labels"].items():
        shown = list(counts.items())[:top]
        rest = len(counts) - len(shown)
        width = max((len(k) for k, _ in shown), default=0)
        lines.append(f"{column}:")
        lines += [f"  {label:<{width}}  {count}" for label, count in shown]
        if rest > 0:
            lines.append(f"  ... and {rest} more label(s)")
    lines.append(f"Output: {summary['output_path']}")
    return "\n".join(lines)


def save_summary(summary: dict[str, Any], folder: str) -> str:
    """Write summary.json into `folder` and return its path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "summary.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2, ensure_ascii=False)
    return path
