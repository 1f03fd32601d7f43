"""Which cluster the Python API starts when the caller has none: worker processes only where they can start.

Distributed starts worker processes with multiprocessing's spawn, which re-runs the main module in each
worker (as `__mp_main__`). A script that calls the API outside `if __name__ == "__main__":` would run
again in every worker ("Nanny failed to start"), and code read from stdin has no file to re-run
(FileNotFoundError: '<stdin>'). There the API uses threads in this process instead, and says so.
"""

from __future__ import annotations

import ast
import logging
import multiprocessing.process
import os
import sys
import threading
import tokenize
from dataclasses import dataclass
from functools import lru_cache
from types import FrameType, ModuleType

import dask

from curator.config import ClusterConfig
from curator.errors import ConfigError

log = logging.getLogger(__name__)

GUARD = '`if __name__ == "__main__":`'
_warned = False  # the threads fallback is a warning once per process, then an info line


@dataclass(frozen=True)
class Choice:
    """Worker processes or threads for the API's own local cluster, why, and how to get processes."""

    processes: bool
    why: str
    hint: str = ""


def choose() -> Choice:
    """Mirror what multiprocessing's spawn does with `__main__`: processes only where they can start."""
    method = dask.config.get("distributed.worker.multiprocessing-method", "spawn")
    if method == "fork":
        return Choice(True, "workers are forked (distributed.worker.multiprocessing-method=fork)")
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    path = getattr(main, "__file__", None)
    if name is None and path is None:
        return Choice(True, "an interactive session or notebook: workers start without re-running its code")
    if name is not None and (name == "__main__" or name.endswith(".__main__")):
        return Choice(True, f"`python -m {name.removesuffix('.__main__')}`: workers do not re-run it")
    if path is None:  # a module run by name whose file is unknown: cannot tell where the call is
        return Choice(False, f"cannot tell whether module {name} calls the API under a main guard", _hint())
    path = os.path.join(multiprocessing.process.ORIGINAL_DIR or os.getcwd(), path)
    if name is None and os.path.splitext(os.path.basename(path))[0] == "ipython":
        return Choice(True, "IPython: workers do not re-run it")
    if not os.path.isfile(path):  # '<stdin>' and the like: spawn would fail to read it
        return Choice(
            False,
            f"the code was not read from a file ({os.path.basename(path)}): worker processes cannot start",
            f"save it as a script with the calls under {GUARD}, or connect a distributed.Client to a "
            "running scheduler before the calls",
        )
    script = os.path.basename(path)
    if called_under_guard(main, path):
        return Choice(True, f"{script} calls the API under {GUARD}")
    return Choice(
        False,
        f"{script} calls the API outside {GUARD}, so each worker process would re-run it",
        _hint(),
    )


def _hint() -> str:
    return (
        f"put the calls under {GUARD} (or in a function called from there), or create a "
        "distributed.Client there before the calls"
    )


def called_under_guard(main: ModuleType | None, path: str) -> bool:
    """Whether the main module's top-level code is, right now, inside its `__name__ == "__main__"` block."""
    line = _main_line(main, path)
    return line is not None and any(first <= line <= last for first, last in _guard_lines(path))


def _main_line(main: ModuleType | None, path: str) -> int | None:
    """The line the main module's top-level code is running, from this thread's stack or the main thread's."""
    if main is None:
        return None
    target = os.path.realpath(path)
    stacks: list[FrameType | None] = [sys._getframe()]
    if threading.current_thread() is not threading.main_thread():
        stacks.append(sys._current_frames().get(threading.main_thread().ident or -1))
    for frame in stacks:
        while frame is not None:
            code = frame.f_code
            if (
                frame.f_globals is main.__dict__
                and code.co_name == "<module>"
                and os.path.realpath(code.co_filename) == target
            ):
                return frame.f_lineno
            frame = frame.f_back
    return None


@lru_cache(maxsize=8)
def _guard_lines(path: str) -> tuple[tuple[int, int], ...]:
    """Line ranges run only when the file is the main program: `== "__main__"` bodies, `!=` else-branches."""
    try:
        with tokenize.open(path) as handle:
            tree = ast.parse(handle.read(), path)
    except (OSError, SyntaxError, ValueError):
        return ()
    ranges = []
    for node in ast.walk(tree):
        branch = _main_branch(node) if isinstance(node, ast.If) else None
        if branch:  # from its first line (a decorator's, if any) to the end of its last statement
            first = min(n.lineno for n in (branch[0], *getattr(branch[0], "decorator_list", ())))
            ranges.append((first, branch[-1].end_lineno or branch[-1].lineno))
    return tuple(ranges)


def _main_branch(node: ast.If) -> list[ast.stmt] | None:
    """The statements of `node` that run only as the main program, or None if it is no main guard."""
    test = node.test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    sides = {_name_or_text(test.left), _name_or_text(test.comparators[0])}
    if sides != {"name:__name__", "text:__main__"}:
        return None
    if isinstance(test.ops[0], ast.Eq):
        return node.body
    return node.orelse if isinstance(test.ops[0], ast.NotEq) and node.orelse else None


def _name_or_text(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return f"name:{node.id}"
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return f"text:{node.value}"
    return ""


def report(choice: Choice) -> None:
    """The one line that says which cluster the API starts, why, and how to get worker processes."""
    global _warned
    if choice.processes:
        log.info("Python API: a local cluster of worker processes (%s)", choice.why)
        return
    level = logging.INFO if _warned else logging.WARNING
    _warned = True
    log.log(
        level,
        "Python API: a local cluster of threads in this process, not worker processes, because %s. "
        "For worker processes, %s.",
        choice.why,
        choice.hint,
    )


def _callers_scheduler() -> str | None:
    """Dask's `scheduler` setting where the caller chose one other than distributed's, else None."""
    scheduler = dask.config.get("scheduler", None)
    return None if scheduler in (None, "dask.distributed", "distributed") else scheduler


def caller_chose() -> bool:
    """Whether the caller set a Dask scheduler or a scheduler address (which win over the API's cluster)."""
    return _callers_scheduler() is not None or bool(dask.config.get("scheduler-address", None))


def api_cluster() -> ClusterConfig | None:
    """The cluster the API starts when there is no client; None where the caller set a Dask scheduler."""
    scheduler = _callers_scheduler()
    if scheduler is not None:
        log.info("Python API: Dask's scheduler setting %r, as set", scheduler)
        return None
    address = dask.config.get("scheduler-address", None)
    if address:  # DASK_SCHEDULER_ADDRESS or dask.config.set({"scheduler-address": ...})
        return ClusterConfig(kind="scheduler", scheduler_address=address)
    choice = choose()
    report(choice)
    return ClusterConfig(processes=choice.processes)


def require_processes(kind: str) -> None:
    """cluster=local / local_cuda start worker processes: where spawn cannot start them (a script that
    calls `pipeline.run` outside its main guard, code on stdin), say so and how, before any start."""
    choice = choose()
    if not choice.processes:
        raise ConfigError(
            f"cluster={kind} starts worker processes, but {choice.why}. To start them, {choice.hint}; "
            "or run in this process with cluster.processes=false (cluster=local) or cluster=sync."
        )
