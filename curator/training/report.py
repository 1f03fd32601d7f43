"""Reports of task=train / task=evaluate: summary.json, an HTML page with the confusion matrix, a table."""

from __future__ import annotations

import html
import json
import os
from typing import Any

from curator.report import save_summary

SCORES = ("rows", "accuracy", "macro_recall", "macro_f1", "mae", "rmse", "pearson", "rounded_agreement")


def _scores(name: str, metrics: dict[str, Any]) -> str:
    cells = "".join(f"<td>{html.escape(str(metrics[k]))}</td>" for k in SCORES if k in metrics)
    heads = "".join(f"<th>{k}</th>" for k in SCORES if k in metrics)
    return f"<h2>{html.escape(name)}</h2><table><tr>{heads}</tr><tr>{cells}</tr></table>"


def _confusion(metrics: dict[str, Any]) -> str:
    confusion = metrics.get("confusion")
    if not confusion:
        return ""
    labels = [html.escape(label) for label in confusion["labels"]]
    head = "<tr><th>gold \\ predicted</th>" + "".join(f"<th>{label}</th>" for label in labels) + "</tr>"
    rows = "".join(
        f"<tr><th>{label}</th>"
        + "".join(
            f'<td class="{"hit" if i == j else "miss" if n else ""}">{n}</td>' for j, n in enumerate(row)
        )
        + "</tr>"
        for i, (label, row) in enumerate(zip(labels, confusion["matrix"], strict=True))
    )
    return f"<h3>Confusion matrix</h3><table>{head}{rows}</table>"


def render(summary: dict[str, Any]) -> str:
    """A self-contained page: the scores and confusion matrix of each evaluated or trained classifier."""
    results = summary.get("classifiers") or {summary.get("name", "head"): summary.get("validation", {})}
    body = "".join(_scores(name, m) + _confusion(m) for name, m in results.items())
    data = html.escape(
        json.dumps({k: v for k, v in summary.items() if k != "classifiers"}, indent=2, default=str)
    )
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
        ".hit{background:#cfc}.miss{background:#fcc}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>curator {summary['task']}</title>"
        f"<style>{style}</style></head><body><h1>task={summary['task']}</h1>{body}<pre>{data}</pre></body></html>"
    )


def format_table(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    results = summary.get("classifiers") or {summary.get("name", "head"): summary.get("validation", {})}
    lines = [f"task={summary['task']} ({summary.get('seconds')} s)"]
    for name, metrics in results.items():
        lines.append(
            f"  {name}: " + ", ".join(f"{k} {metrics[k]}" for k in SCORES if metrics.get(k) is not None)
        )
    if "distillation" in summary:
        d = summary["distillation"]
        lines.append(
            f"  teacher {d['classifier']}: agreement {d['agreement']}, speed ratio {d['speed_ratio']}"
        )
    if "classifier_yaml" in summary:
        lines.append(f"  wrote {summary['classifier_folder']} and {summary['classifier_yaml']}")
    return "\n".join(lines)


def finish(summary: dict[str, Any], folders: list[str | None], quiet: bool) -> dict[str, Any]:
    """Save summary.json and report.html into each folder given; print the table unless quiet."""
    for folder in filter(None, folders):
        save_summary(summary, folder)
        with open(os.path.join(folder, "report.html"), "w", encoding="utf-8") as handle:
            handle.write(render(summary))
    if not quiet:
        print(format_table(summary))
    return summary
