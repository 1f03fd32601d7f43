"""The pipeline end to end in-process: pipeline.run(cfg) on real files, real Dask, real model code."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster

from curator import pipeline
from curator.errors import ConfigError
from curator.inference import cache
from tests.conftest import DOCS, compose_config, write_jsonl


def read_outputs(folder: Path, suffix: str = ".jsonl") -> dict[str, pd.DataFrame]:
    """Every output file of a folder (not subfolders), keyed by name."""
    if suffix == ".jsonl":  # plain and compressed (a .gz input is written .gz)
        return {p.name: pd.read_json(p, lines=True, dtype=False) for p in sorted(folder.glob("*.jsonl*"))}
    return {p.name: pd.read_parquet(p) for p in sorted(folder.glob(f"*{suffix}"))}


def test_default_run_classifies_every_file(make_config, docs_dir: Path, tmp_path: Path) -> None:
    cfg = make_config(f"dataset.path={docs_dir}", "dataset.name=tiny")
    summary = pipeline.run(cfg, run_dir=str(tmp_path / "run"))
    out = tmp_path / "out"
    outputs = read_outputs(out)
    assert sorted(outputs) == ["a.jsonl", "b.jsonl", "c.jsonl.gz"]  # compressed as its input was
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
    for page in (
        tmp_path / "run" / "report.html",
        out / "_report.html",
    ):  # in the run dir and beside the data
        assert '"domain_pred"' in page.read_text() and "tiny" in page.read_text()


def test_label_filter_keeps_only_those_labels_and_audits_the_rest(
    make_config, docs_dir: Path, tmp_path: Path
):
    cfg = make_config(
        f"dataset.path={docs_dir}", "filter.keep=[Sports,Real_Estate]", "filter.write_filtered=true"
    )
    summary = pipeline.run(cfg)
    kept = pd.concat(read_outputs(tmp_path / "out").values())
    dropped = pd.concat(read_outputs(tmp_path / "out" / "_filtered").values())
    assert sorted(kept["domain_pred"]) == ["Real_Estate", "Sports"]
    assert len(dropped) == len(DOCS) - 2 and not dropped["domain_pred"].isin(["Sports", "Real_Estate"]).any()
    assert (summary["written"], summary["filtered"]) == (2, len(DOCS) - 2)


def test_score_filter(make_config, docs_dir: Path, tmp_path: Path) -> None:
    everything = pipeline.run(
        make_config(f"dataset.path={docs_dir}", "classifier.zero_shot_domain.keep_prob=true")
    )
    scores = pd.concat(read_outputs(tmp_path / "out").values())["domain_score"].sort_values().tolist()
    threshold = (scores[2] + scores[3]) / 2
    summary = pipeline.run(
        make_config(f"dataset.path={docs_dir}", f"filter.min_score={threshold}", "output.mode=overwrite")
    )
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
    quarantined = [json.loads(line) for line in (tmp_path / "out" / "_quarantine" / "bad.jsonl").open()]
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


def test_default_output_path_is_stable_and_differs_by_what_decides_the_outputs(make_config) -> None:
    """The same command resumes in its folder; another filter or classifier setting gets its own (run one
    after another, as the README's commands are, they once met a folder of another configuration)."""

    def default(*overrides: str) -> str:
        cfg = make_config("classifier=[zero_shot_domain,zero_shot_topic]", *overrides)
        cfg.output.path = None
        return pipeline.output_path(cfg)

    plain = default()
    assert re.search(r"outputs/data/sample/zero_shot_domain\+zero_shot_topic-[0-9a-f]{8}$", plain)
    assert default() == plain and default("cluster.n_workers=3") == plain  # cluster settings: same outputs
    others = {default("filter.keep=[Games]"), default("classifier.zero_shot_domain.temperature=0.1")}
    assert len(others) == 2 and plain not in others


def test_commands_run_one_after_another_get_their_own_default_folders_and_resume_there(
    make_config, docs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    def run(*overrides: str) -> dict:
        cfg = make_config(f"dataset.path={docs_dir}", *overrides)
        cfg.output.path = None
        return pipeline.run(cfg)

    first, filtered, again = run(), run("filter.keep=[Sports]"), run()
    assert first["output_path"] != filtered["output_path"] and again["output_path"] == first["output_path"]
    assert filtered["filtered"] > 0 and set(again["units"]) == {"skipped"}


def test_a_missing_text_field_names_the_setting_that_chose_it(make_config, docs_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"Set classifier\.zero_shot_domain\.text_field to the column"):
        pipeline.run(make_config(f"dataset.path={docs_dir}", "classifier.zero_shot_domain.text_field=body"))
    with pytest.raises(ConfigError, match=r"Set dataset\.text_field to the column"):
        pipeline.run(make_config(f"dataset.path={docs_dir}", "dataset.text_field=body"))


def test_two_classifiers_share_one_read_and_one_write(make_config, docs_dir: Path, tmp_path: Path) -> None:
    summary = pipeline.run(
        make_config(f"dataset.path={docs_dir}", "classifier=[zero_shot_domain,zero_shot_topic]")
    )
    frame = pd.concat(read_outputs(tmp_path / "out").values())
    assert {"domain_pred", "domain_score", "topic_pred", "topic_score"} <= set(frame.columns)
    assert set(summary["labels"]) == {"domain_pred", "topic_pred"}


@pytest.mark.slow
def test_local_cluster_loads_the_model_once_per_worker_and_matches_sync(
    make_config, tmp_path: Path, tiny_model: str
) -> None:
    folder = tmp_path / "many"
    for i in range(5):
        write_jsonl(folder / f"f{i}.jsonl", [{"text": f"{text} {i}"} for _, text in DOCS])
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        cfg = make_config(
            f"dataset.path={folder}",
            tiny_model,
            "cluster=scheduler",
            f"cluster.address={cluster.scheduler_address}",
        )
        distributed_summary = pipeline.run(cfg)
        loads = client.run(cache.load_count)
    assert list(loads.values()) == [2]  # one model + one tokenizer for 5 partitions
    distributed_out = read_outputs(tmp_path / "out")
    pipeline.run(make_config(f"dataset.path={folder}", tiny_model, f"output.path={tmp_path / 'sync'}"))
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


# ---- splitting, grouping, bad input, fsspec, the report beside the outputs ------------------------
def _records(n: int, prefix: str = "") -> list[dict]:
    return [{"text": f"{DOCS[i % len(DOCS)][1]} {prefix}{i}"} for i in range(n)]


def _all_rows(folder: Path) -> pd.DataFrame:
    return pd.concat(read_outputs(folder).values(), ignore_index=True).sort_values("id", ignore_index=True)


def test_a_large_file_is_split_into_parts_with_the_same_rows_as_whole(
    make_config, tmp_path: Path, tiny_model: str
) -> None:
    folder = tmp_path / "in"
    path = write_jsonl(folder / "big.jsonl", _records(30))
    with path.open("ab") as handle:
        handle.write(b'{"text": broken\n{"text": "after the bad line"}\n')
    split = pipeline.run(make_config(f"dataset.path={folder}", tiny_model, "dataset.blocksize=1000"))
    whole = pipeline.run(
        make_config(f"dataset.path={folder}", tiny_model, f"output.path={tmp_path / 'whole'}")
    )
    names = sorted(read_outputs(tmp_path / "out"))
    assert (
        len(names) >= 3
        and names[0] == "big.part0000.jsonl"
        and names == [f"big.part{i:04d}.jsonl" for i in range(len(names))]
    )
    assert list(read_outputs(tmp_path / "whole")) == ["big.jsonl"]
    parts, one = _all_rows(tmp_path / "out"), _all_rows(tmp_path / "whole")
    assert parts["id"].tolist() == one["id"].tolist() and parts["id"].is_unique and len(parts) == 31
    assert (parts["domain_pred"] == one["domain_pred"]).all()
    assert np.allclose(parts["domain_score"], one["domain_score"], atol=1e-5)
    folder = tmp_path / "out" / "_quarantine"
    quarantined = [json.loads(q) for p in folder.glob("*.jsonl") for q in p.open()]
    assert [q["line"] for q in quarantined] == [31] and quarantined[0]["input_file"] == str(path)
    assert (split["read"], split["quarantined"], split["files"], split["parts"]) == (32, 1, 1, len(names))
    assert (whole["read"], whole["quarantined"], whole["parts"]) == (32, 1, 1)
    assert split["labels"] == whole["labels"]


def test_parquet_row_groups_become_parts(make_config, tmp_path: Path, tiny_model: str) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    frame = pd.DataFrame(_records(40)).assign(n=np.arange(40, dtype=np.int16))
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), folder / "rows.parquet", row_group_size=10
    )
    summary = pipeline.run(make_config(f"dataset.path={folder}", tiny_model, "dataset.blocksize=1"))
    outputs = read_outputs(tmp_path / "out", ".parquet")
    assert sorted(outputs) == [f"rows.part{i:04d}.parquet" for i in range(4)]
    rows = pd.concat(outputs[name] for name in sorted(outputs))
    assert rows["id"].tolist() == [f"rows:{i}" for i in range(40)] and rows["n"].dtype == np.int16
    assert summary["read"] == summary["written"] == 40


