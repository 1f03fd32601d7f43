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
import fsspec
import pandas as pd
from fsspec.utils import infer_compression

from curator.classifiers.base import ERROR_COLUMN, DistributedDataClassifier
from curator.cluster import ensure_client
from curator.errors import ConfigError, SettingTypeError
from curator.io.files import InputFile, discover
from curator.io.partitions import Part, as_part, count_lines, group_parts, parse_blocksize, plan_parts
from curator.io.paths import absolute
from curator.io.readers import HIDDEN_PREFIX, mark_bad_text, read_file
from curator.io.writers import OutputTarget
from curator.report import summarise
from curator.stages import write


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
        files: Sequence[InputFile | Part | Sequence[Part]] | None = None,
        classifiers: Sequence[DistributedDataClassifier] = (),
    ) -> None:
        self.df = dataset_df
        # Partition i came from the units files[i] (outputs are named after them) while the partitioning
        # is unchanged: an input file, a part of one, or several small files (files_per_partition).
        units = [
            [as_part(u) for u in f] if isinstance(f, list | tuple) else [as_part(f)] for f in files or []
        ]
        self._files = units if files is not None and len(units) == dataset_df.npartitions else None
        self._classifiers = tuple(classifiers)

    # ---- reading -------------------------------------------------------------------------------
    @classmethod
    def read_json(
        cls,
        input_files: str | Sequence[str],
        backend: str = "pandas",
        add_filename: bool = False,
        id_field: str = "id",
        *,
        blocksize: int | str | None = None,
        files_per_partition: int | None = None,
        input_meta: Any = None,
        compression: str | None = "infer",
        **unknown: Any,
    ) -> DocumentDataset:
        """JSONL files (plain, .gz, .zst): one partition per file, values as parsed (no dtype inference).

        `blocksize` splits plain files larger than it into line-aligned parts (None: never split);
        `files_per_partition` puts up to that many whole files in one partition. Either way, each input
        file (or part) is still written to its own output file. `compression` is pandas' argument:
        "infer" (each file's codec from its name, as fsspec infers it), None (no file is compressed) or
        a codec ("gzip", "zstd", ...) that every file's name must imply.
        """
        _refuse(unknown, "read_json")
        if compression != "infer":
            _check_compression(compression, input_files)
        if input_meta is not None:
            raise ConfigError(
                f"input_meta={input_meta!r} is not supported: JSON values are read as parsed, without dtype "
                "inference or casting (a string stays a string); cast columns afterwards if you need to."
            )
        return cls._read(
            input_files, "jsonl", backend, add_filename, id_field, blocksize, files_per_partition
        )

    @classmethod
    def read_parquet(
        cls,
        input_files: str | Sequence[str],
        backend: str = "pandas",
        add_filename: bool = False,
        id_field: str = "id",
        *,
        blocksize: int | str | None = None,
        files_per_partition: int | None = None,
        **unknown: Any,
    ) -> DocumentDataset:
        """Parquet files: one partition per file (or per run of row groups, with `blocksize`)."""
        _refuse(unknown, "read_parquet")
        return cls._read(
            input_files, "parquet", backend, add_filename, id_field, blocksize, files_per_partition
        )

    @classmethod
    def _read(
        cls,
        input_files: str | Sequence[str],
        fmt: str,
        backend: str,
        add_filename: bool,
        id_field: str,
        blocksize: int | str | None,
        files_per_partition: int | None,
    ) -> DocumentDataset:
        _check_backend(backend)
        if not isinstance(id_field, str) or not id_field:
            raise SettingTypeError(f"id_field={id_field!r}: must be a non-empty string")
        if files_per_partition is not None and (
            not isinstance(files_per_partition, int) or files_per_partition < 1
        ):
            raise ConfigError(
                f"files_per_partition={files_per_partition!r}: must be an integer >= 1 (or None)"
            )
        try:
            size = parse_blocksize(blocksize)
        except ConfigError as err:
            raise ConfigError(
                f"blocksize={blocksize!r}: not a positive size such as '256MiB' or bytes, or None"
            ) from err
        specs = discover(input_files if isinstance(input_files, str) else list(input_files), fmt)
        groups = group_parts(plan_parts(specs, size), files_per_partition or 1, size)
        firsts = _first_lines(groups)
        reader = _with_filename if add_filename else read_file
        with _as_read():
            meta = _meta(reader, specs, id_field).assign(**{UNIT_COLUMN: 0})
            frame = dd.from_map(
                _read_group,
                groups,
                firsts,
                reader=reader,
                id_field=id_field,
                meta=meta,
                enforce_metadata=False,
            )
        return cls(frame, groups)

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
        if isinstance(filter_by, str):  # one label, never its characters
            filter_by = [filter_by]
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
                _mark_bad_text, clf.text_field, meta=_mark_bad_text(self.df._meta, clf.text_field)
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

    def to_json(self, output_path: str, write_to_filename: bool = False, **unknown: Any) -> dict[str, Any]:
        """Write JSONL, one file per input file; bad records to `quarantine/`. Returns the counts.

        Outputs are always named after their input files (`write_to_filename` is accepted for NeMo
        Curator's scripts and changes nothing).
        """
        _refuse(unknown, "to_json")
        return self._write(output_path, "jsonl")

    def to_parquet(self, output_path: str, write_to_filename: bool = False, **unknown: Any) -> dict[str, Any]:
        """Write Parquet with fixed classifier column types, one file per input file."""
        _refuse(unknown, "to_parquet")
        return self._write(output_path, "parquet")

    def _write(self, output_path: str, fmt: str) -> dict[str, Any]:
        if not isinstance(output_path, str | os.PathLike) or not str(output_path):
            raise SettingTypeError(f"output_path={output_path!r}: must be a folder path")
        started = time.perf_counter()
        groups = self._files or [
            [Part(InputFile(path=f"partition {i}", format=fmt, stem=f"part.{i:05d}"))]
            for i in range(self.df.npartitions)
        ]
        target = OutputTarget(absolute(str(output_path)), fmt)
        with ensure_client(), _as_read():
            writes = [
                dask.delayed(_write_group)(part, group, target, self._classifiers)
                for part, group in zip(self.df.to_delayed(), groups, strict=True)
            ]
            stats = [s for group in dask.compute(*writes) for s in group]
        return summarise(stats, time.perf_counter() - started, target.path)


