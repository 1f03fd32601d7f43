"""DocumentDataset: NeMo Curator's dataset handle (a Dask DataFrame), read and written by this project's I/O.

Reading keeps every record (bad lines become quarantine rows with a reason), classifying adds columns
lazily, and writing routes each row to the output folder or to `quarantine/`, one file per input file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dask
import dask.dataframe as dd
import pandas as pd

from curator.classifiers.base import ERROR_COLUMN, DistributedDataClassifier
from curator.cluster import ensure_client
from curator.errors import ConfigError
from curator.filters import Filter
from curator.io.files import InputFile, discover
from curator.io.readers import HIDDEN_PREFIX, mark_bad_text, read_file
from curator.io.writers import OutputTarget, write_partition
from curator.report import summarise


@contextmanager
def _as_read() -> Iterator[None]:
    """Input columns pass through as read: no object → string conversion by Dask."""
    with dask.config.set({"dataframe.convert-string": False}):
        yield


def _check_backend(backend: str) -> None:
    if backend == "pandas":
        return
    if backend != "cudf":
        raise ConfigError(f"backend={backend!r}: choose pandas or cudf.")
    try:
        import cudf  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            "backend='cudf' needs RAPIDS cuDF on a GPU machine (the `gpu` extra); use backend='pandas'."
        ) from err
    raise ConfigError("backend='cudf' is not supported by the Python API yet; use backend='pandas'.")


def _visible(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in frame.columns if not str(c).startswith(HIDDEN_PREFIX)]]


class DocumentDataset:
    """A lazily evaluated collection of documents; `df` is the Dask DataFrame behind it."""

    def __init__(
        self,
        dataset_df: dd.DataFrame,
        files: Sequence[InputFile] | None = None,
        classifiers: Sequence[DistributedDataClassifier] = (),
    ) -> None:
        self.df = dataset_df
        # Partition i came from files[i] (outputs are named after it) while the partitioning is unchanged.
        self._files = list(files) if files is not None and len(files) == dataset_df.npartitions else None
        self._classifiers = tuple(classifiers)

    # ---- reading -------------------------------------------------------------------------------
    @classmethod
    def read_json(
        cls,
        input_files: str | Sequence[str],
        backend: str = "pandas",
        add_filename: bool = False,
        id_field: str = "id",
        **_: Any,
    ) -> DocumentDataset:
        """JSONL files (plain, .gz): one partition per file, values as parsed (no dtype inference)."""
        return cls._read(input_files, "jsonl", backend, add_filename, id_field)

    @classmethod
    def read_parquet(
        cls,
        input_files: str | Sequence[str],
        backend: str = "pandas",
        add_filename: bool = False,
        id_field: str = "id",
        **_: Any,
    ) -> DocumentDataset:
        """Parquet files: one partition per file."""
        return cls._read(input_files, "parquet", backend, add_filename, id_field)

    @classmethod
    def _read(
        cls, input_files: str | Sequence[str], fmt: str, backend: str, add_filename: bool, id_field: str
    ) -> DocumentDataset:
        _check_backend(backend)
        specs = discover(input_files if isinstance(input_files, str) else list(input_files), fmt)
        reader = _with_filename if add_filename else read_file
        with _as_read():
            meta = reader(specs[0], None, id_field, limit=100).iloc[:0]
            frame = dd.from_map(
                reader, specs, text_field=None, id_field=id_field, meta=meta, enforce_metadata=False
            )
        return cls(frame, specs)

    @classmethod
    def from_pandas(cls, data: pd.DataFrame, npartitions: int = 1) -> DocumentDataset:
        """Wrap an in-memory pandas DataFrame (outputs are then named part.NNNNN)."""
        with _as_read():
            return cls(dd.from_pandas(data, npartitions=npartitions))

    # ---- classifying and selecting -------------------------------------------------------------
    def classify(
        self, clf: DistributedDataClassifier, filter_by: Sequence[str] | None = None
    ) -> DocumentDataset:
        """Add `clf`'s columns; with `filter_by`, keep rows whose label is one of those (and bad rows)."""
        if filter_by is not None:
            if not clf.label_column:
                raise ConfigError(f"{type(clf).__name__} gives scores, not labels: filter_by does not apply.")
            unknown = [label for label in filter_by if clf.labels and label not in clf.labels]
            if unknown:
                raise ConfigError(f"filter_by has unknown label(s) {unknown}; labels are {clf.labels}")
        clash = [c for c in clf.output_types() if c in self.df.columns]
        if clash:
            raise ConfigError(
                f"{type(clf).__name__} would overwrite input column(s) {clash}; pass other column names "
                "(e.g. pred_column=...)."
            )
        with _as_read():
            checked = self.df.map_partitions(
                mark_bad_text, clf.text_field, meta=mark_bad_text(self.df._meta, clf.text_field)
            )
            frame = checked.map_partitions(
                clf.classify_partition, meta=clf.meta(checked._meta), enforce_metadata=False
            )
            if filter_by is not None:
                frame = frame[frame[clf.label_column].isin(list(filter_by)) | frame[ERROR_COLUMN].notnull()]
        return DocumentDataset(frame, self._files, (*self._classifiers, clf))

    def __getitem__(self, key: Any) -> Any:
        """A column (Series), a column list or a boolean selection (a new DocumentDataset)."""
        if isinstance(key, dd.Series) and ERROR_COLUMN in self.df.columns:
            key = (
                key.fillna(False).astype(bool) | self.df[ERROR_COLUMN].notnull()
            )  # bad rows stay for quarantine
        with _as_read():
            result = self.df[key]
        if isinstance(result, dd.DataFrame):
            return DocumentDataset(result, self._files, self._classifiers)
        return result

    # ---- computing -----------------------------------------------------------------------------
    def to_pandas(self) -> pd.DataFrame:
        """Every row as a pandas DataFrame (visible columns only)."""
        with ensure_client(), _as_read():
            return _visible(self.df.compute())

    def head(self, n: int = 5) -> pd.DataFrame:
        """The first rows (visible columns), computed on the first partition(s)."""
        with _as_read():
            return _visible(self.df.head(n, npartitions=-1))

    def __len__(self) -> int:
        with ensure_client(), _as_read():
            return len(self.df)

    def to_json(self, output_path: str, write_to_filename: bool = False, **_: Any) -> dict[str, Any]:
        """Write JSONL, one file per input file; bad records to `quarantine/`. Returns the counts."""
        return self._write(output_path, "jsonl")

    def to_parquet(self, output_path: str, write_to_filename: bool = False, **_: Any) -> dict[str, Any]:
        """Write Parquet with fixed classifier column types, one file per input file."""
        return self._write(output_path, "parquet")

    def _write(self, output_path: str, fmt: str) -> dict[str, Any]:
        started = time.perf_counter()
        specs = self._files or [
            InputFile(path=f"partition {i}", format=fmt, stem=f"part.{i:05d}")
            for i in range(self.df.npartitions)
        ]
        target = OutputTarget(os.path.abspath(os.path.expanduser(output_path)), fmt)
        with ensure_client(), _as_read():
            writes = [
                dask.delayed(write_partition)(part, spec, target, Filter(), self._classifiers)
                for part, spec in zip(self.df.to_delayed(), specs, strict=True)
            ]
            stats = list(dask.compute(*writes))
        return summarise(stats, time.perf_counter() - started, target.path)


def _with_filename(
    spec: InputFile, text_field: str | None, id_field: str, limit: int | None = None
) -> pd.DataFrame:
    """`add_filename=True`: a `file_name` column with the input's base name, as NeMo Curator adds."""
    frame = read_file(spec, text_field, id_field, limit)
    frame["file_name"] = os.path.basename(spec.path)
    return frame