def test_small_files_grouped_per_task_still_write_one_output_each(
    make_config, tmp_path: Path, tiny_model: str
) -> None:
    folder = tmp_path / "in"
    for i in range(5):
        write_jsonl(folder / f"f{i}.jsonl", _records(3 + i, prefix=f"f{i}-"))
    grouped = pipeline.run(make_config(f"dataset.path={folder}", tiny_model, "dataset.files_per_partition=3"))
    single = pipeline.run(
        make_config(f"dataset.path={folder}", tiny_model, f"output.path={tmp_path / 'single'}")
    )
    grouped_out, single_out = read_outputs(tmp_path / "out"), read_outputs(tmp_path / "single")
    assert sorted(grouped_out) == sorted(single_out) == [f"f{i}.jsonl" for i in range(5)]
    for name, frame in single_out.items():
        assert grouped_out[name]["id"].tolist() == frame["id"].tolist()
        assert (grouped_out[name]["domain_pred"] == frame["domain_pred"]).all()
    assert grouped["classifiers"]["zero_shot_domain"]["documents"] == 25 == grouped["read"]
    assert [f["unit"] for f in grouped["per_file"]] == [f"f{i}" for i in range(5)]
    assert grouped["labels"] == single["labels"]


BIG_DOC = "A very long document about gardening and growing tomatoes. " * 60_000  # ~3.6 MB


