"""How long a cluster=slurm run goes without a worker when its worker job is cancelled mid-run.

    python scripts/slurm_replace.py                    # 4 files x 1500 docs, all-MiniLM-L6-v2, 1 job
    python scripts/slurm_replace.py --docs 500 --poll 1

Needs a live SLURM (e.g. `bash ../shared/slurm/start-local-slurm.sh`). Runs `python run.py cluster=slurm
cluster.jobs=1 cluster.cores=1`, waits until the first unit is recorded, `scancel`s the worker job and
reads the run's log: seconds from the scancel to the end being seen, the replacement being submitted,
running, and its worker connected, plus the whole run. Prints a JSON report.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from bench_memory import write_dataset  # noqa: E402  (the scripts share their dataset writer)

STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def processor() -> str:
    """The CPU model (lscpu's "Model name"), to say which machine a figure came from."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def events(log: str, cancelled: str) -> dict[str, float]:
    """Wall-clock times of the log lines that follow the cancelled job's end."""
    found: dict[str, float] = {}
    patterns = {
        "end_seen": rf"SLURM job {cancelled} ended",
        "replacement_submitted": rf"SLURM job (?!{cancelled}\b)\d+ submitted",
        "replacement_running": rf"SLURM job (?!{cancelled}\b)\d+ started",
        "worker_connected": r"Dask workers connected: [1-9]",
        "done": r"\] - Done: read",
    }
    for line in log.splitlines():
        stamp = STAMP.match(line)
        if not stamp:
            continue
        when = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for name, pattern in patterns.items():
            after_end = name == "end_seen" or "end_seen" in found
            if name not in found and after_end and re.search(pattern, line):
                found[name] = when
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--docs", type=int, default=1500, help="documents per file (one unit each)")
    parser.add_argument("--poll", type=float, default=5.0, help="cluster.job_poll_interval (the default: 5)")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="slurm-replace-") as tmp:
        work = Path(tmp)
        for i in range(args.files):
            (work / "docs").mkdir(exist_ok=True)
            write_dataset(work / "docs" / f"f{i}.jsonl", args.docs, seed=i)
        out = work / "out"
        command = [
            sys.executable,
            str(ROOT / "run.py"),
            "cluster=slurm",
            "cluster.jobs=1",
            "cluster.cores=1",
            "cluster.memory=2GB",
            f"cluster.job_poll_interval={args.poll}",
            f"dataset.path={work / 'docs'}",
            "dataset.name=replace",
            f"output.path={out}",
            "quiet=true",
        ]
        started = time.time()
        run = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        manifest, log_path = out / ".curator" / "manifest.jsonl", None
        while run.poll() is None and time.time() - started < args.timeout:
            units = manifest.read_text().count('"unit"') if manifest.exists() else 0
            logs = list(work.glob("outputs/*/*/classify.log"))
            running = re.findall(r"SLURM job (\d+) started", logs[0].read_text()) if logs else []
            if units >= 1 and running:
                log_path, job = logs[0], running[0]
                break
            time.sleep(0.2)
        if log_path is None:
            run.kill()
            sys.exit("the run ended or timed out before its first unit was recorded")
        subprocess.run(["scancel", job], check=True)
        cancelled_at = time.time()
        status = run.wait(timeout=args.timeout)
        found = events(log_path.read_text(), job)
        summary = json.loads((out / "_summary.json").read_text()) if (out / "_summary.json").exists() else {}
    report = {
        "command": " ".join(command[1:]),
        "processor": processor(),
        "exit_status": status,
        "job_poll_interval_s": args.poll,
        "seconds_after_scancel": {k: round(v - cancelled_at, 1) for k, v in found.items()},
        "run_seconds": round(time.time() - started, 1),
        "read": summary.get("read"),
        "written": summary.get("written"),
        "units": summary.get("units"),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
