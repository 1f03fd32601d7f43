"""The run report as one self-contained HTML page: counts, label bar charts, score histograms, config.

No external assets: the summary is embedded as JSON and a few lines of script draw the charts as SVG,
so the page opens anywhere (and a headless browser in the tests proves the charts render).
"""

from __future__ import annotations

import html
import json
import os
from importlib import resources
from typing import Any

SECRET_HINTS = ("token", "password", "secret")


def redact(value: Any) -> Any:
    """Blank every value whose key looks secret (configs never hold tokens; this is a second guard)."""
    if isinstance(value, dict):
        return {
            k: "***" if any(h in str(k).lower() for h in SECRET_HINTS) and v else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def render(summary: dict[str, Any], config: dict[str, Any] | None = None) -> str:
    """The page's HTML text."""
    template = (resources.files("curator") / "templates" / "report.html").read_text(encoding="utf-8")
    data = {
        "summary": {k: v for k, v in summary.items() if k != "per_file"},
        "files": [
            {k: f.get(k) for k in ("input", "output", "status", "read", "written", "filtered", "quarantined")}
            for f in summary.get("per_file", [])
        ],
        "config": redact(config or {}),
    }
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")  # no early </script>
    title = html.escape(f"curator report: {summary.get('output_path', '')}")
    return template.replace("{{TITLE}}", title).replace("{{DATA}}", payload)


def save_html_report(summary: dict[str, Any], folder: str, config: dict[str, Any] | None = None) -> str:
    """Write report.html into `folder` and return its path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "report.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render(summary, config))
    return path
