"""task=train: embed a labelled set, fit a head, write a classifier that runs like any other; distillation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file, save_file

from curator import pipeline
from curator.classifiers.head import HeadClassifier, load_head
from curator.errors import ConfigError
from curator.training import runs
from curator.training.fit import predict
from curator.training.train import VALIDATION
from tests.conftest import DOCS, write_jsonl

TOPICS = {
    "sport": ["The team won the match {}-1.", "A striker scored in minute {}.", "The race lasted {} laps."],
    "food": ["Bake the cake for {} minutes.", "Add {} grams of flour.", "Simmer the soup for {} minutes."],
    "tech": ["The laptop has {} GB of RAM.", "Update the router firmware to v{}.", "The CPU runs at {} GHz."],
}


def labelled(path: Path, score: bool = False) -> Path:
    """30 short documents, ten per topic (or a numeric score per topic for regression)."""
    scores = {"sport": 0.5, "food": 2.0, "tech": 4.5}
    records = [
        {"id": f"r{topic}{i:02d}", "text": template.format(i + 2), "label": scores[topic] if score else topic}
        for topic, templates in TOPICS.items()
        for i, template in enumerate(templates * 4)
        if i < 10
    ]
    return write_jsonl(path, records)


def train_config(make_config, tmp_path: Path, tiny_bert: Path, data: Path, *extra: str):
    return make_config(
        "task=train",
        "train.name=topics",
        f"dataset.path={data}",
        f"train.encoder={tiny_bert}",
        f"train.output={tmp_path / 'classifiers'}",
        "train.epochs=50",
        *extra,
    )


def test_trained_folder_loads_strictly_and_predicts_what_the_head_predicted(
    tmp_path: Path, make_config, tiny_bert: Path
) -> None:
    data = labelled(tmp_path / "data" / "train.jsonl")
    summary = pipeline.run(train_config(make_config, tmp_path, tiny_bert, data))
    assert summary["kind"] == "classification" and summary["rows"]["labelled"] == 30
    assert (summary["train_rows"], summary["validation_rows"]) == (24, 6)  # 2 of each label's 10
    matrix = np.array(summary["validation"]["confusion"]["matrix"])
    assert summary["validation"]["confusion"]["labels"] == ["food", "sport", "tech"]
    assert matrix.sum() == 6 and list(matrix.sum(axis=1)) == [2, 2, 2]
    assert summary["validation"]["accuracy"] == round(np.trace(matrix) / 6, 4)
    folder = Path(summary["classifier_folder"])
    assert json.loads((folder / "summary.json").read_text())["validation"] == summary["validation"]
    assert "Confusion matrix" in (folder / "report.html").read_text()

    # the folder's head, loaded strictly, gives the in-memory head's predictions on the held-out rows
    spec, head = load_head(folder)
    held = pd.read_parquet(tmp_path / "out" / VALIDATION)
    frame = runs.read_outputs(str(tmp_path / "out"), {}).set_index("id").loc[held["id"]]
    probs = predict(head, spec, np.stack(frame[runs.EMBEDDING].to_numpy()))
    assert [spec.labels[i] for i in probs.argmax(axis=1)] == held["pred"].tolist()

    # classifier=topics runs it like any other classifier (its YAML on Hydra's search path)
    run = make_config(
        f"hydra.searchpath=[file://{tmp_path / 'classifiers'}]",
        "classifier=topics",
        f"dataset.path={data}",
        f"output.path={tmp_path / 'run'}",
    )
    assert run.classifier["topics"].family == "head"
    pipeline.run(run)
    written = pd.read_json(tmp_path / "run" / "train.jsonl", lines=True).set_index("id").loc[held["id"]]
    assert written["topics_pred"].tolist() == held["pred"].tolist()
    np.testing.assert_allclose(written["topics_score"], probs.max(axis=1), atol=1e-5)

    # and the Python API
    clf = HeadClassifier("topics", model=str(folder), pred_column="topic")
    texts = frame["text"].tolist()
    assert clf.labels == ["food", "sport", "tech"]
    assert list(clf.predict(texts)["topic"]) == held["pred"].tolist()


def test_a_tampered_head_does_not_load(tmp_path: Path, make_config, tiny_bert: Path) -> None:
    data = labelled(tmp_path / "data" / "train.jsonl")
    folder = Path(pipeline.run(train_config(make_config, tmp_path, tiny_bert, data))["classifier_folder"])
    state = load_file(str(folder / "head.safetensors"))
    state["extra.weight"] = state["0.weight"].clone()
    save_file(state, str(folder / "head.safetensors"))
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_head(folder)


def test_regression_head_and_resumed_embeddings(tmp_path: Path, make_config, tiny_bert: Path) -> None:
    data = labelled(tmp_path / "data" / "scores.jsonl", score=True)
    cfg = train_config(make_config, tmp_path, tiny_bert, data, "train.hidden=8")
    summary = pipeline.run(cfg)
    assert summary["kind"] == "regression" and summary["embedding"]["units"] == {"done": 1}
    validation = summary["validation"]
    assert validation["rows"] == 6 and validation["mae"] >= 0 and "confusion" not in validation
    spec, head = load_head(summary["classifier_folder"])
    assert spec.score_range == [0.5, 4.5] and spec.hidden == 8
    held = pd.read_parquet(tmp_path / "out" / VALIDATION)
    frame = runs.read_outputs(str(tmp_path / "out"), {}).set_index("id").loc[held["id"]]
    scores = predict(head, spec, np.stack(frame[runs.EMBEDDING].to_numpy()))
    assert scores.tolist() == held["pred"].tolist()  # the folder's head is the in-memory one, exactly
    again = pipeline.run(cfg)  # the embedding step resumes: nothing embedded twice, the same head
    assert again["embedding"]["units"] == {"skipped": 1} and again["validation"] == validation
    clf = HeadClassifier("scores", model=summary["classifier_folder"], pred_column="score")
    out = clf.predict(["Bake the cake for 9 minutes."])
    assert out["score"].dtype == np.float32 and clf.output_types()["score"].bit_width == 32


def test_distillation_from_a_previous_run(tmp_path: Path, make_config, tiny_model, tiny_bert: Path) -> None:
    records = [{"id": f"d{i:03d}", "text": f"{text} ({i})"} for i in range(8) for _, text in DOCS]
    docs = write_jsonl(tmp_path / "docs" / "docs.jsonl", records)
    teacher = pipeline.run(
        make_config(tiny_model, f"dataset.path={docs}", f"output.path={tmp_path / 'teacher'}")
    )
    assert teacher["written"] == 48
    summary = pipeline.run(
        train_config(
            make_config,
            tmp_path,
            tiny_bert,
            tmp_path / "teacher",
            f"train.data={tmp_path / 'teacher'}",
            "train.label_field=domain_pred",
        )
    )
    distilled = summary["distillation"]
    assert distilled["classifier"] == "zero_shot_domain" and distilled["documents"] == 48
    assert distilled["agreement"] == summary["validation"]["accuracy"]
    assert distilled["speed_ratio"] > 0
    assert summary["rows"]["labelled"] == 48


def test_train_settings_fail_at_start_up(tmp_path: Path, make_config, tiny_bert: Path) -> None:
    data = labelled(tmp_path / "data" / "train.jsonl")
    with pytest.raises(ConfigError, match=r"train\.name=null") as err:
        pipeline.run(make_config("task=train", f"dataset.path={data}", "train.validation=1.5"))
    assert "train.validation=1.5" in str(err.value)
    cfg = train_config(make_config, tmp_path, tiny_bert, data, "train.label_field=topic")
    with pytest.raises(ConfigError, match="Label field 'topic' is not in the data"):
        pipeline.run(cfg)


def test_no_validation_trains_on_every_row(tmp_path: Path, make_config, tiny_bert: Path) -> None:
    data = labelled(tmp_path / "data" / "train.jsonl")
    summary = pipeline.run(train_config(make_config, tmp_path, tiny_bert, data, "train.validation=0"))
    assert (summary["train_rows"], summary["validation_rows"]) == (30, 0)
    assert summary["validation"]["rows"] == 0 and summary["validation"]["accuracy"] is None
    assert load_head(summary["classifier_folder"])[0].labels == ["food", "sport", "tech"]
