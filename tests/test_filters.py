"""Label and score filters: AND of conditions, defaults from the first classifier, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from curator.classifiers.zero_shot import ZeroShotClassifier
from curator.config import FilterConfig
from curator.errors import ConfigError
from curator.filters import Filter, build_filter
from curator.pipeline import run_settings
from curator.validate import check_config
from tests.conftest import MINILM, compose_config

FRAME = pd.DataFrame({"label": ["Games", "Sports", "News", "Games"], "score": [0.9, 0.4, 0.7, 0.2]})


def classifier(name: str = "d", pred: str = "label", score: str | None = "score") -> ZeroShotClassifier:
    labels = [("Games", ""), ("Sports", ""), ("News", "")]
    return ZeroShotClassifier(name, model=MINILM, labels=labels, pred_column=pred, score_column=score)


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (FilterConfig(), [True, True, True, True]),
        (FilterConfig(keep=["Games", "Sports"]), [True, True, False, True]),
        (FilterConfig(drop=["Games"]), [False, True, True, False]),
        (FilterConfig(min_score=0.5), [True, False, True, False]),
        (FilterConfig(max_score=0.4), [False, True, False, True]),
        (FilterConfig(keep=["Games"], min_score=0.5), [True, False, False, False]),
        (FilterConfig(min_score=0.4, max_score=0.7), [False, True, True, False]),
    ],
)
def test_mask(cfg: FilterConfig, expected: list[bool]) -> None:
    flt = build_filter(cfg, [classifier()])
    assert flt.mask(FRAME).tolist() == expected
    assert flt.active == (expected != [True] * 4)


def test_score_is_tested_as_a_float_not_rounded() -> None:
    frame = pd.DataFrame({"label": ["Games"], "score": np.array([2.4999], dtype=np.float32)})
    assert Filter(score_column="score", min_score=2.5).mask(frame).tolist() == [False]


def test_unknown_label_lists_the_classifier_labels() -> None:
    with pytest.raises(ValueError) as err:
        build_filter(FilterConfig(keep=["Gmaes"]), [classifier()])
    assert "Gmaes" in str(err.value) and "Sports" in str(err.value)


def test_default_columns_come_from_the_first_classifier_and_can_be_chosen() -> None:
    first, second = classifier("a", "a_pred", "a_score"), classifier("b", "b_pred", "b_score")
    flt = build_filter(FilterConfig(keep=["News"]), [first, second])
    assert (flt.column, flt.score_column) == ("a_pred", "a_score")
    flt = build_filter(FilterConfig(column="b_pred", score_column="b_score", min_score=0.1), [first, second])
    assert (flt.column, flt.score_column) == ("b_pred", "b_score")
    with pytest.raises(ValueError, match="not a prediction column"):
        build_filter(FilterConfig(column="nope", keep=["News"]), [first])


def test_score_filter_without_a_score_column_is_an_error() -> None:
    with pytest.raises(ValueError, match="need a score column"):
        build_filter(FilterConfig(min_score=0.5), [classifier(score=None)])


def test_one_label_on_the_command_line_is_a_list_of_one_with_the_same_fingerprint() -> None:
    """`filter.keep=Sports` stopped at Hydra's "str is not a ListConfig" error."""
    one = compose_config(["filter.keep=Sports", "filter.drop=News"])
    listed = compose_config(["filter.keep=[Sports]", "filter.drop=[News]"])
    assert (one.filter.keep, one.filter.drop) == (["Sports"], ["News"])
    assert run_settings(one)["filter"] == run_settings(listed)["filter"]
    flt = build_filter(one.filter, [classifier()])
    assert flt.mask(FRAME).tolist() == [False, True, False, False]
    assert compose_config(["filter.keep=[3, 2.5]"]).filter.keep == ["3", "2.5"]  # as list[str] read them


@pytest.mark.parametrize("value", ["{a:1}", "[[Sports]]", "[Sports,{a:1}]"])
def test_a_filter_label_that_is_not_a_label_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError, match=r"filter.keep=.*give a label \(filter.keep=Sports\) or a list"):
        check_config(compose_config([f"filter.keep={value}"]))
