"""One Parquet schema per run: input columns as read (footers, or a sample of JSONL records), then the
classifiers' fixed-type columns. Every Parquet file of the run is cast to it, empty ones included; a
value that does not fit it is the one record quarantined, never the file."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curator.columns import ERROR_COLUMN, data_columns, unescape
from curator.errors import ConfigError
from curator.io.files import output_format
from curator.io.paths import open_url
from curator.io.readers import BINARY_TEXT, VIEWS, is_text, open_arrow, read_file, repeated_columns

log = logging.getLogger(__name__)

SAMPLE_ROWS = 1000  # JSONL records per input file whose values decide the column types
JSON_TEXT = b"curator.json_text"  # field metadata: the column holds JSON text (Parquet cannot hold it)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _writable(kind: pa.DataType) -> bool:
    """False for types Parquet cannot store (a struct with no fields: JSON's {})."""
    if pa.types.is_struct(kind):
        return kind.num_fields > 0 and all(_writable(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _writable(kind.value_type)
    return True


def infer_field(name: str, values: Sequence[Any]) -> pa.Field:
    """A column's type from its parsed JSON values (nulls aside).

    One kind of value: its Arrow type (JSON integers int64, or uint64 beyond it; integers with
    floats float64). Several kinds (1 and "x"), or values Parquet cannot hold ({}): JSON text, so
    nothing is lost. A later value outside the sample that does not fit is quarantined by the writer.
    """
    present = [v for v in values if v is not None]
    if not present:
        return pa.field(name, pa.null())
    kinds = {_kind(v) for v in present}
    if kinds == {"number"}:
        if any(isinstance(v, float) for v in present):
            return pa.field(name, pa.float64())
        if all(-(2**63) <= v < 2**63 for v in present):
            return pa.field(name, pa.int64())
        if all(0 <= v < 2**64 for v in present):
            return pa.field(name, pa.uint64())
    kind = None
    if len(kinds) == 1:
        try:
            kind = pa.array(present).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            kind = None  # nested values of different shapes
    if kind is None or not _writable(kind):
        log.warning("Column %r: Parquet cannot hold its values as one type; it is written as JSON text", name)
        return pa.field(name, pa.string(), metadata={JSON_TEXT: b"1"})
    return pa.field(name, kind)


def sample_schema(frames: Sequence[Any]) -> pa.Schema:
    """The schema of JSONL partitions' data columns (unescaped names), from their values."""
    names = list(dict.fromkeys(c for f in frames for c in data_columns(f.columns)))
    fields = []
    for name in names:
        values = [v for f in frames if name in f.columns for v in f[name].tolist()]
        fields.append(infer_field(unescape(str(name)), values))
    return pa.schema(fields)


def file_schema(file: Any) -> pa.Schema:
    """An Arrow-typed input's schema without reading its rows: a Parquet footer, an Arrow IPC header."""
    with open_url(file.path, "rb", file.storage_options) as handle:
        if file.format == "arrow":
            return open_arrow(handle).schema.remove_metadata()
        return pq.ParquetFile(handle).schema_arrow.remove_metadata()


def footer_schema(files: Sequence[Any], text_columns: Sequence[str] = ()) -> pa.Schema:
    """The unified schema of Parquet and Arrow inputs, from their footers or headers alone (int64 with
    double: double)."""
    schemas = []
    for file in files:
        try:
            schema = as_read(file_schema(file), text_columns)
        except (OSError, pa.ArrowException) as err:  # the unit fails on its own later, naming the file
            log.warning(
                "Cannot read the schema of %s (%s): it does not shape the run's schema", file.path, err
            )
            continue
        if (why := repeated_columns(schema.names, file.path)) is not None:  # no run schema can hold it
            raise ConfigError(why + ".")
        schemas.append(schema)
    if not schemas:
        return pa.schema([])
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ConfigError(
            f"The Parquet inputs have columns of incompatible types ({err}); write JSONL "
            "(output.format=jsonl) or classify them in separate runs."
        ) from err


def as_read(schema: pa.Schema, text_columns: Sequence[str] = ()) -> pa.Schema:
    """A footer's schema with the column types the reader hands on: view types as large ones,
    dictionary-encoded text as text (one file's dictionary column and another's plain one then unify),
    and the text columns (`text_columns`) that one writer stored as bytes as text."""
    fields = []
    for field in schema:
        kind = field.type
        if pa.types.is_dictionary(kind) and is_text(kind.value_type):
            kind = kind.value_type
        kind = VIEWS.get(kind, kind)
        if field.name in text_columns:
            kind = BINARY_TEXT.get(kind, kind)
        fields.append(field.with_type(kind))
    return pa.schema(fields, metadata=schema.metadata)


def run_schema(inputs: Sequence[pa.Schema], outputs: dict[str, pa.DataType]) -> pa.Schema:
    """Input columns (every input's, unified) followed by the classifiers' columns."""
    try:
        merged = pa.unify_schemas(list(inputs), promote_options="permissive") if inputs else pa.schema([])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ConfigError(f"Input columns have incompatible types across files: {err}") from err
    return pa.schema([*merged, *(pa.field(name, kind) for name, kind in outputs.items())])


def is_json_text(field: pa.Field) -> bool:
    return bool(field.metadata and field.metadata.get(JSON_TEXT))


def as_json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=False)


def plan_schema(
    files: Sequence[Any],
    out_format: str | None,
    outputs: dict[str, pa.DataType],
    id_field: str,
    invalid_text: str,
    only: Sequence[str] | None = None,
    text_columns: Sequence[str] = (),
) -> pa.Schema | None:
    """The run's Parquet schema, when any unit writes Parquet: Parquet footers, then sampled JSONL records
    (of the columns in `only`, when given: attribute files hold only the id); `text_columns`, the
    classifiers' text fields, as text even where a file stores them as bytes."""

    written = [f for f in files if output_format(out_format, f.format) == "parquet"]
    if not written:
        return None
    parquet = [f for f in written if f.format != "jsonl"]  # Parquet and Arrow: typed columns
    inputs = [footer_schema(parquet, text_columns)] if parquet else []
    if parquet and id_field not in inputs[0].names:  # ids the reader makes (`name:row`), first as written
        inputs.insert(0, pa.schema([pa.field(id_field, pa.string())]))
    frames = []
    for file in (f for f in written if f.format == "jsonl"):
        try:
            frame = read_file(file, None, id_field, limit=SAMPLE_ROWS, invalid_text=invalid_text)
        except (OSError, EOFError, ValueError) as err:  # a corrupt file fails as its own unit later
            log.warning("Cannot sample %s (%s): it does not shape the run's schema", file.path, err)
            continue
        frame = frame[frame[ERROR_COLUMN].isna()]
        frames.append(frame if only is None else frame[[c for c in frame.columns if c in only]])
    if frames:
        inputs.append(sample_schema(frames))
    return run_schema(inputs, outputs)


SCHEMA_FILE = ".curator/schema.arrow"  # the schema the run's first Parquet files were written with


def settle_schema(fs: Any, root: str, planned: pa.Schema | None, resuming: bool) -> pa.Schema | None:
    """The schema this run writes with: the one its earlier files have when it resumes, else `planned`.

    An input that changed between two runs is planned anew, but the files already written keep the
    first run's schema: reusing it keeps one schema per output folder.
    """
    path = f"{root}/{SCHEMA_FILE}"
    if resuming and planned is not None and fs.exists(path):
        return pa.ipc.read_schema(pa.py_buffer(fs.cat_file(path)))
    if planned is not None:
        from curator.io.writers import atomic_write

        data = planned.serialize().to_pybytes()
        atomic_write(fs, path, lambda handle: handle.write(data))
    elif fs.exists(path):
        fs.rm_file(path)
    return planned


def attribute_schema(
    full: pa.Schema | None, id_field: str, outputs: dict[str, pa.DataType], keep_column: str | None
) -> pa.Schema | None:
    """Attribute files' schema: the id (typed as the inputs have it), the classifiers' columns, keep."""
    if full is None:
        return None
    ident = full.field(id_field) if id_field in full.names else pa.field(id_field, pa.string())
    fields = [ident, *(pa.field(name, kind) for name, kind in outputs.items())]
    return pa.schema(fields + ([pa.field(keep_column, pa.bool_())] if keep_column else []))
