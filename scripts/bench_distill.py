"""Distillation on the bundled sample: a slower teacher's labels → a head on the embedded MiniLM.

Two commands of the app, run here one after the other on the same machine:
  1. the teacher: zero-shot domain labels with a larger encoder (all-mpnet-base-v2, scripts/fetch_mpnet.py);
  2. the student: task=train on the teacher's output folder with train.label_field=domain_pred.
Prints the student's agreement with the teacher on held-out rows, the speed ratio teacher/student
(task seconds per document of each, from their summaries), and both against the sample's gold labels
on the same held-out rows.

    python scripts/fetch_mpnet.py --out outputs/models
    python scripts/bench_distill.py --teacher-model outputs/models/all-mpnet-base-v2
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_module

from curator import pipeline
from curator.config import register_configs, to_config
from curator.training import runs
from curator.training.train import VALIDATION


def run(overrides: list[str]) -> dict:
    with initialize_config_module(config_module="curator.conf", version_base="1.3"):
        return pipeline.run(to_config(compose("config", overrides=overrides)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-model", required=True, help="folder or hub id of the teacher's encoder")
    parser.add_argument("--work", default="outputs/bench_distill")
    parser.add_argument("--cluster", default="sync")
    args = parser.parse_args()
    register_configs()
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    common = [f"cluster={args.cluster}", "quiet=true"]
    teacher = work / "teacher"
    run(
        [
            *common,
            f"classifier.zero_shot_domain.model={Path(args.teacher_model).resolve()}",
            f"output.path={teacher}",
        ]
    )
    train = [
        "task=train",
        "train.name=distilled_domain",
        f"train.data={teacher}",
        "train.label_field=domain_pred",
        f"train.output={work / 'classifiers'}",
        f"output.path={work / 'student'}",
    ]
    summary = run([*common, *train])
    d = summary["distillation"]
    held = pd.read_parquet(work / "student" / VALIDATION)
    rows = (
        runs.read_outputs(str(work / "student"), {}).set_index("id").loc[held["id"]]
    )  # teacher columns kept
    teacher_gold = float((rows["domain_pred"] == rows["domain"]).mean())
    student_gold = float((held["pred"].to_numpy() == rows["domain"].to_numpy()).mean())
    print(f"held-out rows: {len(held)} (of {summary['rows']['labelled']}, split stratified by teacher label)")
    print(f"agreement student/teacher: {d['agreement']:.3f}")
    print(f"accuracy vs gold on those rows: teacher {teacher_gold:.3f}, student {student_gold:.3f}")
    student = d["student_seconds_per_document"]
    print(
        f"task seconds per document: teacher {d['seconds'] / d['documents']:.4f}, student {student:.4f} "
        f"→ speed ratio teacher/student {d['speed_ratio']}"
    )


if __name__ == "__main__":
    main()
