"""The Hydra application behind both `python run.py` and the `curator` console script."""

from __future__ import annotations

import gc
import importlib.util
import logging
import sys

import distributed  # noqa: F401  (imported before Hydra configures logging, so our levels win)
import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from curator.config import register_configs, to_config
from curator.errors import UserError

log = logging.getLogger("curator")
STARTED = False  # set once Hydra has composed the config and the run begins
CONFIGS = "curator.conf"  # the top-level conf/ folder, installed as this package (see pyproject.toml)
if importlib.util.find_spec(CONFIGS) is None:  # e.g. an editable install made before conf/ moved
    sys.exit(f"curator: the configs (package {CONFIGS}, folder conf/) are missing: pip install -e . again")


def main() -> None:
    """Register the config schemas, then run the Hydra app: done here, not on import, so worker
    processes that spawn re-imports of `run.py` or the `curator` script start without it. Registering
    reads the families' schemas only (no torch: `--help` and config mistakes answer in under a second);
    the pipeline, and torch with it, loads once the config is composed."""
    register_configs()
    try:
        app()
    except SystemExit as done:  # Hydra's own composition errors exit 1; every config mistake exits 2
        raise SystemExit(2 if done.code == 1 and not STARTED else done.code) from None
    finally:  # the process ends here: its last garbage collection (~0.5 s with torch loaded) is skipped
        gc.freeze()
    sweep = sys.modules.get("curator.callbacks")  # loaded by Hydra for a sweep's SweepSummary
    if sweep is not None and sweep.FAILED_JOBS:  # not every job finished (each one's error is in its log)
        raise SystemExit(2)


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIGS}", config_name="config")
def app(cfg: DictConfig) -> None:
    """Compose the config, hand plain dataclasses to the pipeline, keep the report in Hydra's run dir."""
    global STARTED
    STARTED = True
    from curator import pipeline

    try:
        pipeline.run(to_config(cfg), run_dir=HydraConfig.get().runtime.output_dir)
    except UserError as err:  # the message says what to change; a traceback would only hide it
        log.error("%s", err)
        _failed(2)
    except Exception:  # logged here: Hydra would print the command's overrides, secrets included
        log.exception("The run failed")
        _failed(1)


def _failed(status: int) -> None:
    """Exit with `status`; in a sweep, return instead: the other jobs still run, and the sweep's table
    shows this one without a summary (the sweep then exits 2)."""
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(status)
