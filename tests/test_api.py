"""The Python API: NeMo Curator's examples run with only their import lines changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from distributed import Client, LocalCluster

from curator.classifiers import DistributedDataClassifier, FineWebEduClassifier, FineWebMixtralEduClassifier
from curator.datasets import DocumentDataset
from curator.errors import ConfigError
from curator.models.encoder import load_tokenizer
from curator.utils.file_utils import get_all_files_paths_under
from tests.conftest import FINEWEB_TEXTS, reference_scores, write_jsonl


@pytest.fixture()
def client():
    """A Dask client in this process (threads): the API must use it rather than start its own."""
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture()
def books(tmp_path: Path) -> Path:
    """Two JSONL files, one with a broken line, as a user's `books_dataset/`."""
    records = [{"id": f"b{i}", "text": text} for i, text in enumerate(FINEWEB_TEXTS)]
    write_jsonl(tmp_path / "books_dataset" / "one.jsonl", records[:5])
    write_jsonl(tmp_path / "books_dataset" / "two.jsonl", records[5:])
    with open(tmp_path / "books_dataset" / "two.jsonl", "a") as handle:
        handle.write('{"id": "broken", "text": \n{"id": "b99"}\n')
    return tmp_path / "books_dataset"


def read_jsonl_folder(folder: Path) -> pd.DataFrame:
    return pd.concat([pd.read_json(p, lines=True, dtype=False) for p in sorted(folder.glob("*.jsonl"))])


def test_the_fineweb_seed_example_runs_with_only_imports_changed(
    client, books: Path, tiny_fineweb: Path, tmp_path: Path
) -> None:
    # --- the seed's example (plus model= for the local fixture) ---
    files = get_all_files_paths_under(str(books))
    input_dataset = DocumentDataset.read_json(files, backend="pandas")
    classifier = FineWebEduClassifier(
        batch_size=256,
        text_field="text",
        pred_column="fineweb-edu-score",
        int_column="fineweb-edu-score-int",
        model=str(tiny_fineweb),
    )
    result_dataset = classifier(dataset=input_dataset)
    high = result_dataset[result_dataset["fineweb-edu-score-int"] >= 4]
    counts = high.to_json(str(tmp_path / "edu"))
    # --- what it must have done ---
    expected = np.clip(reference_scores(tiny_fineweb, FINEWEB_TEXTS), 0, 5)
    keep = [f"b{i}" for i, s in enumerate(expected) if round(s) >= 4]
    written = read_jsonl_folder(tmp_path / "edu")
    assert sorted(p.name for p in (tmp_path / "edu").glob("*.jsonl")) == ["one.jsonl", "two.jsonl"]
    assert sorted(written["id"]) == sorted(keep) and 0 < len(keep) < len(FINEWEB_TEXTS)
    assert (written["fineweb-edu-score-int"] >= 4).all()
    scores = dict(zip(written["id"], written["fineweb-edu-score"], strict=True))
    for doc in keep:
        assert scores[doc] == pytest.approx(expected[int(doc[1:])], abs=1e-5)
    quarantine = [json.loads(line) for line in (tmp_path / "edu" / "_quarantine" / "two.jsonl").open()]
    assert quarantine[0]["reason"].startswith("invalid JSON") and quarantine[0]["line"] == 4
    assert quarantine[1]["reason"] == "text field 'text' is null" and quarantine[1]["record"]["id"] == "b99"
    assert counts["written"] + counts["quarantined"] == len(keep) + 2


def test_filter_by_keeps_only_those_labels(client, books: Path, tiny_fineweb: Path) -> None:
    dataset = DocumentDataset.read_json(get_all_files_paths_under(str(books), keep_extensions="jsonl"))
    classifier = FineWebMixtralEduClassifier(filter_by=["high_quality"], model=str(tiny_fineweb))
    frame = classifier(dataset).to_pandas()
    expected = np.clip(reference_scores(tiny_fineweb, FINEWEB_TEXTS), 0, 5)
    good = frame[frame["text"].notna()]
    assert sorted(good["id"]) == sorted(f"b{i}" for i, s in enumerate(expected) if s >= 2.5)
    assert (good["fineweb-mixtral-edu-score-label"] == "high_quality").all()


