"""Poison isolation: a classifier failure tied to particular rows quarantines those rows, not the unit.

When classifying a partition raises, a short plain text is classified alone first: if that fails too,
the failure is not about rows (a model that will not load, a bug) and the unit fails as before.
Otherwise the rows are split in halves until each failing row stands alone; those rows are marked with
the stage (`classify`), the classifier and the error, and the rest are classified in one pass. A unit
with poison rows therefore costs about three passes; a clean unit costs nothing extra.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from curator.classifiers.base import DistributedDataClassifier
from curator.columns import ERROR_COLUMN, STAGE_COLUMN
from curator.inference.engine import is_oom

log = logging.getLogger(__name__)

CANARY = "A short plain sentence that every text classifier can read."


def _fails(clf: DistributedDataClassifier, frame: pd.DataFrame) -> Exception | None:
    """The error classifying `frame` raises (device out-of-memory is never about rows: re-raised)."""
    try:
        clf.classify_partition(frame)
    except Exception as err:
        if is_oom(err):
            raise
        return err
    return None


def _narrow(
    clf: DistributedDataClassifier, frame: pd.DataFrame, rows: np.ndarray, err: Exception, found: dict
) -> None:
    """Split failing `rows` (positions) until each failing row is alone; record its error in `found`."""
    if len(rows) == 1:
        found[int(rows[0])] = err
        return
    for half in np.array_split(rows, 2):
        failure = _fails(clf, frame.iloc[half])
        if failure is not None:
            _narrow(clf, frame, half, failure, found)


def classify_isolated(clf: DistributedDataClassifier, frame: pd.DataFrame) -> pd.DataFrame:
    """`clf.classify_partition(frame)`, with rows that make it fail quarantined instead of the frame."""
    try:
        return clf.classify_partition(frame)
    except Exception as err:
        if is_oom(err):
            raise
        failure = err
    canary = pd.DataFrame({clf.text_field: [CANARY], ERROR_COLUMN: [None]}, dtype=object)
    if _fails(clf, canary) is not None:
        raise failure  # not about rows: the classifier cannot classify anything
    errors = frame[ERROR_COLUMN].to_numpy() if ERROR_COLUMN in frame.columns else np.full(len(frame), None)
    rows = np.flatnonzero(pd.isna(errors))
    found: dict[int, Exception] = {}
    _narrow(clf, frame, rows, failure, found)
    if not found:  # the failure did not come back on any subset: not about rows either
        raise failure
    marked = frame.copy()
    reasons = marked[ERROR_COLUMN].to_numpy(dtype=object, copy=True)
    stages = (
        marked[STAGE_COLUMN].to_numpy(dtype=object, copy=True)
        if STAGE_COLUMN in marked.columns
        else np.full(len(marked), None, dtype=object)
    )
    for row, err in found.items():
        reasons[row] = f"classifier {clf.name!r}: {type(err).__name__}: {err}"
        stages[row] = "classify"
    marked[ERROR_COLUMN], marked[STAGE_COLUMN] = reasons, stages
    log.warning("Classifier %r failed on %d row(s): quarantined, the others classified", clf.name, len(found))
    return clf.classify_partition(marked)
