"""cluster=slurm keeps its worker jobs alive: every job's submission, start and end is logged with its SLURM
job id, a job that ends (cancelled, walltime, preempted, node failure) is replaced, and a run that has had
no worker for cluster.no_worker_timeout stops with a message saying how to resume, never waits silently.

Dask itself reruns the tasks of lost workers on the workers that remain or join; this only keeps the
requested number of jobs submitted. dask-jobqueue's `adapt(minimum_jobs=n, maximum_jobs=n)` resubmits
too (measured here: 16 s after a scancel, distributed's lost-worker-timeout), but silently, only once
the scheduler has seen the job's worker leave (SpecCluster matches it by name, which a job of several
worker processes does not share), and it cannot tell a job still queued from one lost.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, Future

from curator.config import ClusterConfig
from curator.errors import UserError

log = logging.getLogger(__name__)

# squeue states after which a job's workers are gone for good
ENDED = frozenset(
    {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL"}
    | {"OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT"}
)
# its processes are being killed: replaced at once, but squeue shows why it ended (CANCELLED, TIMEOUT...)
# only once they are gone, so the job is polled until then to log that
COMPLETING = "COMPLETING"
GONE = "GONE"  # no longer listed by squeue at all (purged after MinJobAge)
FINAL = ENDED | {GONE}  # the job's end is known (or it can no longer be asked)
WORKERS_GONE = FINAL | {COMPLETING}  # the states in which a job is replaced
NO_WORKERS = "curator-no-workers"  # the reason on the tasks cancelled when the run gives up waiting
# sbatch gave no id this long after a submission began (it failed), or squeue never listed the job: replace
SUBMIT_GRACE_S = 60.0


class NoWorkersError(UserError, RuntimeError):
    """No Dask worker joined for cluster.no_worker_timeout; finished units are recorded, a rerun resumes."""


def timeout_seconds(value: Any) -> float | None:
    """cluster.no_worker_timeout in seconds: a number, or a duration such as "5min" (None: no limit)."""
    from dask.utils import parse_timedelta

    if value is None:
        return None
    return float(parse_timedelta(value, default="seconds"))


def squeue_states(job_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """State and reason (or node) of each job by id, GONE where squeue forgot it; None if squeue failed."""
    if not job_ids:
        return {}
    command = ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%R"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("squeue failed (%s); SLURM jobs are checked again at the next poll", err)
        return None
    if done.returncode != 0 and "Invalid job id" not in done.stderr:  # only ids squeue forgot: all gone
        log.warning("squeue failed (%s); SLURM jobs are checked again at the next poll", done.stderr.strip())
        return None
    states = {job_id: (GONE, "") for job_id in job_ids}
    for line in done.stdout.splitlines():
        job_id, state, where = [*line.split("|"), "", ""][:3]
        if job_id in states:
            states[job_id] = (state.split()[0] if state else "UNKNOWN", where.strip("()"))
    return states


@dataclass
class JobWatcher:
    """A thread that polls squeue for the cluster's worker jobs, logs their life and replaces ended ones."""

    cluster: Any  # a dask_jobqueue.SLURMCluster
    client: Client
    jobs: int
    timeout_s: float | None
    poll_s: float = 5.0
    seen: dict[str, str] = field(default_factory=dict)  # SLURM job id -> last state logged
    tracked: dict[str, float] = field(default_factory=dict)  # SLURM job id -> when this first knew of it
    replaced: int = 0
    workers: int = 0  # Dask workers connected at the last poll
    replaced_now: bool = False  # the last squeue poll replaced a job
    ending: set[str] = field(default_factory=set)  # replaced jobs seen COMPLETING, polled for why they ended
    # the cluster's name of a job that has no SLURM id yet -> when this first saw it without one
    unsubmitted: dict[str, float] = field(default_factory=dict)
    _last_worker: float = field(default_factory=time.monotonic)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> JobWatcher:
        self._last_worker = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="curator-slurm-jobs", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (before the cluster closes: its own cancellations are not replaced)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(30.0, 2 * self.poll_s))

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                if self.check():
                    return
            except Exception:  # a bug here must not take the run down: log it, keep polling
                log.exception("Checking the SLURM worker jobs failed; retrying at the next poll")

    def job_ids(self) -> dict[str, str]:
        """SLURM job id -> the cluster's name for that job, for the jobs it holds now."""
        return {
            str(job.job_id): name
            for name, job in list(self.cluster.workers.items())
            if job.job_id is not None
        }

    def check(self) -> bool:
        """One poll: log changes, replace ended jobs, give up after the timeout; True once it gave up."""
        states = self._poll_jobs()
        if states is not None and self.replaced_now:
            states = self._poll_jobs() or states  # log the replacements' submission now, not a poll later
        workers = len(self.cluster.scheduler_info.get("workers") or {})
        if workers != self.workers:
            log.info("Dask workers connected: %d (before: %d)", workers, self.workers)
            self.workers = workers
        if workers:
            self._last_worker = time.monotonic()
        waited = time.monotonic() - self._last_worker
        if self.timeout_s is not None and waited > self.timeout_s:
            self._give_up(waited, states or {})
            return True
        return False

    def _poll_jobs(self) -> dict[str, tuple[str, str]] | None:
        """squeue the cluster's jobs, log what changed and replace those that ended (None: squeue failed)."""
        self.replaced_now = False
        jobs = self.job_ids()
        states = squeue_states(sorted(jobs.keys() | self.ending))
        if states is None:
            return None
        now = time.monotonic()
        for job_id, (state, where) in list(states.items()):
            known = self.tracked.setdefault(job_id, now)
            if state == GONE and job_id not in self.seen and now - known < SUBMIT_GRACE_S:
                del states[job_id]  # not listed yet: never replace a job squeue has not shown once
                continue
            self._note(job_id, state, where)
            if job_id not in jobs:  # replaced before: only its end is still to log
                del states[job_id]
        ended = [job_id for job_id, (state, _) in states.items() if state in WORKERS_GONE]
        self._replace([jobs[job_id] for job_id in ended] + self._never_submitted())
        return states

    def _note(self, job_id: str, state: str, where: str) -> None:
        """Log a job's submission, start and end once each, with its SLURM job id."""
        before = self.seen.get(job_id)
        if before is None:
            replaces = f"; {self.replaced} ended job(s) replaced so far" if self.replaced else ""
            log.info("SLURM job %s submitted (cluster.jobs=%d%s)", job_id, self.jobs, replaces)
        if state == "RUNNING" and before != "RUNNING":
            log.info("SLURM job %s started on %s", job_id, where or "?")
        if state == COMPLETING and before != COMPLETING:
            self.ending.add(job_id)
            log.warning(
                "SLURM job %s is ending (COMPLETING): its workers are gone; submitting a replacement", job_id
            )
        elif state in FINAL and before not in FINAL:
            self.ending.discard(job_id)
            shown = "no longer in squeue" if state == GONE else state
            then = "" if before == COMPLETING else ": its workers are gone; submitting a replacement"
            log.warning("SLURM job %s ended (%s)%s", job_id, shown, then)
        self.seen[job_id] = state

    def _never_submitted(self) -> list[str]:
        """Jobs whose sbatch gave no id long after their submission began (dask-jobqueue logged why)."""
        now = time.monotonic()
        pending = {name for name, job in list(self.cluster.workers.items()) if job.job_id is None}
        self.unsubmitted = {name: self.unsubmitted.get(name, now) for name in pending}
        late = [name for name, began in self.unsubmitted.items() if now - began > SUBMIT_GRACE_S]
        for name in late:
            log.warning("Worker job %s got no SLURM job id from sbatch; submitting it again", name)
        return late

    def _replace(self, names: list[str]) -> None:
        """Drop ended jobs from the cluster and submit new ones up to cluster.jobs (unique worker names)."""
        if not names or self._stop.is_set():
            return
        self.cluster.sync(self._swap, names)
        self.replaced += len(names)
        self.replaced_now = True

    async def _swap(self, names: list[str]) -> None:
        """On the cluster's loop: forget the ended jobs, then submit new ones and wait for their sbatch."""
        await self.cluster.scale_down(names)  # scancel of an ended job is a no-op
        self.cluster.scale(jobs=self.jobs)
        await self.cluster  # SpecCluster: start what its spec lacks, wait until each job is submitted

    def _give_up(self, waited: float, states: dict[str, tuple[str, str]]) -> None:
        """Cancel the run's tasks with a message that says why and how to resume."""
        listed = (
            ", ".join(
                f"{job_id} {state} ({where})" if where else f"{job_id} {state}"
                for job_id, (state, where) in sorted(states.items())
            )
            or "none with an id yet"
        )
        message = (
            f"No Dask worker for {waited:.0f} s (cluster.no_worker_timeout={self.timeout_s:g}): the "
            f"{self.jobs} SLURM worker job(s) did not start or keep running (jobs: {listed}; "
            f"{self.replaced} replaced so far). The units finished so far are recorded in the output "
            "folder's manifest: rerun the same command to resume. If jobs wait long in the queue, raise "
            "cluster.no_worker_timeout (null: wait)."
        )
        log.warning("No Dask worker for %.0f s: cancelling the run's tasks", waited)
        keys = list(self.client.futures)
        if keys:
            self.client.cancel([Future(key, self.client) for key in keys], reason=NO_WORKERS, msg=message)


def gave_up(outcome: Any) -> NoWorkersError | None:
    """The run's error when a task was cancelled because no worker was left (else None)."""
    from distributed.client import FutureCancelledError

    if isinstance(outcome, FutureCancelledError) and outcome.reason == NO_WORKERS:
        return NoWorkersError(outcome.msg or "No Dask worker left; rerun the same command to resume.")
    return None


@contextmanager
def keep_jobs(cluster: Any, client: Client, cfg: ClusterConfig) -> Iterator[JobWatcher]:
    """Watch the worker jobs while the run uses the cluster; stop before the cluster closes."""
    watcher = JobWatcher(
        cluster, client, cfg.jobs, timeout_seconds(cfg.no_worker_timeout), float(cfg.job_poll_interval)
    ).start()
    try:
        yield watcher
    finally:
        watcher.stop()
        ids = sorted(watcher.job_ids(), key=lambda job_id: (len(job_id), job_id))
        if ids:
            log.info("SLURM job(s) %s end with the run: cancelling them", ", ".join(ids))
