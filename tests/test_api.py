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
from curator.models.hub import ModelNotAvailableError, resolve_model
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


# ---- arguments are checked as NeMo Curator users expect --------------------------------------------


def test_a_string_filter_by_is_one_label_not_its_characters(client, books: Path, tiny_fineweb: Path) -> None:
    dataset = DocumentDataset.read_json(str(books))
    one = FineWebMixtralEduClassifier(filter_by="high_quality", model=str(tiny_fineweb))(dataset).to_pandas()
    listed = FineWebMixtralEduClassifier(filter_by=["high_quality"], model=str(tiny_fineweb))(
        dataset
    ).to_pandas()
    expected = np.clip(reference_scores(tiny_fineweb, FINEWEB_TEXTS), 0, 5)
    kept = sorted(f"b{i}" for i, s in enumerate(expected) if s >= 2.5)
    assert (
        sorted(one.loc[one["text"].notna(), "id"]) == kept == sorted(listed.loc[listed["text"].notna(), "id"])
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"filter_by": 5}, TypeError, "filter_by=5: give a label or a list of labels"),
        ({"filter_by": ["high_quality", 3]}, TypeError, "filter_by=['high_quality', 3]"),
        ({"filter_by": []}, ValueError, "filter_by=[] would keep nothing"),
        ({"max_chars": "x"}, TypeError, "max_chars='x': must be int or None"),
        ({"max_chars": 0}, ValueError, "max_chars=0: must be >= 1, or -1 for the whole document"),
        ({"text_field": 5}, TypeError, "text_field=5: must be str"),
        ({"text_field": ""}, ValueError, "text_field='': must be a non-empty string"),
        ({"max_mem_gb": -3}, ValueError, "max_mem_gb=-3: must be > 0"),
        ({"max_mem_gb": "8"}, TypeError, "max_mem_gb='8': must be a number or None"),
        ({"device_type": "tpu"}, ValueError, "device_type='tpu': choose 'cpu', 'cuda' or None"),
        ({"autocast": "no"}, TypeError, "autocast='no': must be bool"),
        ({"pred_column": ""}, ValueError, "pred_column='': must be a non-empty string"),
        ({"prob_column": 7}, TypeError, "prob_column=7: must be str or None"),
        ({"token": b"hf_SECRET0123456789"}, TypeError, "token=a bytes: must be str, bool or None"),
        ({"token": 1}, TypeError, "token=a int: must be str, bool or None"),
        ({"max_mem_gb": True}, TypeError, "max_mem_gb=True: must be a number or None"),
        ({"batch_size": "8"}, TypeError, "batch_size='8': must be int or None"),
        ({"batch_size": True}, TypeError, "batch_size=True: must be int or None"),
        ({"batch_size": 0}, ValueError, "FineWebMixtralEduClassifier.batch_size=0: must be an integer >= 1"),
        ({"max_length": -1}, ValueError, "FineWebMixtralEduClassifier.max_length=-1"),
        ({"label_threshold": "high"}, TypeError, "label_threshold='high'"),
        ({"batchsize": 8}, TypeError, "unexpected keyword argument 'batchsize'"),
    ],
)
def test_wrong_arguments_fail_at_construction_with_the_argument_named(
    tiny_fineweb: Path, kwargs: dict, error: type, message: str
) -> None:
    with pytest.raises(error) as err:
        FineWebMixtralEduClassifier(model=str(tiny_fineweb), **kwargs)
    assert message in str(err.value)


def test_token_true_or_false_is_accepted_as_nemo_accepts_it(tiny_fineweb: Path) -> None:
    """NeMo's `token`: a string, or True (the saved token, as None) / False (none); a bool was refused."""
    for token in (True, False):
        clf = FineWebEduClassifier(model=str(tiny_fineweb), token=token)
        assert clf.classifier._token is token
    with pytest.raises(ModelNotAvailableError, match="not available here"):  # a TypeError in its message
        resolve_model("curator-tests/no-such-model", token=True)  # once redaction met a bool


def test_nemo_s_accepted_argument_values_still_work(tiny_fineweb: Path) -> None:
    clf = FineWebEduClassifier(
        model=str(tiny_fineweb), max_chars=-1, device_type="cpu", autocast=False, max_mem_gb=2, batch_size=1
    )
    assert clf.classifier.max_chars is None and clf.classifier.batch_size == 1
    assert clf.classifier.inference.device == "cpu" and clf.classifier.inference.dtype == "float32"


