"""Label prototypes: a zero-shot label's vector from its description and example texts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from curator import pipeline
from curator.classifiers.zero_shot import ZeroShotClassifier
from curator.config import LabelConfig
from curator.errors import ConfigError
from tests.conftest import DOCS, MINILM, write_jsonl

LABELS = [
    LabelConfig("sports", "Sport: matches, teams and athletes."),
    LabelConfig("food", "Cooking and recipes."),
    LabelConfig("tech", "Computers and gadgets."),
]
EXAMPLES = [
    {"text": "The striker scored twice in the derby.", "label": "sports"},
    {"text": "A marathon runner broke the course record.", "label": "sports"},
    {"text": "Simmer the tomatoes with garlic for ten minutes.", "label": "food"},
    {"text": "Knead the dough, let it rise, then bake.", "label": "food"},
    {"text": "Bread, butter and a pinch of salt.", "label": "food"},
]


def classifier(model: str, **kwargs) -> ZeroShotClassifier:
    return ZeroShotClassifier(
        "z", model=model, labels=kwargs.pop("labels", LABELS), pred_column="z", **kwargs
    )


def vectors(clf: ZeroShotClassifier) -> np.ndarray:
    model, _, _ = clf._runtime()
    return model.label_embeddings.numpy().copy()


def test_shuffled_examples_file_gives_the_same_vectors_bit_for_bit(tmp_path: Path, tiny_bert: Path) -> None:
    shuffled = EXAMPLES[:]
    random.Random(3).shuffle(shuffled)
    assert shuffled != EXAMPLES
    a = vectors(classifier(str(tiny_bert), examples_path=str(write_jsonl(tmp_path / "a.jsonl", EXAMPLES))))
    b = vectors(classifier(str(tiny_bert), examples_path=str(write_jsonl(tmp_path / "b.jsonl", shuffled))))
    assert np.array_equal(a, b)
    # the same examples given inline in the YAML's labels: the same vectors too
    inline = [
        LabelConfig(x.name, x.description, [e["text"] for e in shuffled if e["label"] == x.name])
        for x in LABELS
    ]
    assert np.array_equal(a, vectors(classifier(str(tiny_bert), labels=inline)))


def test_prototype_is_the_normalised_mean_and_labels_without_examples_keep_their_description(
    tmp_path: Path, tiny_bert: Path
) -> None:
    path = write_jsonl(tmp_path / "ex.jsonl", EXAMPLES)
    with_examples = classifier(str(tiny_bert), examples_path=str(path))
    plain = classifier(str(tiny_bert))
    proto, described = vectors(with_examples), vectors(plain)
    # "tech" has no examples: exactly its description's vector, as without any examples
    assert np.array_equal(proto[2], described[2])
    assert not np.allclose(proto[0], described[0])
    # by hand: embed description and examples one at a time, average, normalise
    model, _, _ = plain._runtime()
    texts = [LABELS[1].description] + [e["text"] for e in EXAMPLES if e["label"] == "food"]
    rows = np.stack([plain.embed_texts(model, [t], torch.device("cpu"))[0] for t in texts])
    mean = rows.mean(axis=0)
    np.testing.assert_allclose(proto[1], mean / np.linalg.norm(mean), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(proto, axis=1), 1.0, atol=1e-6)


def test_label_without_description_is_its_examples_alone(tmp_path: Path, tiny_bert: Path) -> None:
    labels = [LabelConfig("sports", "", ["The striker scored twice in the derby."]), LABELS[1]]
    clf = classifier(str(tiny_bert), labels=labels)
    model, _, _ = clf._runtime()
    alone = clf.embed_texts(model, ["The striker scored twice in the derby."], torch.device("cpu"))[0]
    np.testing.assert_allclose(vectors(clf)[0], alone, atol=1e-6)


def test_vectors_are_deterministic_across_builds(tmp_path: Path, tiny_bert: Path) -> None:
    path = str(write_jsonl(tmp_path / "ex.jsonl", EXAMPLES))
    assert np.array_equal(
        vectors(classifier(str(tiny_bert), examples_path=path)),
        vectors(classifier(str(tiny_bert), examples_path=path)),
    )


def test_parquet_examples_with_own_field_names(tmp_path: Path, tiny_bert: Path) -> None:
    frame = pd.DataFrame({"body": [e["text"] for e in EXAMPLES], "topic": [e["label"] for e in EXAMPLES]})
    frame.to_parquet(tmp_path / "ex.parquet")
    jsonl = vectors(
        classifier(str(tiny_bert), examples_path=str(write_jsonl(tmp_path / "ex.jsonl", EXAMPLES)))
    )
    parquet = classifier(
        str(tiny_bert),
        examples_path=str(tmp_path / "ex.parquet"),
        examples_text_field="body",
        examples_label_field="topic",
    )
    assert np.array_equal(jsonl, vectors(parquet))


def test_examples_pull_documents_towards_their_label() -> None:
    """On the real MiniLM: a label described badly is found once it has examples."""
    labels = [
        LabelConfig("Sports", "Things."),
        LabelConfig("Food_and_Drink", "Cooking, recipes and restaurants."),
    ]
    texts = [DOCS[0][1]]
    assert list(classifier(MINILM, labels=labels).predict(texts)["z"]) == ["Food_and_Drink"]
    examples = ["The striker scored twice in the derby.", "The tennis final went to five sets."]
    labels[0] = LabelConfig("Sports", "Things.", examples)
    assert list(classifier(MINILM, labels=labels).predict(texts)["z"]) == ["Sports"]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"text": "A recipe.", "label": "Cooking"}], "unknown label(s) ['Cooking']"),
        ([{"text": "  ", "label": "Sports"}], "empty or non-text 'text' in record(s) [1]"),
        ([{"body": "A goal.", "label": "Sports"}], "records lack field 'text'"),
        ([], "no examples in the file"),
    ],
)
def test_bad_examples_files_fail_at_start_up(
    tmp_path: Path, make_config, tiny_model, records, message
) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    cfg = make_config(tiny_model, f"classifier.zero_shot_domain.examples_path={path}")
    with pytest.raises(ConfigError) as err:
        pipeline.run(cfg)
    assert "classifier.zero_shot_domain.examples_path" in str(err.value)
    assert message in str(err.value)


def test_missing_examples_file_and_empty_inline_example(tmp_path: Path, make_config, tiny_model) -> None:
    cfg = make_config(tiny_model, f"classifier.zero_shot_domain.examples_path={tmp_path / 'nope.jsonl'}")
    with pytest.raises(ConfigError, match="no such file"):
        pipeline.run(cfg)
    cfg = make_config(tiny_model, "classifier.zero_shot_domain.labels.0.examples=['  ']")
    with pytest.raises(ConfigError, match="label 'Adult' has an empty example text"):
        pipeline.run(cfg)


def test_examples_file_enters_the_resume_fingerprint(
    tmp_path: Path, make_config, tiny_model, docs_dir
) -> None:
    path = tmp_path / "ex.jsonl"
    write_jsonl(path, [{"text": "The striker scored.", "label": "Sports"}])
    overrides = (tiny_model, f"dataset.path={docs_dir}", f"classifier.zero_shot_domain.examples_path={path}")
    first = pipeline.run(make_config(*overrides))
    again = pipeline.run(make_config(*overrides))
    assert again["units"] == {"skipped": 3} and again["fingerprint"] == first["fingerprint"]
    write_jsonl(path, [{"text": "The striker scored a goal.", "label": "Sports"}])
    changed = make_config(*overrides, "output.mode=overwrite")
    assert pipeline.run(changed)["fingerprint"] != first["fingerprint"]
    plain = pipeline.run(make_config(tiny_model, f"dataset.path={docs_dir}", "output.mode=overwrite"))
    header = json.loads((tmp_path / "out" / ".curator" / "manifest.jsonl").read_text().splitlines()[0])
    assert "files" not in header["settings"] and plain["fingerprint"] == header["fingerprint"]


def test_prototypes_are_computed_once_per_worker_not_per_unit(
    tmp_path: Path, make_config, tiny_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five units on one Dask worker: the label vectors (examples embedded) are computed once, with the model
    the worker caches, and every unit is labelled with them."""
    from distributed import Client, LocalCluster

    from curator.inference import cache

    calls = []
    original = ZeroShotClassifier.label_vectors

    def counted(self, *args, **kwargs):
        calls.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ZeroShotClassifier, "label_vectors", counted)
    cache.clear()  # the worker runs in this process: start without a cached model
    data = tmp_path / "in"
    for i in range(5):
        write_jsonl(data / f"u{i}.jsonl", [{"text": f"{text} ({i})"} for _, text in DOCS])
    path = write_jsonl(tmp_path / "ex.jsonl", [{"text": "The striker scored.", "label": "Sports"}])
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        summary = pipeline.run(
            make_config(
                tiny_model,
                f"dataset.path={data}",
                f"classifier.zero_shot_domain.examples_path={path}",
                "cluster=scheduler",
                f"cluster.address={cluster.scheduler_address}",
            )
        )
    assert summary["read"] == 5 * len(DOCS) and summary["units"] == {"done": 5}
    assert calls == ["zero_shot_domain"]
