"""`curator-classifiers`: every shipped classifier listed with model, columns and labels, no model loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curator.catalog import main
from tests.test_config import CONF


def listing(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict]:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_shipped_classifier_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    entries = {e["name"]: e for e in listing(capsys)}
    assert sorted(entries) == sorted(p.stem for p in (CONF / "classifier").glob("*.yaml"))
    assert len(entries["domain"]["labels"]) == 26 and entries["domain"]["model"] == "nvidia/domain-classifier"
    assert entries["quality"]["labels"] == ["High", "Medium", "Low"]
    assert entries["aegis"]["labels"][:3] == ["unknown", "safe", "O1"]
    assert entries["fineweb_edu"]["columns"] == ["fineweb-edu-score", "fineweb-edu-score-int"]
    assert "prompt_complexity_score" in entries["prompt_task_complexity"]["columns"]


def test_user_configs_and_readable_text(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "classifier").mkdir()
    (tmp_path / "classifier" / "tickets.yaml").write_text(
        "family: zero_shot\nmodel: m\npred_column: ticket_pred\nlabels: [{name: bug}, {name: billing}]\n"
    )
    (entry,) = listing(capsys, "tickets", "--config-dir", str(tmp_path))
    assert entry["labels"] == ["bug", "billing"] and entry["columns"] == ["ticket_pred"]
    assert main(["fineweb_mixtral_edu"]) == 0
    text = capsys.readouterr().out
    assert "fineweb-mixtral-edu-score-label" in text and "high_quality, low_quality" in text


def test_aegis_lists_its_unsafe_probability_as_written_only_with_score_unsafe(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The shipped config names score_column, but the column is written only with score_unsafe=true: the
    listing showed it as always written."""
    entries = {e["name"]: e for e in listing(capsys)}
    assert entries["aegis"]["columns"][:2] == ["aegis_pred", "aegis_unsafe_prob (with score_unsafe=true)"]
    (tmp_path / "classifier").mkdir()
    (tmp_path / "classifier" / "guard.yaml").write_text(
        "family: llm_guard\nmodel: m\npred_column: guard_pred\nscore_unsafe: true\nscore_column: p_unsafe\n"
    )
    (entry,) = listing(capsys, "guard", "--config-dir", str(tmp_path))
    assert entry["columns"][:2] == ["guard_pred", "p_unsafe"]


def test_unknown_name_lists_the_available_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["domian"])
    assert stop.value.code == 2 and "domain" in capsys.readouterr().err


def test_a_config_dir_that_is_not_a_folder_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """It was ignored: the listing then lacked the user's classifiers without a word."""
    with pytest.raises(SystemExit) as done:
        main(["--config-dir", str(tmp_path / "no-such-conf")])
    assert done.value.code == 2 and "is not a folder" in capsys.readouterr().err
