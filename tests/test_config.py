"""Config composition: every option of every group, typos and wrong types, multi-classifier forms."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from curator.config import Config
from tests.conftest import compose_config

CONF = Path(str(resources.files("curator.conf")))  # conf/ at the top level, installed as curator.conf
REQUIRED = {"dataset/jsonl": ["dataset.path=/tmp/x"], "dataset/parquet": ["dataset.path=/tmp/x"]}


def group_options() -> list[tuple[str, str]]:
    """Every (group, option) pair shipped under conf/."""
    return [
        (group.name, option.stem)
        for group in sorted(p for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_"))
        for option in sorted(group.glob("*.yaml"))
    ]


def test_there_are_options_in_every_required_group() -> None:
    groups = {g for g, _ in group_options()}
    assert {"dataset", "cluster", "classifier", "filter"} <= groups


@pytest.mark.parametrize(("group", "option"), group_options())
def test_every_option_of_every_group_composes(group: str, option: str) -> None:
    cfg = compose_config([f"{group}={option}", *REQUIRED.get(f"{group}/{option}", [])])
    assert isinstance(cfg, Config)
    if group == "classifier":
        assert list(cfg.classifier) == [option]
        assert cfg.classifier[option].pred_column


def test_defaults_compose_to_the_offline_zero_shot_run() -> None:
    cfg = compose_config()
    assert cfg.dataset.name == "sample" and Path(cfg.dataset.path).is_dir()
    assert cfg.cluster.kind == "local"
    assert list(cfg.classifier) == ["zero_shot_domain"]
    assert len(cfg.classifier["zero_shot_domain"].labels) == 26
    assert cfg.filter.keep is None and cfg.filter.min_score is None


def test_misspelt_key_fails_and_names_it() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["cluster.n_wrkers=2"])
    assert "n_wrkers" in str(err.value.__cause__ or err.value)


def test_misspelt_classifier_key_fails_and_names_it() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["classifier.zero_shot_domain.batchsize=8"])
    cause = err.value.__cause__
    assert isinstance(cause, ConfigKeyError | ValidationError) or "batchsize" in str(err.value)
    assert "batchsize" in str(cause or err.value)


def test_wrong_type_fails_at_start_up() -> None:
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["classifier.zero_shot_domain.batch_size=lots"])
    assert "batch_size" in str(err.value.__cause__ or err.value)


def test_single_classifier_override_path() -> None:
    cfg = compose_config(["classifier.zero_shot_domain.model=/models/mine", "filter.keep=[Games,Sports]"])
    assert cfg.classifier["zero_shot_domain"].model == "/models/mine"
    assert cfg.filter.keep == ["Games", "Sports"]


def test_several_classifiers_compose_side_by_side_and_override_each() -> None:
    cfg = compose_config(
        ["classifier=[zero_shot_domain,zero_shot_topic]", "classifier.zero_shot_topic.temperature=0.2"]
    )
    assert list(cfg.classifier) == ["zero_shot_domain", "zero_shot_topic"]
    assert cfg.classifier["zero_shot_topic"].temperature == 0.2
    assert cfg.classifier["zero_shot_domain"].temperature == 0.05


def test_unknown_classifier_option_lists_the_available_ones() -> None:
    with pytest.raises(Exception) as err:
        compose_config(["classifier=nope"])
    assert "zero_shot_domain" in str(err.value)


@pytest.mark.slow
def test_cfg_job_and_help_from_the_command_line(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    shown = subprocess.run(
        [sys.executable, str(root / "run.py"), "--cfg", "job", "filter.min_score=0.3"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout
    assert "zero_shot_domain:" in shown and "min_score: 0.3" in shown
    helped = subprocess.run(
        [sys.executable, str(root / "run.py"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    ).stdout
    for group in ("classifier", "cluster", "dataset", "filter"):
        listed = next(line for line in helped.splitlines() if line.startswith(f"{group}: "))
        shipped = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        assert listed == f"{group}: {', '.join(shipped)}"
