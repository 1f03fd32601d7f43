"""Outputs for terabyte corpora: compressed files, Parquet layout, attribute sidecars, and `task=mix`."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import zstandard

from curator import pipeline
from curator.errors import ConfigError
from tests.conftest import DOCS, write_jsonl

RECORDS = [{"id": f"d{i}", "gold": label, "text": text} for i, (label, text) in enumerate(DOCS)]


def lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    elif path.name.endswith(".zst"):
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """Two documents files, one of them with a bad line in the middle (row alignment must hold)."""
    folder = tmp_path / "docs"
    write_jsonl(folder / "a.jsonl", RECORDS[:3])
    with (folder / "a.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"text": broken\n')
        handle.write(json.dumps(RECORDS[3]) + "\n")
    write_jsonl(folder / "b.jsonl", RECORDS[4:])
    return folder


# ---- compression and Parquet layout -------------------------------------------------------------
def test_compressed_outputs_and_resume(make_config, docs_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = pipeline.run(make_config(f"dataset.path={docs_dir}", "output.compression=zstd"))
    assert sorted(p.name for p in out.glob("*.jsonl*")) == ["a.jsonl.zst", "b.jsonl.zst", "c.jsonl.zst"]
    assert sum(len(lines(p)) for p in out.glob("*.zst")) == len(DOCS) == summary["written"]
    again = pipeline.run(make_config(f"dataset.path={docs_dir}", "output.compression=zstd"))
    assert again["units"] == {"skipped": 3}  # the manifest knows the compressed names
    plain = pipeline.run(make_config(f"dataset.path={docs_dir}", f"output.path={tmp_path / 'as_input'}"))
    names = sorted(p.name for p in (tmp_path / "as_input").glob("*.jsonl*"))
    assert names == ["a.jsonl", "b.jsonl", "c.jsonl.gz"] and plain["written"] == len(DOCS)  # like its input
    assert lines(tmp_path / "as_input" / "c.jsonl.gz")[0]["id"] == "d5"
    pipeline.run(
        make_config(f"dataset.path={docs_dir}", "output.compression=none", f"output.path={tmp_path / 'n'}")
    )
    assert sorted(p.name for p in (tmp_path / "n").glob("*.jsonl*")) == ["a.jsonl", "b.jsonl", "c.jsonl"]


def test_parquet_codec_and_row_groups(make_config, corpus: Path, tmp_path: Path) -> None:
    cfg = make_config(
        f"dataset.path={corpus}",
        "output.format=parquet",
        "output.compression=gzip",
        "output.row_group_size=2",
    )
    pipeline.run(cfg)
    meta = pq.read_metadata(tmp_path / "out" / "a.parquet")
    assert meta.num_rows == 4 and meta.num_row_groups == 2
    assert meta.row_group(0).column(0).compression == "GZIP"
    assert len(lines(tmp_path / "out" / "_quarantine" / "a.jsonl")) == 1  # quarantine stays plain JSONL


# ---- attribute sidecars -------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_attributes_are_row_aligned_with_the_documents(
    make_config, corpus: Path, tmp_path: Path, fmt: str
) -> None:
    cfg = make_config(
        f"dataset.path={corpus}", "output.content=attributes", f"output.format={fmt}", "filter.min_score=0.3"
    )
    summary = pipeline.run(cfg)
    out = tmp_path / "out"
    read = (lambda p: pd.read_parquet(p)) if fmt == "parquet" else (lambda p: pd.DataFrame(lines(p)))
    attrs = read(out / f"a.{fmt}")
    assert list(attrs.columns) == ["id", "domain_pred", "domain_score", "keep"]
    assert attrs["id"].tolist() == ["d0", "d1", "d2", "a:4", "d3"]  # every input line, in order
    assert attrs.loc[3].isna()[["domain_pred", "domain_score", "keep"]].all()  # the broken line
    kept = attrs["keep"].eq(True)
    assert kept.tolist() == (attrs["domain_score"] >= 0.3).tolist()
    assert not (out / "_filtered").exists()
    assert len(lines(out / "_quarantine" / "a.jsonl")) == 1
    both = pd.concat([attrs, read(out / f"b.{fmt}")])
    assert summary["written"] == int(both["keep"].eq(True).sum())
    assert summary["filtered"] == int(both["keep"].eq(False).sum())
    assert (
        summary["read"] == summary["written"] + summary["filtered"] + summary["quarantined"] == len(DOCS) + 1
    )


def classify_attributes(make_config, corpus: Path, out: Path) -> Path:
    pipeline.run(make_config(f"dataset.path={corpus}", "output.content=attributes", f"output.path={out}"))
    return out


def test_mix_applies_thresholds_to_attributes_without_a_model(
    make_config, corpus: Path, tmp_path: Path
) -> None:
    attributes = classify_attributes(make_config, corpus, tmp_path / "attrs")
    for threshold in (0.2, 0.4):
        direct = tmp_path / f"direct{threshold}"
        pipeline.run(
            make_config(f"dataset.path={corpus}", f"filter.min_score={threshold}", f"output.path={direct}")
        )
        mixed = tmp_path / f"mixed{threshold}"
        summary = pipeline.run(
            make_config(
                f"dataset.path={corpus}",
                "task=mix",
                f"mix.attributes={attributes}",
                f"filter.min_score={threshold}",
                f"output.path={mixed}",
            )
        )
        assert summary["classifiers"] == {}  # no model ran
        for name in ("a.jsonl", "b.jsonl"):
            assert lines(mixed / name) == lines(direct / name)
        assert [q["line"] for q in lines(mixed / "_quarantine" / "a.jsonl")] == [4]


def test_mix_refuses_documents_that_changed_since_classifying(
    make_config, corpus: Path, tmp_path: Path
) -> None:
    attributes = classify_attributes(make_config, corpus, tmp_path / "attrs")
    write_jsonl(corpus / "b.jsonl", RECORDS[4:] + RECORDS[:1])  # one more document
    with pytest.raises(pipeline.RunFailedError, match=r"b\.jsonl does not match .* row for row"):
        pipeline.run(make_config(f"dataset.path={corpus}", "task=mix", f"mix.attributes={attributes}"))


def test_mix_and_attribute_settings_are_checked(make_config, corpus: Path) -> None:
    with pytest.raises(ConfigError, match=r"task=mix needs mix\.attributes"):
        pipeline.run(make_config(f"dataset.path={corpus}", "task=mix"))
    with pytest.raises(ConfigError, match=r"output\.compression='lz4'"):
        pipeline.run(make_config(f"dataset.path={corpus}", "output.compression=lz4"))


def test_attribute_rows_stay_aligned_when_a_value_does_not_fit(make_config, tmp_path: Path) -> None:
    from curator.io.schema import SAMPLE_ROWS

    records = [{"id": i, "text": f"document number {i}"} for i in range(SAMPLE_ROWS)]
    write_jsonl(tmp_path / "in" / "a.jsonl", [*records, {"id": "late", "text": DOCS[0][1]}])
    cfg = [f"dataset.path={tmp_path / 'in'}", "filter.min_score=0.0"]
    attrs = tmp_path / "attrs"
    pipeline.run(
        make_config(*cfg, "output.content=attributes", "output.format=parquet", f"output.path={attrs}")
    )
    table = pq.read_table(attrs / "a.parquet")  # ids are int64 from the sample: "late" cannot be written
    assert table.num_rows == SAMPLE_ROWS + 1 and table.column("keep")[SAMPLE_ROWS].as_py() is None
    assert [q["stage"] for q in lines(attrs / "_quarantine" / "a.jsonl")] == ["write"]
    mixed = pipeline.run(
        make_config(*cfg, "task=mix", f"mix.attributes={attrs}", f"output.path={tmp_path / 'm'}")
    )
    assert mixed["written"] == SAMPLE_ROWS + 1  # the documents keep their own ids; the row still aligns