def test_unknown_filter_label_and_config_key_fail_clearly(tiny_fineweb: Path, books: Path) -> None:
    dataset = DocumentDataset.read_json(str(books))
    with pytest.raises(ConfigError, match="unknown label"):
        FineWebMixtralEduClassifier(filter_by=["excellent"], model=str(tiny_fineweb))(dataset)
    with pytest.raises(ConfigError, match="scores, not labels"):
        FineWebEduClassifier(filter_by=["4"], model=str(tiny_fineweb))(dataset)
    with pytest.raises(Exception, match="batchsize"):
        FineWebEduClassifier(batchsize=8, model=str(tiny_fineweb))


class KeywordClassifier(DistributedDataClassifier):
    """A user's own model through the documented hooks: 'sports' if the document mentions a ball."""

    def __init__(self, tokenizer_folder: str, **kwargs: Any) -> None:
        super().__init__("keyword", pred_column="sport_pred", score_column="sport_score", **kwargs)
        self.tokenizer_folder = tokenizer_folder

    def load_tokenizer(self) -> Any:
        return load_tokenizer(Path(self.tokenizer_folder))

    def load_model(self, device: torch.device) -> torch.nn.Module:
        ball = self.load_tokenizer().convert_tokens_to_ids("ball")

        class Model(torch.nn.Module):
            def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                hit = ((input_ids == ball) & attention_mask.bool()).any(dim=1).float()
                return torch.stack([hit, 1 - hit], dim=1)

        return Model().to(device)

    @property
    def labels(self) -> list[str]:
        return ["sports", "other"]

    def postprocess(self, outputs: np.ndarray) -> dict[str, Any]:
        return self.label_columns(outputs, self.labels)


def test_a_user_subclass_runs_through_the_same_engine(client, minilm_path: Path, tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": ["He kicked the ball.", "Bake the bread.", "A ball game tonight", None]})
    clf = KeywordClassifier(str(minilm_path), filter_by=["sports"])
    result = clf(DocumentDataset.from_pandas(frame, npartitions=2))
    counts = result.to_parquet(str(tmp_path / "out"))
    written = pd.concat(pd.read_parquet(p) for p in sorted((tmp_path / "out").glob("*.parquet")))
    assert sorted(written["text"]) == ["A ball game tonight", "He kicked the ball."]
    assert (counts["written"], counts["quarantined"]) == (2, 1)  # the null text is quarantined, not lost


@pytest.mark.slow
def test_without_a_client_the_api_starts_a_local_cluster_and_closes_it(
    books: Path, tiny_fineweb: Path, tmp_path: Path
) -> None:
    from distributed import default_client

    dataset = DocumentDataset.read_json(str(books))
    counts = FineWebEduClassifier(model=str(tiny_fineweb))(dataset).to_parquet(str(tmp_path / "all"))
    assert (counts["written"], counts["quarantined"]) == (len(FINEWEB_TEXTS), 2)
    with pytest.raises(ValueError):
        default_client()  # nothing left running


def test_the_domain_seed_example_runs_with_only_imports_changed(client, tmp_path: Path) -> None:
    from curator.classifiers import DomainClassifier
    from tests.fixtures_deberta import (
        DOMAIN_LABELS,
        save_backbone,
        texts_of_many_lengths,
        write_mixin_checkpoint,
    )
    from tests.test_mixin import card_predict

    domain_ckpt = write_mixin_checkpoint(
        tmp_path / "domain", save_backbone(tmp_path / "bb"), DOMAIN_LABELS, 1
    )
    texts = texts_of_many_lengths()
    expected, _ = card_predict(domain_ckpt, texts, max_length=512)
    wanted = sorted(set(expected), key=expected.count)[-2:]  # the two labels this random head gives most
    write_jsonl(tmp_path / "books_dataset" / "a.jsonl", [{"text": t} for t in texts[:6]])
    write_jsonl(tmp_path / "books_dataset" / "b.jsonl", [{"text": t} for t in texts[6:]])
    # --- the seed's example (plus model= for the local fixture) ---
    files = get_all_files_paths_under(str(tmp_path / "books_dataset"))
    input_dataset = DocumentDataset.read_json(files, backend="pandas")
    domain_classifier = DomainClassifier(filter_by=wanted, model=str(domain_ckpt))
    result_dataset = domain_classifier(dataset=input_dataset)
    result_dataset.to_json(str(tmp_path / "games_and_sports"))
    # --- what it must have done ---
    written = read_jsonl_folder(tmp_path / "games_and_sports")
    assert sorted(written["text"]) == sorted(
        t for t, label in zip(texts, expected, strict=True) if label in wanted
    )
    assert dict(zip(written["text"], written["domain_pred"], strict=True)) == {
        t: label for t, label in zip(texts, expected, strict=True) if label in wanted
    }