def test_every_kind_of_bad_record_is_quarantined_and_counted(make_config, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    lines = [
        json.dumps({"id": "good", "text": DOCS[0][1]}).encode(),
        b'{"id": "malformed", "text": "unterminated',
        json.dumps({"id": "missing", "body": "no text field"}).encode(),
        json.dumps({"id": "null", "text": None}).encode(),
        json.dumps({"id": "empty", "text": ""}).encode(),
        json.dumps({"id": "number", "text": 42}).encode(),
        json.dumps({"id": "list", "text": ["a", "b"]}).encode(),
        json.dumps({"id": "object", "text": {"a": 1}}).encode(),
        b'{"id": "latin1", "text": "caf\xe9"}',
        b'["not", "an", "object"]',
        b"",  # a blank line: not a record
        json.dumps({"id": "big", "text": BIG_DOC}).encode(),
        json.dumps({"id": "whitespace", "text": "   "}).encode(),
    ]
    path = folder / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    summary = pipeline.run(make_config(f"dataset.path={folder}", "filter.keep=[Sports]"))
    assert summary["read"] == 12 == summary["written"] + summary["filtered"] + summary["quarantined"]
    assert summary["quarantined"] == 8 and summary["written"] >= 1
    quarantined = [json.loads(q) for q in (tmp_path / "out" / "_quarantine" / "bad.jsonl").open()]
    assert all(q["input_file"] == str(path) for q in quarantined)
    by_line = {q["line"]: q["reason"] for q in quarantined}
    assert sorted(by_line) == [2, 3, 4, 6, 7, 8, 9, 10]
    assert by_line[2].startswith("invalid JSON") and by_line[3] == "missing text field 'text'"
    assert by_line[4] == "text field 'text' is null" and "int, not a string" in by_line[6]
    assert "list, not a string" in by_line[7] and "dict, not a string" in by_line[8]
    assert by_line[9].startswith("invalid UTF-8") and by_line[10].startswith("not a JSON object")
    kept = read_outputs(tmp_path / "out")["bad.jsonl"]
    assert kept["domain_pred"].eq("Sports").all() and "good" in kept["id"].tolist()
    unfiltered = pipeline.run(
        make_config(f"dataset.path={folder}", f"output.path={tmp_path / 'all'}", "quiet=true")
    )
    every = read_outputs(tmp_path / "all")["bad.jsonl"].set_index("id")
    assert sorted(every.index) == ["big", "empty", "good", "whitespace"]  # empty text: classified
    assert every["domain_pred"].notna().all() and len(every.loc["big", "text"]) == len(BIG_DOC)
    assert unfiltered["written"] == 4


def test_text_field_missing_from_every_file_fails_fast_but_one_file_with_it_is_enough(
    make_config, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    write_jsonl(folder / "a.jsonl", [{"body": "first file has no text"}])
    write_jsonl(folder / "b.jsonl", [{"body": "neither has this one"}])
    with pytest.raises(ValueError, match=r"'text' is not in any of the 2 input file\(s\)"):
        pipeline.run(make_config(f"dataset.path={folder}"))
    assert not (tmp_path / "out").exists()
    write_jsonl(folder / "c.jsonl", [{"text": DOCS[1][1]}])
    summary = pipeline.run(make_config(f"dataset.path={folder}"))
    assert (summary["read"], summary["written"], summary["quarantined"]) == (3, 1, 2)


def test_many_small_files_read_one_per_task_get_a_files_per_partition_hint(
    make_config, tmp_path: Path, tiny_model: str, caplog: pytest.LogCaptureFixture
) -> None:
    """2000 one-record files ran 58 s one per task and 16 s a hundred per task: each file was its own task
    and batch. The run says so, and grouped runs (or few files) are not told."""
    folder = tmp_path / "in"
    for i in range(64):
        write_jsonl(folder / f"f{i:02d}.jsonl", [{"text": DOCS[i % len(DOCS)][1]}])
    summary = pipeline.run(make_config(f"dataset.path={folder}", tiny_model))
    assert summary["written"] == 64
    [hint] = [r.getMessage() for r in caplog.records if "small input files" in r.getMessage()]
    assert hint.startswith("64 small input files") and "dataset.files_per_partition=8 " in hint
    caplog.clear()
    assert pipeline.run(make_config(f"dataset.path={folder}", tiny_model))["written"] == 64  # resumed: done
    assert not [r for r in caplog.records if "small input files" in r.getMessage()]
    for overrides in (["dataset.files_per_partition=8"], [f"dataset.path={folder / 'f00.jsonl'}"]):
        pipeline.run(
            make_config(f"dataset.path={folder}", tiny_model, f"output.path={tmp_path / 'x'}", *overrides)
        )
        assert not [r for r in caplog.records if "small input files" in r.getMessage()]
        shutil.rmtree(tmp_path / "x")


def test_no_small_files_hint_where_the_store_lists_no_sizes() -> None:
    """A listing without sizes (-1) read as 0 bytes: every run of 64 such files would have been told."""
    from curator.io.files import InputFile
    from curator.io.partitions import Part, small_files_hint

    sized = [Part(InputFile(f"memory://x/f{i}.jsonl", "jsonl", f"f{i}", size=100)) for i in range(64)]
    unsized = [Part(InputFile(f"memory://x/f{i}.jsonl", "jsonl", f"f{i}", size=-1)) for i in range(64)]
    assert small_files_hint(sized, 1) is not None and small_files_hint(unsized, 1) is None
    assert small_files_hint(sized, 2) is None and small_files_hint(sized[:63], 1) is None


def test_memory_filesystem_in_and_out(make_config) -> None:
    fs = fsspec.filesystem("memory")
    for name, (_, text) in zip("ab", DOCS, strict=False):
        fs.pipe(f"/h6-pipe/in/{name}.jsonl", json.dumps({"text": text}).encode() + b"\n")
    try:
        summary = pipeline.run(
            make_config("dataset.path=memory://h6-pipe/in", "output.path=memory://h6-pipe/out")
        )
        assert summary["written"] == 2 and summary["output_path"] == "memory://h6-pipe/out"
        assert sorted(fs.ls("/h6-pipe/out", detail=False)) == [
            "/h6-pipe/out/.curator",
            "/h6-pipe/out/_report.html",
            "/h6-pipe/out/_summary.json",
            "/h6-pipe/out/a.jsonl",
            "/h6-pipe/out/b.jsonl",
        ]
        row = json.loads(fs.cat("/h6-pipe/out/a.jsonl"))
        assert row["domain_pred"] == DOCS[0][0] and row["id"] == "a:1"
    finally:
        fs.rm("/h6-pipe", recursive=True)


def test_summary_beside_the_outputs_is_machine_readable(make_config, docs_dir: Path, tmp_path: Path) -> None:
    summary = pipeline.run(make_config(f"dataset.path={docs_dir}"), run_dir=str(tmp_path / "run"))
    saved = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert saved["fingerprint"] == summary["fingerprint"] and len(saved["fingerprint"]) == 16
    assert (saved["read"], saved["written"], saved["files"], saved["units"]) == (6, 6, 3, {"done": 3})
    assert saved["labels"]["domain_pred"] == {label: 1 for label, _ in DOCS}
    assert saved["docs_per_second"] > 0 and saved["seconds"] > 0
    assert [(f["unit"], f["status"], f["read"]) for f in saved["per_file"]] == [
        ("a", "done", 3),
        ("b", "done", 2),
        ("c", "done", 1),
    ]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["fingerprint"] == saved["fingerprint"]
