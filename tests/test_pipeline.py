"""The pipeline end to end in-process: pipeline.run(cfg) on real files, real Dask, real model code."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster

from curator import pipeline
from curator.inference import cache
from tests.conftest import DOCS, compose_config, write_jsonl


def read_outputs(folder: Path, suffix: str = ".jsonl") -> dict[str, pd.DataFrame]:
    """Every output file of a folder (not subfolders), keyed by name."""
    if suffix == ".jsonl":
        return {p.name: pd.read_json(p, lines=True, dtype=False) for p in sorted(folder.glob("*.jsonl"))}
    return {p.name: pd.read_parquet(p) for p in sorted(folder.glob(f"*{suffix}"))}


def test_default_run_classifies_every_file(make_config, docs_dir: Path, tmp_path: Path) -> None:
    cfg = make_config(f"dataset.path={docs_dir}", "dataset.name=tiny")
    summary = pipeline.run(cfg, run_dir=str(tmp_path / "run"))
    out = tmp_path / "out"
    outputs = read_outputs(out)
    assert sorted(outputs) == ["a.jsonl", "b.jsonl", "c.jsonl"]
    frame = pd.concat(outputs.values())
    assert list(frame.columns) == ["id", "gold", "text", "domain_pred", "domain_score"]
    assert sorted(frame["id"]) == sorted(f"d{i}" for i in range(len(DOCS)))
    assert (frame["domain_pred"] == frame["gold"]).all()
    assert summary["read"] == len(DOCS) == summary["written"] + summary["filtered"] + summary["quarantined"]
    assert summary["labels"]["domain_pred"] == {label: 1 for label, _ in DOCS}
    engine = summary["classifiers"]["zero_shot_domain"]
    assert engine["documents"] == len(DOCS) and engine["batches"] >= 3  # at least one batch per file
    assert 0 < engine["real_tokens"] <= engine["padded_tokens"] and 0 < engine["padding_efficiency"] <= 1
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["read"] == len(DOCS)


def test_label_filter_keeps_only_those_labels_and_audits_the_rest(
    make_config, docs_dir: Path, tmp_path: Path
):
    cfg = make_config(
        f"dataset.path={docs_dir}", "filter.keep=[Sports,Real_Estate]", "filter.write_filtered=true"
    )
    summary = pipeline.run(cfg)
    kept = pd.concat(read_outputs(tmp_path / "out").values())
    dropped = pd.concat(read_outputs(tmp_path / "out" / "filtered").values())
    assert sorted(kept["domain_pred"]) == ["Real_Estate", "Sports"]
    assert len(dropped) == len(DOCS) - 2 and not dropped["domain_pred"].isin(["Sports", "Real_Estate"]).any()
    assert (summary["written"], summary["filtered"]) == (2, len(DOCS) - 2)


def test_score_filter(make_config, docs_dir: Path, tmp_path: Path) -> None:
    everything = pipeline.run(
        make_config(f"dataset.path={docs_dir}", "classifier.zero_shot_domain.keep_prob=true")
    )
    scores = pd.concat(read_outputs(tmp_path / "out").values())["domain_score"].sort_values().tolist()
    threshold = (scores[2] + scores[3]) / 2
    summary = pipeline.run(make_config(f"dataset.path={docs_dir}", f"filter.min_score={threshold}"))
    assert (everything["written"], summary["written"], summary["filtered"]) == (len(DOCS), 3, 3)
    assert (pd.concat(read_outputs(tmp_path / "out").values())["domain_score"] >= threshold).all()


def test_parquet_outputs_share_one_schema_even_when_empty(
    make_config, docs_dir: Path, tmp_path: Path
) -> None:
    cfg = make_config(
        f"dataset.path={docs_dir}",
        "output.format=parquet",
        "classifier.zero_shot_domain.keep_prob=true",
        "filter.keep=[Sports]",  # b.parquet and c.parquet end up empty
    )
    pipeline.run(cfg)
    files = sorted((tmp_path / "out").glob("*.parquet"))
    assert [p.name for p in files] == ["a.parquet", "b.parquet", "c.parquet"]
    schemas = [pq.read_schema(p) for p in files]
    assert all(s.equals(schemas[0]) for s in schemas)
    assert schemas[0].field("domain_score").type == pa.float32()
    assert schemas[0].field("domain_prob").type == pa.list_(pa.float32())
    assert schemas[0].field("domain_pred").type == pa.string()
    assert [pq.read_metadata(p).num_rows for p in files] == [1, 0, 0]


def test_bad_records_are_quarantined_and_counted(make_config, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_jsonl(folder / "good.jsonl", [{"text": DOCS[0][1]}])
    (folder / "bad.jsonl").write_bytes(b'{"text": "ok"}\n{"text": nope\n{"text": null}\n{"text": ""}\n')
    summary = pipeline.run(make_config(f"dataset.path={folder}"))
    assert (summary["read"], summary["written"], summary["quarantined"]) == (5, 3, 2)
    quarantined = [json.loads(line) for line in (tmp_path / "out" / "quarantine" / "bad.jsonl").open()]
    assert [q["line"] for q in quarantined] == [2, 3]
    assert quarantined[0]["raw"] == '{"text": nope' and "invalid JSON" in quarantined[0]["reason"]
    assert quarantined[1]["record"]["text"] is None and "null" in quarantined[1]["reason"]
    written = read_outputs(tmp_path / "out")["bad.jsonl"]
    assert written["id"].tolist() == ["bad:1", "bad:4"] and written["domain_pred"].notna().all()


def test_missing_text_field_fails_before_any_work(make_config, docs_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        pipeline.run(make_config(f"dataset.path={docs_dir}", "dataset.text_field=body"))
    assert "'body'" in str(err.value) and "['id', 'gold', 'text']" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_unknown_filter_label_fails_with_the_labels(make_config, docs_dir: Path) -> None:
    with pytest.raises(ValueError, match="Books_and_Literature"):
        pipeline.run(make_config(f"dataset.path={docs_dir}", "filter.keep=[Sport]"))


def test_default_output_path_is_stable(make_config) -> None:
    cfg = make_config("classifier=[zero_shot_domain,zero_shot_topic]")
    cfg.output.path = None
    assert pipeline.output_path(cfg).endswith("outputs/data/sample/zero_shot_domain+zero_shot_topic")


def test_two_classifiers_share_one_read_and_one_write(make_config, docs_dir: Path, tmp_path: Path) -> None:
    summary = pipeline.run(
        make_config(f"dataset.path={docs_dir}", "classifier=[zero_shot_domain,zero_shot_topic]")
    )
    frame = pd.concat(read_outputs(tmp_path / "out").values())
    assert {"domain_pred", "domain_score", "topic_pred", "topic_score"} <= set(frame.columns)
    assert set(summary["labels"]) == {"domain_pred", "topic_pred"}


@pytest.mark.slow
def test_local_cluster_loads_the_model_once_per_worker_and_matches_sync(
    make_config, tmp_path: Path, tiny_bert: Path
) -> None:
    folder = tmp_path / "many"
    for i in range(5):
        write_jsonl(folder / f"f{i}.jsonl", [{"text": f"{text} {i}"} for _, text in DOCS])
    model = f"classifier.zero_shot_domain.model={tiny_bert}"
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        cfg = make_config(
            f"dataset.path={folder}",
            model,
            "cluster=scheduler",
            f"cluster.address={cluster.scheduler_address}",
        )
        distributed_summary = pipeline.run(cfg)
        loads = client.run(cache.load_count)
    assert list(loads.values()) == [2]  # one model + one tokenizer for 5 partitions
    distributed_out = read_outputs(tmp_path / "out")
    pipeline.run(make_config(f"dataset.path={folder}", model, f"output.path={tmp_path / 'sync'}"))
    sync_out = read_outputs(tmp_path / "sync")
    assert distributed_summary["read"] == 5 * len(DOCS)
    for name, frame in sync_out.items():
        pd.testing.assert_frame_equal(frame, distributed_out[name])


def test_user_defined_label_set_from_an_own_config_dir(tmp_path: Path) -> None:
    conf = tmp_path / "my_conf" / "classifier"
    conf.mkdir(parents=True)
    (conf / "tickets.yaml").write_text(
        "# @package classifier.tickets\n"
        "family: zero_shot\nmodel: sentence-transformers/all-MiniLM-L6-v2\n"
        "pred_column: ticket_pred\nscore_column: ticket_score\n"
        "labels:\n"
        "  - {name: billing, description: 'Questions about invoices, refunds and charges.'}\n"
        "  - {name: bug, description: 'Reports that the app crashes, shows an error or does not work.'}\n"
    )
    write_jsonl(
        tmp_path / "in" / "t.jsonl",
        [
            {"text": "I was charged twice on my last invoice, please refund me."},
            {"text": "The app crashes with an error every time I open settings."},
        ],
    )
    cfg = compose_config(
        [
            f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]",
            "classifier=tickets",
            "cluster=sync",
            "quiet=true",
            f"dataset.path={tmp_path / 'in'}",
            f"output.path={tmp_path / 'out'}",
        ]
    )
    pipeline.run(cfg)
    assert read_outputs(tmp_path / "out")["t.jsonl"]["ticket_pred"].tolist() == ["billing", "bug"]


def test_cpu_results_are_bit_identical_run_to_run(make_config, docs_dir: Path, tmp_path: Path) -> None:
    outputs = []
    for run in ("first", "second"):
        cfg = make_config(
            f"dataset.path={docs_dir}",
            f"output.path={tmp_path / run}",
            "output.format=parquet",
            "classifier.zero_shot_domain.keep_prob=true",
        )
        pipeline.run(cfg)
        outputs.append({p.name: pq.read_table(p) for p in sorted((tmp_path / run).glob("*.parquet"))})
    assert outputs[0].keys() == outputs[1].keys()
    for name, table in outputs[0].items():
        assert table.equals(outputs[1][name]), name
