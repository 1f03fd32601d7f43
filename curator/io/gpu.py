"""dataset.backend=cudf: decode Parquet partitions with cuDF on the worker's GPU.

UNVERIFIED: written against cuDF's documented `cudf.read_parquet(path, row_groups=...)` and
`DataFrame.to_pandas()`, but not yet run on a RAPIDS machine. Classifiers tokenise on the CPU and the
writers take pandas, so each partition is handed on as pandas; JSONL keeps the exact pandas reader
(line numbers, byte-range parts and quarantine of malformed lines depend on it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from curator.errors import ConfigError
from curator.io.files import InputFile
from curator.io.partitions import Part, as_part
from curator.io.readers import LINE_COLUMN, mark_bad_text, read_file

BACKENDS = ("pandas", "cudf")


def require_cudf() -> Any:
    """Import cuDF now, so a missing RAPIDS install fails at start-up with what to install."""
    from curator.optional import GPU_HINT, require

    return require("cudf", "dataset.backend=cudf", "gpu", GPU_HINT)


def partition_reader(backend: str) -> Callable[..., pd.DataFrame]:
    """The function that reads one partition: the pandas reader, or cuDF for Parquet inputs."""
    if backend not in BACKENDS:
        raise ConfigError(f"dataset.backend={backend!r}: choose one of {', '.join(BACKENDS)}.")
    if backend == "pandas":
        return read_file
    require_cudf()
    return read_partition_cudf


def read_partition_cudf(
    spec: InputFile | Part, text_field: str | None, id_field: str, limit: int | None = None, **kwargs: Any
) -> pd.DataFrame:
    """A Parquet file or row-group part decoded on the GPU; anything else goes to the pandas reader."""
    part = as_part(spec)
    if part.format != "parquet" or limit is not None or text_field is None:
        return read_file(spec, text_field, id_field, limit, **kwargs)
    import cudf

    row_groups = list(part.row_groups) if part.row_groups is not None else None
    options = {"storage_options": part.file.storage_options} if part.file.storage_options else {}
    frame = cudf.read_parquet(part.path, row_groups=row_groups, **options).to_pandas()
    frame = mark_bad_text(frame, text_field)
    frame[LINE_COLUMN] = np.arange(part.first_row, part.first_row + len(frame), dtype=np.int64)
    if id_field not in frame.columns:  # the same ids as the pandas reader: `name:row`
        ids = [f"{part.file.stem}:{n}" for n in frame[LINE_COLUMN].tolist()]
        frame.insert(0, id_field, pd.Series(ids, index=frame.index, dtype=object))
    return frame
