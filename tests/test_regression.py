"""FineWeb-Edu and its variants: the model card's reference path, clipping, half-to-even rounding, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from curator import pipeline
from curator.classifiers.sequence import RegressionClassifier
from curator.config import InferenceConfig
from curator.errors import ConfigError
from tests.conftest import FINEWEB_TEXTS as TEXTS
from tests.conftest import reference_scores, write_jsonl


def make(folder: Path, **kwargs) -> RegressionClassifier:
    return RegressionClassifier(
        "fineweb_edu",
        model=str(folder),
        pred_column="fineweb-edu-score",
        int_column="fineweb-edu-score-int",
        score_range=(0.0, 5.0),
        max_length=512,
        inference=InferenceConfig(token_budget=128),
        **kwargs,
    )


def test_scores_equal_the_model_card_reference(tiny_fineweb: Path) -> None:
    raw = reference_scores(tiny_fineweb, TEXTS)
    assert raw.min() < 0 and raw.max() > 5, raw  # the fixture exercises clipping at both ends
    clf = make(tiny_fineweb)
    out = clf.predict(TEXTS)
    # float32 rounding: the compiled attention sums in another order than Hugging Face's modules, and
    # this head's scaled-up weights (scores over [-1, 6]) carry differences of up to ~3e-5 to the score
    np.testing.assert_allclose(out["fineweb-edu-score"], np.clip(raw, 0, 5), atol=1e-4)
    card = [int(round(max(0, min(s, 5)))) for s in raw]  # noqa: RUF046 (the card's own expression)
    assert list(out["fineweb-edu-score-int"]) == card
    assert clf.last_stats.batches > 1


def test_int_score_rounds_half_to_even_like_pandas() -> None:
    clf = object.__new__(RegressionClassifier)
    clf.pred_column, clf.int_column, clf._label_column = "s", "i", "l"
    clf._labels, clf.label_threshold, clf.score_range = ["high_quality", "low_quality"], 2.5, (0.0, 5.0)
    scores = np.array([2.5, 3.5, 0.5, 1.5, 4.49, -1.0, 9.0, 2.4999], dtype=np.float32)
    out = clf.postprocess(scores)
    expected = pd.Series(np.clip(scores, 0, 5)).round().astype(int).tolist()
    assert list(out["i"]) == expected == [2, 4, 0, 2, 4, 0, 5, 2]
    assert list(out["l"]) == [
        "high_quality",
        "high_quality",
        *["low_quality"] * 2,
        "high_quality",
        "low_quality",
        "high_quality",
        "low_quality",
    ]


def test_a_label_column_needs_two_labels(tiny_fineweb: Path) -> None:
    with pytest.raises(ConfigError, match="two labels"):
        make(tiny_fineweb, label_column="edu-label", labels=("high_quality",))


@pytest.mark.parametrize("variant", ["fineweb_edu", "fineweb_mixtral_edu", "fineweb_nemotron_edu"])
def test_each_variant_runs_through_the_pipeline_with_the_edu_filter(
    variant: str, make_config, tiny_fineweb: Path, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in" / "docs.jsonl", [{"id": i, "text": t} for i, t in enumerate(TEXTS)])
    cfg = make_config(
        f"classifier={variant}",
        f"classifier.{variant}.model={tiny_fineweb}",
        f"dataset.path={tmp_path / 'in'}",
        "dataset.name=edu",
        "filter=edu",
        "filter.write_filtered=true",
        "output.format=parquet",
    )
    summary = pipeline.run(cfg)
    prefix = variant.replace("_edu", "").replace("_", "-") + "-edu-score"
    kept = pq.read_table(tmp_path / "out" / "docs.parquet")
    dropped = pq.read_table(tmp_path / "out" / "_filtered" / "docs.parquet")
    assert kept.schema == dropped.schema
    assert str(kept.schema.field(prefix).type) == "float"
    assert str(kept.schema.field(f"{prefix}-int").type) == "int16"
    expected = np.clip(reference_scores(tiny_fineweb, TEXTS), 0, 5)
    assert summary["written"] == int((expected >= 3.0).sum()) and summary["read"] == len(TEXTS)
    assert summary["written"] + summary["filtered"] == len(TEXTS)
    assert (kept.column(prefix).to_numpy() >= 3.0).all()
    if variant != "fineweb_edu":
        labels = kept.column(f"{prefix}-label").to_pylist() + dropped.column(f"{prefix}-label").to_pylist()
        scores = np.concatenate([kept.column(prefix).to_numpy(), dropped.column(prefix).to_numpy()])
        assert labels == ["high_quality" if s >= 2.5 else "low_quality" for s in scores]
        assert set(summary["labels"][f"{prefix}-label"]) <= {"high_quality", "low_quality"}
