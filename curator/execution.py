"""Running the tasks: each runs the stages of its own unit(s) (curator.stages) — a file, a part of a
large file, or a group of small files — and hands back only small counts, so memory per worker stays
bounded whatever the dataset size. One executor per way of running (this process, or a Dask cluster);
outcomes are yielded as tasks finish, so the caller can record each one at once."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import dask
from distributed import Client, as_completed

from curator.io.partitions import Part, count_lines
from curator.stages import Work, process

log = logging.getLogger(__name__)

Outcome = tuple[list[Part], Any]  # the task's units, and their counts or the exception that failed it
# While no task outcome arrives for this long, the scheduler's view of the tasks still out is logged
# (states, workers): a run that stops making progress says where it stands instead of going silent.
STALL_REPORT_SECONDS = 300.0


def _jsonl_lines(parts: Sequence[Part], known: dict[str, int]) -> Callable[[Part], int]:
    """First line number of a part: 1 + the lines of its file's earlier parts (known, else counted)."""
    siblings: dict[str, list[Part]] = {}
    for part in parts:
        siblings.setdefault(part.path, []).append(part)

    def lines(part: Part) -> int:
        if part.name not in known:
            known[part.name] = count_lines(part)
        return known[part.name]

    def first_line(part: Part) -> int:
        if not part.counted:
            return 1
        return 1 + sum(lines(p) for p in siblings[part.path][: part.index])

    return first_line


def _delayed_first_lines(parts: Sequence[Part], known: dict[str, int], run_id: str) -> dict[str, Any]:
    """First line numbers as a chain of small counting tasks that runs alongside the classification."""
    firsts: dict[str, Any] = {}
    running: Any = 1
    for part in parts:
        if not part.counted:
            running = 1
        firsts[part.name] = running
        if part.format == "jsonl" and part.index is not None and part.index < part.count - 1:
            spanned = known.get(part.name)
            if spanned is None:
                key = f"lines-{part.name}-{run_id}"
                spanned = dask.delayed(count_lines, pure=True)(part, dask_key_name=key)
            running = running + spanned
    return firsts


def run_sync(
    groups: list[list[Part]], parts: Sequence[Part], work: Work, known: dict[str, int], in_flight: int = 1
) -> Iterator[Outcome]:
    """In this process (cluster=sync): up to `in_flight` tasks at once, as Dask runs them on a worker
    with that many threads (batches take turns on the device). A finished task's slot is refilled at
    once (waiting for the oldest instead left slots idle behind a slow task), so outcomes come as
    tasks finish, as on a cluster."""
    first_line = _jsonl_lines(parts, known)
    todo = deque(groups)
    with ThreadPoolExecutor(max_workers=max(1, in_flight), thread_name_prefix="task") as pool:
        running: dict[Future, list[Part]] = {}
        while todo or running:
            while todo and len(running) < max(1, in_flight):
                group = todo.popleft()
                running[pool.submit(process, group, [first_line(p) for p in group], work)] = group
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in [f for f in running if f in finished]:  # in submission order among them
                done = running.pop(future)
                try:
                    stats = future.result()
                except Exception as err:  # recorded and reported; the other units still run
                    yield done, err
                    continue
                known.update(
                    {
                        s["unit"]: s["lines"]
                        for s in stats
                        if isinstance(s, dict) and s.get("lines") is not None
                    }
                )
                yield done, stats


def run_distributed(
    client: Client,
    groups: list[list[Part]],
    parts: Sequence[Part],
    work: Work,
    known: dict[str, int],
    retries: int,
) -> Iterator[Outcome]:
    """On the cluster: each task's outcome as it completes (lost workers' tasks run again elsewhere)."""
    run_id = uuid.uuid4().hex[:8]
    firsts = _delayed_first_lines(parts, known, run_id)
    # The work (a few KB) travels inside every task: a shared `work` task would be a dependency that
    # pins the tasks of a small run (fewer than two per thread) to the worker holding it, leaving the
    # other workers idle until Dask steals work for them.
    task = functools.partial(process, work=work)
    tasks = [
        dask.delayed(task, pure=False)(
            group, [firsts[p.name] for p in group], dask_key_name=f"classify-{group[0].name}-{run_id}"
        )
        for group in groups
    ]
    futures = client.compute(tasks, retries=retries)
    by_key = {future.key: group for future, group in zip(futures, groups, strict=True)}
    for future in _as_completed(client, futures):
        group = by_key.pop(future.key)
        try:
            yield group, _result(client, future)
        except Exception as err:
            yield group, err
        finally:
            future.release()


def _as_completed(client: Client, futures: list) -> Iterator[Any]:
    """Futures as they finish, as `as_completed` gives them; a stall is reported (`_report_stall`)."""
    finished = as_completed(futures)
    out = set(futures)
    progress = reported = time.monotonic()
    while not finished.is_empty():
        batch = finished.next_batch(block=False)
        now = time.monotonic()
        if batch:
            progress = reported = now
        elif now - reported >= STALL_REPORT_SECONDS:
            _report_stall(client, [f.key for f in out], "No task finished", now - progress)
            reported = now
        for future in batch:
            out.discard(future)
            yield future
        if not batch:
            time.sleep(0.1)  # as_completed's own polling interval


def _result(client: Client, future: Any) -> Any:
    """A finished task's result; while fetching it takes STALL_REPORT_SECONDS, the stall is reported."""
    asked = time.monotonic()
    while True:
        try:
            return future.result(timeout=STALL_REPORT_SECONDS)
        except TimeoutError:
            waited = time.monotonic() - asked
            _report_stall(client, [future.key], "A finished task's result has not arrived", waited)


def _report_stall(client: Client, keys: list[str], what: str, seconds: float) -> None:
    """Log what the scheduler says of tasks the run has waited on for `seconds`."""
    try:
        states, workers = client.run_on_scheduler(_scheduler_view, keys=keys)
    except Exception as err:  # the scheduler itself does not answer
        states, workers = {key: f"no answer from the scheduler ({err!r})" for key in keys}, {}
    shown = "; ".join(f"{key}: {state}" for key, state in list(states.items())[:10])
    more = f" (and {len(states) - 10} more)" if len(states) > 10 else ""
    log.warning(
        "%s for %.0f s. Scheduler: %s%s. Workers (tasks running or queued there): %s. "
        "If this lasts, stop the run and rerun the same command: it resumes.",
        *(what, seconds, shown, more, workers or "none"),
    )


def _scheduler_view(dask_scheduler: Any, keys: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    """On the scheduler: each key's state (and where), and each worker's number of tasks."""
    states = {}
    for key in keys:
        task = dask_scheduler.tasks.get(key)
        if task is None:
            states[key] = "unknown to the scheduler"
            continue
        holders = [w.address for w in task.who_has or ()]
        where = [task.processing_on.address] if task.processing_on else holders
        states[key] = task.state + (f" on {', '.join(where)}" if where else "")
    workers = {w.address: len(w.processing) for w in dask_scheduler.workers.values()}
    return states, workers
