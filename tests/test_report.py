"""The HTML report: rendered by a real headless browser, charts present, no secrets."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from curator import pipeline
from curator.cluster.secrets import mask_override
from curator.report import label_examples, summarise
from curator.report_html import render, save_html_report
from tests.conftest import DOCS, write_jsonl

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
    busy = summary["classifiers"]["zero_shot_domain"]["device_busy"]
    assert "device busy" in dom and f"{100 * busy:.1f}%" in dom  # the device table


def test_secret_looking_config_values_never_reach_the_page() -> None:
    summary = {"read": 0, "written": 0, "filtered": 0, "quarantined": 0, "labels": {}, "output_path": "x"}
    page = render(summary, {"hub": {"hf_token": "hf_SECRET123", "model": "m"}, "api_password": "pw123"})
    assert "hf_SECRET123" not in page and "pw123" not in page and '"model": "m"' in page
    hidden = {
        "HF_TOKEN": "a1",
        "api-key": "a2",
        "client_secret_id": "a3",
        "aws_credentials": "a4",
        "passwd": "a5",
    }
    page = render(summary, hidden)
    assert not any(f'"{value}"' in page for value in hidden.values())


def test_settings_that_merely_mention_tokens_are_shown_in_the_page() -> None:
    """A substring test hid `inference.token_budget`, `max_new_tokens` and `tokenizer_threads` as ***."""
    summary = {"read": 0, "written": 0, "filtered": 0, "quarantined": 0, "labels": {}, "output_path": "x"}
    settings = {"token_budget": 4096, "max_new_tokens": 100, "tokenizer_threads": 2, "keyword": "k"}
    page = render(summary, {"inference": settings})
    assert all(f'"{key}": {json.dumps(value)}' in page for key, value in settings.items())


def test_secrets_inside_setting_values_and_sweep_overrides_are_masked() -> None:
    """Key names alone missed a token assigned in a job-script line, a password in an endpoint URL, and
    every secret in a sweep's overrides (sweep_summary.json, the sweep table)."""
    summary = {"read": 0, "written": 0, "filtered": 0, "quarantined": 0, "labels": {}, "output_path": "x"}
    config = {
        "cluster": {
            "job_script_prologue": ["export HF_TOKEN=hf_SECRET123", "export TOKENIZERS_PARALLELISM=false"]
        },
        "dataset": {"storage_options": {"endpoint_url": "https://user:pw123@minio:9000"}},
    }
    page = render(summary, config)
    assert "hf_SECRET123" not in page and "pw123" not in page
    assert "export HF_TOKEN=***" in page and "TOKENIZERS_PARALLELISM=false" in page and "@minio:9000" in page
    assert [mask_override(o) for o in ("+dataset.storage_options.secret=s3cr3t", "+hf_token=abc")] == [
        "+dataset.storage_options.secret=***",
        "+hf_token=***",
    ]
    assert mask_override("filter.keep=[Games]") == "filter.keep=[Games]"
    assert mask_override("cluster.job_script_prologue=[export HF_TOKEN=hf_x,x]") == (
        "cluster.job_script_prologue=[export HF_TOKEN=***,x]"
    )


def test_data_cannot_close_the_script_element() -> None:
    summary = {"read": 1, "labels": {"</script><b>x": 1}, "output_path": "x"}
    assert "</script><b>" not in render(summary)


def test_label_examples_are_the_first_k_texts_of_each_label_cut_short() -> None:
    rows = pd.DataFrame(
        {
            "pred": ["a", "b", "a", None, "a", "a", "b"],
            "text": ["a1", "b1", "x" * 250, "none", "a3", "a4", "b2"],
        }
    )
    assert label_examples(rows, "pred", "text") == {"a": ["a1", "x" * 200 + "…", "a3"], "b": ["b1", "b2"]}
    assert label_examples(rows, "pred", "text", k=1, chars=1) == {"a": ["a…"], "b": ["b…"]}
    assert label_examples(rows, "pred", "missing") == {}


