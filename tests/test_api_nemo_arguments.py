"""NeMo Curator's remaining Python API arguments: read_json(compression=) and get_labels()."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from curator.classifiers import DomainClassifier, FineWebEduClassifier, FineWebMixtralEduClassifier
from curator.datasets import DocumentDataset
from curator.errors import ConfigError
from tests.conftest import write_jsonl
from tests.fixtures_deberta import mixin_config


@pytest.fixture()
def mixed(tmp_path: Path) -> Path:
    """One plain and one gzip JSONL file."""
    write_jsonl(tmp_path / "data" / "plain.jsonl", [{"id": "p1", "text": "plain"}])
    (tmp_path / "data" / "packed.jsonl.gz").write_bytes(gzip.compress(b'{"id": "g1", "text": "packed"}\n'))
    return tmp_path / "data"


def ids(dataset: DocumentDataset) -> list[str]:
    return sorted(dataset.head(100)["id"])


def test_compression_infer_and_a_matching_codec_read_the_files(mixed: Path) -> None:
    assert ids(DocumentDataset.read_json(str(mixed))) == ["g1", "p1"]
    assert ids(DocumentDataset.read_json(str(mixed), compression="infer")) == ["g1", "p1"]
    packed = str(mixed / "packed.jsonl.gz")
    assert ids(DocumentDataset.read_json([packed], compression="gzip")) == ["g1"]
    assert ids(DocumentDataset.read_json([str(mixed / "plain.jsonl")], compression=None)) == ["p1"]


def test_a_codec_the_file_names_do_not_imply_is_refused(mixed: Path) -> None:
    with pytest.raises(ConfigError, match=r"plain\.jsonl would be read as uncompressed.*file's name"):
        DocumentDataset.read_json(str(mixed), compression="gzip")
    with pytest.raises(ConfigError, match=r"packed\.jsonl\.gz would be read as gzip"):
        DocumentDataset.read_json(str(mixed), compression=None)
    with pytest.raises(ConfigError, match=r"compression='snappy': choose 'infer', None or one of .*'zstd'"):
        DocumentDataset.read_json(str(mixed), compression="snappy")
    with pytest.raises(TypeError, match="options for the codec are not supported"):
        DocumentDataset.read_json(str(mixed), compression={"method": "gzip", "compresslevel": 1})


def test_get_labels_reads_the_checkpoint_config_without_weights(tmp_path: Path) -> None:
    """A folder holding only config.json (no weights, no tokenizer): the labels in label2id order."""
    labels = ["Sports", "Games", "News"]  # not sorted: the model's own order
    folder = tmp_path / "domain"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(mixin_config("microsoft/deberta-v3-base", labels)))
    classifier = DomainClassifier(model=str(folder))
    assert classifier.get_labels() == labels
    classifier.get_labels().append("x")  # a copy: the classifier's own list is untouched
    assert classifier.get_labels() == labels


def test_get_labels_of_score_classifiers(tiny_fineweb: Path) -> None:
    assert FineWebMixtralEduClassifier(model=str(tiny_fineweb)).get_labels() == [
        "high_quality",
        "low_quality",
    ]
    assert FineWebEduClassifier(model=str(tiny_fineweb)).get_labels() == []  # a score, no labels
