"""`inference.engine=crossfit`: CrossFit's Tokenizer and Predictor ops with its sorted loader (GPU + cuDF).

Written against CrossFit's ops as NeMo Curator 0.x drives them; it needs RAPIDS and a GPU even to import,
so it is imported only when chosen and has not run on this project's machines (see the README). The
classifier's own hooks (load_model, load_tokenizer, postprocess) are reused, so outputs have the same
columns and types as the native engine's.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from curator.errors import ConfigError

if TYPE_CHECKING:  # the base class imports this module when crossfit is chosen, never the reverse
    from curator.classifiers.base import DistributedDataClassifier

OUTPUT_COLUMN = "_curator_crossfit_outputs"


class _BatchForward(torch.nn.Module):
    """CrossFit calls `model(batch_dict)`; the project's models take (input_ids, attention_mask)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["input_ids"], batch["attention_mask"]).float()


def crossfit_model(clf: DistributedDataClassifier, max_mem_gb: float | None) -> Any:
    """A CrossFit HFModel whose model, tokenizer and config come from the classifier's hooks."""
    from crossfit.backend.torch.hf.model import HFModel

    class ClassifierModel(HFModel):
        def __init__(self) -> None:
            self._config: Any = None
            key = hashlib.sha1(repr(clf.model_key()).encode()).hexdigest()[:12]
            super().__init__(path_or_name=f"curator/{clf.name}-{key}", max_mem_gb=int(max_mem_gb or 16))

        def load_model(self, device: str = "cuda") -> torch.nn.Module:
            model = clf.load_model(torch.device(device)).eval()
            self._config = getattr(model, "config", None)
            if self._config is not None:  # CrossFit caches its memory curve under this name
                self._config._name_or_path = self.path_or_name
            return _BatchForward(model)

        def load_tokenizer(self) -> Any:
            return clf.load_tokenizer()

        def load_cfg(self) -> Any:
            if self._config is None:
                self.load_model("cpu")
            return self._config

        def max_seq_length(self) -> int:
            return clf.token_limit(self.load_tokenizer())

    return ClassifierModel()


def _outputs(part: Any) -> np.ndarray:
    """The Predictor's column as a [rows, ...] host array (list columns are flattened then reshaped)."""
    column = part[OUTPUT_COLUMN]
    if hasattr(column, "list"):
        return np.asarray(column.list.leaves.values_host, dtype=np.float32).reshape(len(part), -1)
    return np.asarray(column.values_host, dtype=np.float32)


def refuse_generation(clf: DistributedDataClassifier) -> None:
    """CrossFit's Predictor runs one forward pass per batch: families with their own loop cannot use it."""
    if clf.generates:  # e.g. AEGIS: its own predict loop, not one forward pass per batch
        raise ConfigError(
            f"inference.engine=crossfit cannot run {type(clf).__name__}; use the native engine."
        )


def crossfit_outputs(frame: Any, clf: DistributedDataClassifier, max_chars: int | None) -> Any:
    """`frame` (dask-cuDF) with the model's raw outputs in OUTPUT_COLUMN, by CrossFit's sorted pipeline."""
    refuse_generation(clf)
    from crossfit import op

    model = crossfit_model(clf, clf.inference.max_mem_gb)
    pipe = op.Sequential(
        op.Tokenizer(
            model,
            cols=[clf.text_field],
            tokenizer_type="default",
            max_length=model.max_seq_length(),
            max_chars=max_chars,
        ),
        op.Predictor(
            model, sorted_data_loader=True, batch_size=clf.batch_size, pred_output_col=OUTPUT_COLUMN
        ),
        keep_cols=frame.columns.tolist(),
    )
    return pipe(frame)


def predict_with_crossfit(clf: DistributedDataClassifier, texts: list[str]) -> dict[str, Any]:
    """The pipeline's per-unit step under inference.engine=crossfit: texts in, the classifier's columns out.

    Runs inside the unit's task (one cuDF partition, computed in place), so reading, filtering, writing,
    quarantine and resume stay the native pipeline's.
    """
    refuse_generation(clf)  # before RAPIDS is imported: the error is the same on any machine
    import cudf
    import dask_cudf

    frame = dask_cudf.from_cudf(cudf.DataFrame({clf.text_field: clf.model_texts(texts)}), npartitions=1)
    part = crossfit_outputs(frame, clf, max_chars=None).compute(scheduler="sync")
    part = part.sort_index()  # the sorted loader's order undone: rows as given
    return clf.postprocess(_outputs(part))
