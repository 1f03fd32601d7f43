"""hydra/launcher=slurm on a SLURM without accounting: submitit polls `sacct`, which fails there on every
poll ("Slurm accounting storage is disabled", then submitit's "Bypassing sacct error" warning, twice).

Where accounting is off, submitit's job states come from `squeue` instead (same fields, no error, and a
job that dies without a result is seen as ended); any other sacct failure is warned about once.
"""

from __future__ import annotations

import getpass
import logging
import subprocess
from typing import Any

log = logging.getLogger(__name__)

SACCT_WARNING = "Bypassing sacct error"  # submitit.core.core.InfoWatcher.update, on logger "submitit"


def accounting_disabled() -> bool:
    """Whether this SLURM keeps no job accounting (AccountingStorageType=accounting_storage/none)."""
    try:
        done = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(
        line.split("=", 1)[0].strip() == "AccountingStorageType" and line.rstrip().endswith("/none")
        for line in done.stdout.splitlines()
    )


class OnceFilter(logging.Filter):
    """Let submitit's first sacct warning through, with what it means; drop the repeats."""

    def __init__(self) -> None:
        super().__init__()
        self.shown = False

    def filter(self, record: logging.LogRecord) -> bool:
        if SACCT_WARNING not in record.getMessage():
            return True
        if self.shown:
            return False
        self.shown = True
        record.msg = (
            f"{record.getMessage()} (submitit cannot read job states from sacct; it still sees each "
            "finished job's result file. This warning is shown once.)"
        )
        record.args = ()
        return True


def squeue_watcher() -> Any:
    """A submitit SlurmInfoWatcher that reads the same fields from squeue (submitit imported only now)."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    class SqueueInfoWatcher(SlurmInfoWatcher):
        """Job states from squeue (this user's jobs, array tasks one per line), parsed as sacct's."""

        def _make_command(self) -> list[str] | None:
            if super()._make_command() is None:  # nothing left to check
                return None
            return ["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%T|%N"]

        def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
            text = string.decode() if isinstance(string, bytes) else string
            return super().read_info("JobID|State|NodeList\n" + text)

    return SqueueInfoWatcher(delay_s=600)


def quiet_submitit() -> None:
    """Make submitit's SLURM polling quiet and honest in this (the launching) process."""
    submitit_log = logging.getLogger("submitit")
    if not any(isinstance(f, OnceFilter) for f in submitit_log.filters):
        submitit_log.addFilter(OnceFilter())
    if accounting_disabled():
        from submitit.slurm.slurm import SlurmJob

        SlurmJob.watcher = squeue_watcher()
        log.info("SLURM accounting is disabled here: submitit reads job states from squeue, not sacct")