def test_summary_keeps_the_first_k_examples_per_label_in_input_order() -> None:
    def unit(name: str, examples: dict) -> dict:
        counts = dict.fromkeys(("read", "written", "filtered", "quarantined"), 1)
        return {**counts, "unit": name, "input": name, "labels": {}, "examples": {"pred": examples}}

    stats = [unit("1", {"a": ["a1", "a2"]}), unit("2", {"a": ["a3", "a4"], "b": ["b1"]}), unit("3", {})]
    summary = summarise(stats, 1.0, "out")
    assert summary["examples"] == {"pred": {"a": ["a1", "a2", "a3"], "b": ["b1"]}}
    assert all("examples" not in f for f in summary["per_file"])  # once, not per unit


HOSTILE = "<script>document.body.setAttribute('data-pwned', '1')</script><b>bold</b> & the match final"


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package `chromium`)")
def test_report_shows_example_snippets_per_label_as_text(make_config, tmp_path: Path) -> None:
    """Each label lists the first 3 documents that landed in it (200 characters); markup in a document
    is shown as text, never run."""
    texts = [text for _, text in DOCS] + [HOSTILE, "The league final " + "went to penalties. " * 30]
    texts += [f"Match report {i}: the home side won the league game." for i in range(4)]
    records = [{"id": f"d{i}", "text": text} for i, text in enumerate(texts)]
    write_jsonl(tmp_path / "docs" / "a.jsonl", records[:5])
    write_jsonl(tmp_path / "docs" / "b.jsonl", records[5:])
    cfg = make_config(f"dataset.path={tmp_path / 'docs'}")
    summary = pipeline.run(cfg)
    # what landed in each label, in input order (the output files of the units, in order)
    landed: dict[str, list[str]] = {}
    for unit in summary["per_file"]:
        for line in (tmp_path / "out" / unit["output"]).open():
            row = json.loads(line)
            landed.setdefault(row["domain_pred"], []).append(row["text"])
    cut = {
        label: [t[:200] + ("…" if len(t) > 200 else "") for t in found[:3]] for label, found in landed.items()
    }
    assert summary["examples"] == {"domain_pred": cut}
    assert any(len(found) > 3 for found in landed.values())  # the cap was exercised
    page = Path(save_html_report(summary, str(tmp_path / "run"), dataclasses.asdict(cfg)))
    dom = rendered_dom(page)
    assert 'data-rendered="true"' in dom
    shown = re.findall(r'<li class="example" data-label="([^"]+)">(.*?)</li>', dom, re.S)
    assert len(shown) == sum(len(v) for v in cut.values())
    assert (
        "&lt;script&gt;document.body.setAttribute('data-pwned', '1')&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt; "
        "&amp; the match final"
    ) in [text for _, text in shown]
    assert re.search(r"<body[^>]*data-pwned", dom) is None  # the document's script never ran
    assert "<b>bold</b>" not in dom.split('id="data"')[0]  # no element made from the document's markup


def test_device_busy_is_device_time_over_each_workers_wall_time() -> None:
    """Two workers, each busy from its first task's start to its last task's end; read/write summed."""

    def unit(worker: str, started: float, finished: float, device: float) -> dict:
        classify = {
            "c": {
                "documents": 1,
                "seconds": 1.0,
                "real_tokens": 1,
                "padded_tokens": 1,
                "device_seconds": device,
                "tokenise_seconds": 0.5,
                "postprocess_seconds": 0.25,
            }
        }
        timing = {"worker": worker, "started": started, "finished": finished, "read": 0.1, "write": 0.2}
        return {
            "read": 1,
            "written": 1,
            "filtered": 0,
            "quarantined": 0,
            "input": worker,
            "labels": {},
            "classify": classify,
            "timing": timing,
        }

    stats = [unit("w1", 0.0, 4.0, 3.0), unit("w1", 2.0, 10.0, 5.0), unit("w2", 100.0, 110.0, 4.0)]
    figures = summarise(stats, 200.0, "out")["classifiers"]["c"]
    assert figures["device_busy"] == round(12.0 / (10.0 + 10.0), 4)
    assert figures["host_seconds"] == {"read": 0.3, "tokenise": 1.5, "postprocess": 0.75, "write": 0.6}
