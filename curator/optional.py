"""Optional stacks (RAPIDS, dask-jobqueue): imported when first needed, with the extra that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from curator.errors import ConfigError

GPU_HINT = "RAPIDS packages for your CUDA version (dask-cuda; cuDF for dataset.backend=cudf)"


def require(module: str, what: str, extra: str, hint: str = "") -> ModuleType:
    """Import an optional stack when it is first needed; say which extra installs it when missing."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as err:
        more = f" ({hint})" if hint else ""
        raise ConfigError(
            f"{what} needs `{module}`, which cannot be imported here ({err}). "
            f"Install the `{extra}` extra: pip install -e '.[{extra}]'{more}."
        ) from err