# Arguments of NeMo Curator's readers and writers that have no meaning here, and why.
UNSUPPORTED = {
    "columns": "every input column is read and written back",
    "keep_filename_column": "outputs are named after their input files; add_filename=True adds the column",
    "partition_on": "outputs are one file per input file",
}
UNIT_COLUMN = HIDDEN_PREFIX + "unit"  # which unit of a several-file partition a row came from


def _refuse(unknown: dict[str, Any], method: str) -> None:
    """Refuse keyword arguments this API does not implement, rather than ignore them silently."""
    for name in unknown:
        why = f" ({UNSUPPORTED[name]})" if name in UNSUPPORTED else ""
        raise SettingTypeError(f"DocumentDataset.{method}() got an unexpected keyword argument {name!r}{why}")


def _check_compression(compression: Any, input_files: str | Sequence[str]) -> None:
    """read_json(compression=...): files are decompressed by the codec fsspec infers from their names,
    so a stated codec is accepted only where every file's name implies it (else a clear error)."""
    codecs = sorted(c for c in fsspec.available_compressions() if c)
    if compression is not None and not isinstance(compression, str):
        raise SettingTypeError(
            f"compression={compression!r}: give 'infer', None or a codec name {codecs} "
            "(options for the codec are not supported)"
        )
    if compression is not None and compression not in codecs:
        raise ConfigError(f"compression={compression!r}: choose 'infer', None or one of {codecs}")
    specs = discover(input_files if isinstance(input_files, str) else list(input_files), "jsonl")
    for spec in specs:
        inferred = infer_compression(spec.path)
        if inferred != compression:
            raise ConfigError(
                f"compression={compression!r}, but {spec.path} would be read as "
                f"{inferred or 'uncompressed'}: the codec comes from each file's name (.gz, .zst, .bz2, "
                ".xz). Rename the file or pass compression='infer'."
            )


def _first_lines(groups: list[list[Part]]) -> list[list[int]]:
    """File line number of each JSONL part's first line (later parts count the lines before them)."""
    done: dict[str, int] = {}
    firsts = []
    for group in groups:
        firsts.append([])
        for part in group:
            start = done.get(part.path, 1) if part.counted else 1
            firsts[-1].append(start)
            if part.format == "jsonl" and part.index is not None and part.index < part.count - 1:
                done[part.path] = start + count_lines(part)
    return firsts


def _meta(reader: Any, specs: Sequence[InputFile], id_field: str) -> pd.DataFrame:
    """Columns from the first input that has records (an empty first file would hide every column)."""
    meta = None
    for spec in specs:
        head = reader(spec, None, id_field, limit=100)
        meta = head.iloc[:0] if meta is None else meta
        if len(head):
            return head.iloc[:0]
    return meta


def _read_group(group: list[Part], firsts: list[int], reader: Any, id_field: str) -> pd.DataFrame:
    """One partition: one unit, or several small files; a hidden column says which unit a row came from."""
    frames = [
        reader(part, None, id_field, first_line=first) for part, first in zip(group, firsts, strict=True)
    ]
    for i, frame in enumerate(frames):
        frame[UNIT_COLUMN] = i
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _mark_bad_text(frame: pd.DataFrame, text_field: str) -> pd.DataFrame:
    """Mark rows that cannot be classified; an empty partition (an empty file) gets an empty text column."""
    if text_field not in frame.columns and len(frame) == 0:
        frame = frame.assign(**{text_field: pd.Series([], dtype=object, index=frame.index)})
    return mark_bad_text(frame, text_field)


def _write_group(
    frame: pd.DataFrame,
    group: list[Part],
    target: OutputTarget,
    classifiers: Sequence[DistributedDataClassifier],
) -> list[dict[str, Any]]:
    """Write each unit of a partition to its own output (and quarantine) file; return each one's counts."""
    if len(group) == 1:  # a whole file, a part of one, or a partition not read from files
        return [write(frame, group[0], target, classifiers)]
    units = frame[UNIT_COLUMN].to_numpy()  # hidden columns are not written
    return [write(frame[units == i], unit, target, classifiers) for i, unit in enumerate(group)]


def _with_filename(
    spec: InputFile | Part,
    text_field: str | None,
    id_field: str,
    limit: int | None = None,
    first_line: int = 1,
) -> pd.DataFrame:
    """`add_filename=True`: a `file_name` column with the input's base name, as NeMo Curator adds."""
    frame = read_file(spec, text_field, id_field, limit, first_line)
    frame["file_name"] = os.path.basename(spec.path)
    return frame
