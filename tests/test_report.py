"""The HTML report: rendered by a real headless browser, charts present, no secrets."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from curator import pipeline
from curator.report_html import render, save_html_report
from tests.conftest import DOCS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def rendered_dom(page: Path) -> str:
    """The page's DOM after its scripts ran, as headless Chromium sees it."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package `chromium`)")
def test_report_renders_label_charts_and_score_histograms(
    make_config, docs_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config(f"dataset.path={docs_dir}")
    summary = pipeline.run(cfg)
    assert sum(summary["histograms"]["domain_score"]["counts"]) == len(DOCS)
    page = Path(save_html_report(summary, str(tmp_path / "run"), dataclasses.asdict(cfg)))
    dom = rendered_dom(page)
    assert 'data-rendered="true"' in dom
    bars = re.findall(r'<rect class="bar"[^>]*data-label="([^"]+)"', dom)
    assert sorted(bars) == sorted(label for label, _ in DOCS)  # one bar per label of domain_pred
    assert len(re.findall(r'<rect class="hist"', dom)) == 20  # the domain_score histogram's bins
    assert "read = written + filtered + quarantined" in dom
    assert "zero_shot_domain" in dom and str(docs_dir) in dom  # engine table and composed config


def test_secret_looking_config_values_never_reach_the_page() -> None:
    summary = {"read": 0, "written": 0, "filtered": 0, "quarantined": 0, "labels": {}, "output_path": "x"}
    page = render(summary, {"hub": {"hf_token": "hf_SECRET123", "model": "m"}, "api_password": "pw123"})
    assert "hf_SECRET123" not in page and "pw123" not in page and '"model": "m"' in page


def test_data_cannot_close_the_script_element() -> None:
    summary = {"read": 1, "labels": {"</script><b>x": 1}, "output_path": "x"}
    assert "</script><b>" not in render(summary)
