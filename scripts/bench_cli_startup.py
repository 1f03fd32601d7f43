"""Benchmark: `python run.py` on the bundled sample, against the same app with its config schemas
registered on import (as `curator.cli` did before): what a light entry-point import saves.

Worker processes are spawned, and a spawned process re-imports the main script (`run.py`, or the
`curator` console script) before it runs anything. Registering the schemas imports every classifier
family (torch, transformers), so with the registration on import every worker paid it at start-up,
and the run waited for its workers. Alternating rounds in fresh interpreters, the README's first
command (zero-shot domain labels for 312 documents, one local worker):

    python scripts/bench_cli_startup.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The baseline entry point: the same app, its schemas registered when the script is imported.
EAGER = """from curator.config import register_configs

register_configs()
from curator.cli import app  # noqa: E402

if __name__ == "__main__":
    app()
"""


def one_run(script: Path, work: Path, name: str) -> tuple[float, float]:
    """Wall seconds of the command, and the seconds pipeline.run reports in summary.json."""
    run_dir = work / f"run-{name}"
    command = [sys.executable, str(script), f"output.path={work / f'out-{name}'}", f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True)
    wall = time.perf_counter() - start
    return wall, json.loads((run_dir / "summary.json").read_text())["seconds"]


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        eager = work / "eager_run.py"
        eager.write_text(EAGER)
        results: dict[str, list[tuple[float, float]]] = {"run.py": [], "registered on import": []}
        for i in range(args.rounds):
            results["run.py"].append(one_run(ROOT / "run.py", work, f"light{i}"))
            results["registered on import"].append(one_run(eager, work, f"eager{i}"))
    medians = {
        name: (statistics.median(w for w, _ in runs), statistics.median(p for _, p in runs))
        for name, runs in results.items()
    }
    for name, (wall, pipeline) in medians.items():
        print(f"{name:<22} wall {wall:5.2f} s   pipeline.run {pipeline:5.2f} s   (median of {args.rounds})")
    (light_wall, light_pipe), (eager_wall, eager_pipe) = medians.values()
    print(f"saved: {eager_wall - light_wall:.2f} s wall ({eager_wall / light_wall:.2f}x), ", end="")
    print(f"{eager_pipe - light_pipe:.2f} s in pipeline.run ({eager_pipe / light_pipe:.2f}x)")


if __name__ == "__main__":
    main()
