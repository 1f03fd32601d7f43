"""The CrossFit engine without RAPIDS: clear errors, never an import of cuDF or CrossFit at module load."""

from __future__ import annotations

import sys

import pytest

from curator.classifiers.base import DistributedDataClassifier
from curator.config import InferenceConfig
from curator.errors import ConfigError
from curator.inference.crossfit_engine import classify_with_crossfit
from curator.inference.engine import check_engine


def test_the_module_imports_without_rapids() -> None:
    assert "crossfit" not in sys.modules and "cudf" not in sys.modules


def test_choosing_crossfit_here_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="crossfit"):
        check_engine(InferenceConfig(engine="crossfit"))


def test_classifiers_that_generate_are_refused_before_crossfit_is_imported() -> None:
    class Generating(DistributedDataClassifier):
        def predict(self, texts, stats=None):  # a generation loop, not one forward pass
            return {}

    with pytest.raises(ConfigError, match="cannot run Generating"):
        classify_with_crossfit(None, Generating("g", pred_column="p"))