def test_unknown_reader_and_writer_arguments_are_refused(books: Path, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="read_json\\(\\) got an unexpected keyword argument 'bogus'"):
        DocumentDataset.read_json(str(books), bogus=1)
    with pytest.raises(TypeError, match="'columns' \\(every input column is read and written back\\)"):
        DocumentDataset.read_parquet(str(books), columns=["text"])
    with pytest.raises(ValueError, match=r"input_meta=.* is not supported: JSON values are read as parsed"):
        DocumentDataset.read_json(str(books), input_meta={"id": "str"})
    dataset = DocumentDataset.read_json(str(books))
    with pytest.raises(TypeError, match="to_json\\(\\) got an unexpected keyword argument 'bogus'"):
        dataset.to_json(str(tmp_path / "out"), bogus=1)
    with pytest.raises(TypeError, match="to_parquet\\(\\) got an unexpected keyword argument 'partition_on'"):
        dataset.to_parquet(str(tmp_path / "out"), partition_on="id")
    assert not (tmp_path / "out").exists()
    for bad in ({"blocksize": "lots"}, {"blocksize": -1}, {"files_per_partition": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))}="):
            DocumentDataset.read_json(str(books), **bad)


def _written(folder: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_json(p, lines=True, dtype=False) for p in sorted(folder.glob("*.jsonl"))}


def test_blocksize_and_files_per_partition_change_partitions_not_results(
    client, tmp_path: Path, tiny_fineweb: Path
) -> None:
    texts = [f"{t} ({i})" for i, t in enumerate(FINEWEB_TEXTS * 4)]  # one big file with a bad line
    write_jsonl(tmp_path / "in" / "big.jsonl", [{"text": t} for t in texts[:20]])
    with open(tmp_path / "in" / "big.jsonl", "a") as handle:
        handle.write("not json\n")
    for i, text in enumerate(texts[20:], start=1):
        write_jsonl(tmp_path / "in" / f"small{i}.jsonl", [{"text": text}])
    classifier = FineWebEduClassifier(model=str(tiny_fineweb))
    plain = DocumentDataset.read_json(str(tmp_path / "in"))
    split = DocumentDataset.read_json(str(tmp_path / "in"), blocksize=1500, files_per_partition=3)
    assert plain.df.npartitions == 1 + len(texts[20:])
    assert 1 < split.df.npartitions < plain.df.npartitions  # big.jsonl in parts, small files in threes
    classifier(plain).to_json(str(tmp_path / "plain"))
    counts = classifier(split).to_json(str(tmp_path / "split"))
    assert (counts["written"], counts["quarantined"]) == (len(texts), 1)
    one = _written(tmp_path / "plain")
    parts = _written(tmp_path / "split")
    assert {n for n in parts if n.startswith("small")} == {n for n in one if n.startswith("small")}
    assert any(n.startswith("big.part") for n in parts) and "big.jsonl" in one
    whole = pd.concat([f for n, f in parts.items() if n.startswith("big.part")], ignore_index=True)
    pd.testing.assert_frame_equal(whole, one["big.jsonl"])  # same ids (file:line), texts and scores
    for name in (n for n in one if n.startswith("small")):
        pd.testing.assert_frame_equal(parts[name], one[name])
    folder = tmp_path / "split" / "_quarantine"
    bad = [json.loads(line) for p in folder.glob("*.jsonl") for line in p.open()]
    assert [(b["line"], b["raw"]) for b in bad] == [(21, "not json")]  # the whole file's line number


def test_an_empty_file_gives_an_empty_result_with_the_output_columns(
    client, tmp_path: Path, tiny_fineweb: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.jsonl").write_text("")
    result = FineWebEduClassifier(model=str(tiny_fineweb))(DocumentDataset.read_json(str(tmp_path / "in")))
    frame = result.to_pandas()
    assert len(frame) == 0 and {"fineweb-edu-score", "fineweb-edu-score-int"} <= set(frame.columns)
    counts = result.to_json(str(tmp_path / "out"))
    assert (counts["read"], counts["written"], counts["quarantined"]) == (0, 0, 0)
    assert (tmp_path / "out" / "empty.jsonl").read_text().strip() == ""  # an output file, no records
    # an empty file first in a folder hides no column of the files after it
    write_jsonl(tmp_path / "in" / "later.jsonl", [{"text": FINEWEB_TEXTS[0], "source": "web"}])
    both = FineWebEduClassifier(model=str(tiny_fineweb))(DocumentDataset.read_json(str(tmp_path / "in")))
    frame = both.to_pandas()
    assert (
        len(frame) == 1 and frame["source"].tolist() == ["web"] and frame["fineweb-edu-score"].notna().all()
    )
