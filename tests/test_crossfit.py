"""The CrossFit engine without RAPIDS: clear errors, never an import of cuDF or CrossFit at module load."""

from __future__ import annotations

import subprocess
import sys

import pytest

from curator.classifiers.base import DistributedDataClassifier
from curator.config import InferenceConfig
from curator.errors import ConfigError
from curator.inference.engine import check_engine


def test_the_module_imports_without_rapids() -> None:
    assert "crossfit" not in sys.modules and "cudf" not in sys.modules


def test_choosing_crossfit_here_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="crossfit"):
        check_engine(InferenceConfig(engine="crossfit"))


def test_classifiers_that_generate_are_refused_before_crossfit_is_imported() -> None:
    import pandas as pd

    class Generating(DistributedDataClassifier):
        generates = True  # a generation loop, not one forward pass

    clf = Generating("g", pred_column="p")
    clf.inference = InferenceConfig(engine="crossfit")  # past check_engine, which needs a GPU
    with pytest.raises(ConfigError, match="cannot run Generating"):
        clf.classify_partition(pd.DataFrame({"text": ["a document"]}))
    assert "crossfit" not in sys.modules and "cudf" not in sys.modules


def test_the_base_class_does_not_import_the_crossfit_engine() -> None:
    """No import loop: the engine imports the base class's module only for type hints."""
    code = (
        "import sys, curator.classifiers.base, curator.classifiers.registry; "
        "assert 'curator.inference.crossfit_engine' not in sys.modules; "
        "import curator.inference.crossfit_engine"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_pipelines_classify_step_hands_texts_to_crossfit_when_chosen(
    monkeypatch: pytest.MonkeyPatch, tiny_fineweb
) -> None:
    """CrossFit and cuDF are the GPU edge: stood in by a recorder; the routing around them is real."""
    import pandas as pd

    from curator.classifiers.sequence import RegressionClassifier
    from curator.inference import crossfit_engine
    from curator.io.readers import mark_bad_text

    def partition() -> pd.DataFrame:  # as the reader hands it on: the null text marked for quarantine
        return mark_bad_text(pd.DataFrame({"text": ["one text", "another text", None]}), "text")

    clf = RegressionClassifier("edu", model=str(tiny_fineweb), pred_column="score", max_chars=5)
    native = clf.classify_partition(partition())
    calls = []

    def stand_in(classifier, texts):
        calls.append(list(texts))
        return classifier.predict(texts)

    monkeypatch.setattr(crossfit_engine, "predict_with_crossfit", stand_in)
    clf.inference = InferenceConfig(engine="crossfit")  # past check_engine, which needs a GPU
    routed = clf.classify_partition(partition())
    assert calls == [["one text", "another text"]]  # only readable texts; the null row is quarantined
    pd.testing.assert_frame_equal(routed, native)
    assert clf.classify_partition(pd.DataFrame({"text": pd.Series([], dtype=object)})).empty
    assert len(calls) == 1  # an empty partition never reaches CrossFit
