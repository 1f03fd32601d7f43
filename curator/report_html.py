"""The run report as one self-contained HTML page: counts, label bar charts, score histograms, config.

No external assets: the summary is embedded as JSON and a few lines of script draw the charts as SVG,
so the page opens anywhere (and a headless browser in the tests proves the charts render).
"""

from __future__ import annotations

import html
import json
import os
import re
from importlib import resources
from typing import Any

from curator.cluster.secrets import mask_secrets

# A key is hidden when any of its words is in SECRET_WORDS, or its last word in SECRET_LAST_WORDS: `hf_token`,
# `api_key`, `db_password`, `client_secret_id`; not `token_budget`, `max_new_tokens`, `tokenizer_threads`
SECRET_WORDS = frozenset({"password", "passwd", "secret", "credential", "credentials"})
SECRET_LAST_WORDS = frozenset({"token", "key", "apikey"})
# Inside storage_options (which may hold key, secret, token, account_key, ...) only these are shown
SHOWN_STORAGE_OPTIONS = ("endpoint_url", "region_name", "anon", "use_ssl", "requester_pays", "client_kwargs")


def redact(value: Any, options: bool = False) -> Any:
    """Blank every value whose key looks secret (configs never hold tokens; this is a second guard), and
    every storage option but a few known to be harmless (an endpoint, a region)."""
    if isinstance(value, dict):
        return {k: _redacted(str(k).lower(), v, options) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, options) for v in value]
    return mask_secrets(value) if isinstance(value, str) else value


def looks_secret(name: str) -> bool:
    """Whether a config key names a secret, by its words (split at anything but letters and digits)."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    return bool(words) and (words[-1] in SECRET_LAST_WORDS or not SECRET_WORDS.isdisjoint(words))


def _redacted(name: str, value: Any, options: bool) -> Any:
    hidden = looks_secret(name) or (options and name not in SHOWN_STORAGE_OPTIONS)
    if hidden and value not in (None, "", {}, []):
        return "***"
    return redact(value, options or name == "storage_options")


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
