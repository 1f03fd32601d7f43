"""Inputs where users keep them: an S3-compatible object store (a moto server on 127.0.0.1, started and
stopped here), Hugging Face `save_to_disk` folders and Arrow IPC files, and `hf://` paths."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.registry import _registry

from curator import pipeline
from curator.config import Config, DatasetConfig, OutputConfig
from curator.io.files import discover
from curator.io.manifest import MANIFEST
from curator.io.partitions import plan_parts
from curator.io.readers import read_file
from curator.io.writers import OutputTarget
from curator.report_html import redact
from curator.validate import config_problems
from tests.conftest import DOCS

KEY, SECRET = "AKIAEXAMPLEKEY4TEST", "s3cr3t-do-not-log-0123456789"  # moto accepts any credentials


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


# ---- object stores -----------------------------------------------------------------------------
@pytest.fixture()
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A moto S3 server on 127.0.0.1 (a free port), a bucket, and the storage options that reach it."""
    pytest.importorskip("s3fs")
    server_module = pytest.importorskip("moto.server")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        options = {"key": KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": endpoint}}
        import s3fs

        fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
        fs.mkdir("bucket")
        yield fs, endpoint
    finally:
        server.stop()


def test_s3_read_write_resume_and_quarantine_with_secrets_kept_out(
    s3, make_config, tiny_bert: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fs, endpoint = s3
    fs.pipe_file("bucket/in/a.jsonl", jsonl([{"id": f"a{i}", "text": t} for i, (_, t) in enumerate(DOCS)]))
    fs.pipe_file("bucket/in/sub/b.jsonl", jsonl([{"text": DOCS[0][1]}]) + b'{"text": not json\n')
    options = f"{{key:{KEY},secret:{SECRET},client_kwargs:{{endpoint_url:'{endpoint}'}}}}"
    cfg = make_config(
        "dataset.path=s3://bucket/in",
        "output.path=s3://bucket/out",
        f"classifier.zero_shot_domain.model={tiny_bert}",
        f"+dataset.storage_options={options}",
        f"+output.storage_options={options}",
    )
    assert cfg.output.storage_options["client_kwargs"] == {"endpoint_url": endpoint}
    caplog.set_level(logging.DEBUG, logger="curator")
    first = pipeline.run(cfg, run_dir=str(tmp_path / "run"))
    assert (first["read"], first["written"], first["quarantined"]) == (8, 7, 1)
    assert first["units"] == {"done": 2}
    fs.invalidate_cache()
    written = sorted(p.removeprefix("bucket/out/") for p in fs.find("bucket/out"))
    assert {"a.jsonl", "sub/b.jsonl", "_quarantine/sub/b.jsonl", MANIFEST} <= set(written)
    assert not [p for p in written if ".curator-tmp-" in p]
    rows = [json.loads(line) for line in fs.cat_file("bucket/out/a.jsonl").splitlines()]
    assert [r["id"] for r in rows] == [f"a{i}" for i in range(6)] and all("domain_pred" in r for r in rows)
    bad = json.loads(fs.cat_file("bucket/out/_quarantine/sub/b.jsonl"))
    assert bad["input_file"] == "s3://bucket/in/sub/b.jsonl" and bad["line"] == 2
    assert bad["raw"] == '{"text": not json' and bad["reason"].startswith("invalid JSON")

    second = pipeline.run(cfg, run_dir=str(tmp_path / "run2"))  # resume: both units recorded as done
    assert second["units"] == {"skipped": 2} and second["read"] == 8

    # Credentials given in storage_options never reach a log, the manifest, the summary or a report
    fs.invalidate_cache()
    stored = b"".join(fs.cat_file(p) for p in fs.find("bucket/out"))
    local = b"".join(p.read_bytes() for p in tmp_path.glob("run*/**/*") if p.is_file())
    for secret in (KEY, SECRET):
        assert secret.encode() not in stored and secret.encode() not in local
        assert not [r for r in caplog.records if secret in r.getMessage()]
    header = json.loads(fs.cat_file(f"bucket/out/{MANIFEST}").splitlines()[0])
    assert "storage_options" not in json.dumps(header["settings"])
    opened = discover("s3://bucket/in/a.jsonl", options=cfg.dataset.storage_options)[0]
    target = OutputTarget("s3://bucket/out", storage_options=cfg.output.storage_options)
    assert opened.storage_options == cfg.dataset.storage_options  # how a worker opens it again
    assert SECRET not in repr(opened) and SECRET not in repr(target)  # error messages show no secret
    report = (tmp_path / "run" / "report.html").read_text()
    assert endpoint in report  # the endpoint is shown, the key and secret are not


def test_storage_options_are_validated_and_redacted() -> None:
    cfg = Config(dataset=DatasetConfig(name="x", path="x", storage_options=["anon"]))  # type: ignore[arg-type]
    cfg.output = OutputConfig(storage_options="endpoint")  # type: ignore[arg-type]
    problems = config_problems(cfg)
    assert any(p.startswith("dataset.storage_options: must be a mapping") for p in problems)
    assert any(p.startswith("output.storage_options: must be a mapping") for p in problems)
    assert not [
        p for p in config_problems(Config(dataset=DatasetConfig(name="x", path="x"))) if "storage" in p
    ]
    options = {
        "key": "k",
        "secret": "s",
        "account_key": "a",
        "anon": False,
        "endpoint_url": "http://e",
        "client_kwargs": {"endpoint_url": "http://e", "aws_access_key_id": "k", "region_name": "r"},
    }
    shown = redact({"dataset": {"storage_options": options, "path": "s3://b"}})["dataset"]
    assert shown["path"] == "s3://b"
    assert shown["storage_options"] == {
        "key": "***",
        "secret": "***",
        "account_key": "***",
        "anon": False,
        "endpoint_url": "http://e",
        "client_kwargs": {"endpoint_url": "http://e", "aws_access_key_id": "***", "region_name": "r"},
    }


# ---- Hugging Face datasets: save_to_disk folders, Arrow IPC files, hf:// ------------------------
TABLE = pa.table(
    {
        "id": pa.array([10, 11, None, 13], pa.int64()),
        "text": [DOCS[0][1], DOCS[1][1], DOCS[2][1], None],
        "tags": [["a"], [], ["b", "c"], None],
    }
)
EXTRA = '{"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": null}'


def save_like_datasets(folder: Path, table: pa.Table = TABLE) -> Path:
    """The layout `datasets.save_to_disk` writes for one split: a streaming IPC data file and two JSONs."""
    folder.mkdir(parents=True)
    data = folder / "data-00000-of-00001.arrow"
    with pa.OSFile(str(data), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)
    (folder / "state.json").write_text(EXTRA)
    (folder / "dataset_info.json").write_text('{"features": {}}')
    return folder


def save_dataset_dict(folder: Path) -> Path:
    """A DatasetDict saved to disk: dataset_dict.json and one save_to_disk folder per split."""
    save_like_datasets(folder / "train")
    save_like_datasets(folder / "test", TABLE.slice(0, 1))
    (folder / "dataset_dict.json").write_text('{"splits": ["train", "test"]}')
    return folder


def test_arrow_files_streaming_and_file_format_read_like_parquet(tmp_path: Path) -> None:
    saved = save_like_datasets(tmp_path / "saved")
    with pa.OSFile(str(tmp_path / "plain.arrow"), "wb") as sink, pa.ipc.new_file(sink, TABLE.schema) as w:
        w.write_table(TABLE)
    files = discover([str(saved), str(tmp_path / "plain.arrow")])
    assert [(f.stem, f.format) for f in files] == [("data-00000-of-00001", "arrow"), ("plain", "arrow")]
    assert files[0].output_name(None) == "data-00000-of-00001.parquet"  # Arrow inputs write Parquet
    assert files[0].output_name("jsonl") == "data-00000-of-00001.jsonl"
    assert len(plan_parts(files, blocksize=10)) == 2  # one unit per .arrow file, never split
    assert [f.stem for f in discover(str(saved), "arrow")] == ["data-00000-of-00001"]  # JSONs skipped
    assert [f.stem for f in discover(f"{saved}/*")] == ["data-00000-of-00001"]
    (tmp_path / "json" / "state.json").parent.mkdir()
    (tmp_path / "json" / "state.json").write_text('{"text": "a JSON input, not a saved dataset"}\n')
    assert [f.stem for f in discover(str(tmp_path / "json"))] == ["state"]
    for file in files:
        frame = read_file(file, "text", "id")
        assert frame["id"].tolist()[:2] == [10, 11] and str(frame["id"].dtype) == "int64[pyarrow]"
        assert frame["tags"].tolist()[2] == ["b", "c"]
        assert frame["_curator_error"].tolist()[3] == "text field 'text' is null"
        assert frame["_curator_line"].tolist() == [0, 1, 2, 3]  # rows, as Parquet
        assert len(read_file(file, None, None, limit=3)) == 3
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"dataset\.format=jsonl, parquet or arrow"):
        discover(str(tmp_path / "x.bin"))


def test_save_to_disk_folder_runs_end_to_end_and_resumes(
    make_config, tiny_bert: Path, tmp_path: Path
) -> None:
    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "saved"
    records = {"id": [f"d{i}" for i in range(6)], "text": [t for _, t in DOCS[:5]] + [None]}
    split = datasets.Dataset.from_dict(records)
    datasets.DatasetDict({"train": split, "test": split.select(range(2))}).save_to_disk(str(saved))
    assert (saved / "train" / "state.json").exists() and (saved / "dataset_dict.json").exists()
    out = tmp_path / "out"
    model = f"classifier.zero_shot_domain.model={tiny_bert}"
    cfg = make_config(f"dataset.path={saved}", model, f"output.path={out}")
    summary = pipeline.run(cfg)
    assert (summary["read"], summary["written"], summary["quarantined"]) == (8, 7, 1)
    written = pq.read_table(out / "train" / "data-00000-of-00001.parquet")
    assert written.column("id").to_pylist() == [f"d{i}" for i in range(5)]
    assert pq.read_schema(out / "test" / "data-00000-of-00001.parquet") == written.schema
    bad = json.loads((out / "_quarantine" / "train" / "data-00000-of-00001.jsonl").read_text())
    assert bad["line"] == 5 and bad["record"]["id"] == "d5" and bad["stage"] == "read"
    assert pipeline.run(cfg)["units"] == {"skipped": 2}


class LocalHub(DirFileSystem):
    """hf:// served from a local folder with the Hub's layout (datasets/<user>/<name>/...): offline."""

    protocol = "hf"
    cachable = False
    folder = ""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(path=self.folder, fs=LocalFileSystem(), **kwargs)


def test_hf_paths_go_through_the_hf_filesystem(
    make_config, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_dataset_dict(tmp_path / "hub" / "datasets" / "user" / "corpus")
    monkeypatch.setattr(LocalHub, "folder", str(tmp_path / "hub"))
    monkeypatch.setitem(_registry, "hf", LocalHub)  # in place of huggingface_hub.HfFileSystem
    files = discover("hf://datasets/user/corpus")
    assert [f.path for f in files] == [
        "hf://datasets/user/corpus/test/data-00000-of-00001.arrow",
        "hf://datasets/user/corpus/train/data-00000-of-00001.arrow",
    ]
    out = tmp_path / "out"
    model = f"classifier.zero_shot_domain.model={tiny_bert}"
    summary = pipeline.run(make_config("dataset.path=hf://datasets/user/corpus", model, f"output.path={out}"))
    assert (summary["read"], summary["written"], summary["quarantined"]) == (5, 4, 1)
    assert pq.read_table(out / "train" / "data-00000-of-00001.parquet").column("id").to_pylist() == [
        10,
        11,
        None,
    ]
    bad = json.loads((out / "_quarantine" / "train" / "data-00000-of-00001.jsonl").read_text())
    assert bad["input_file"] == "hf://datasets/user/corpus/train/data-00000-of-00001.arrow"


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _hub_reachable(), reason="the Hugging Face Hub is not reachable")
def test_hf_dataset_on_the_hub_is_discovered_and_read() -> None:
    files = discover("hf://datasets/stanfordnlp/imdb/plain_text/test-*.parquet")
    assert files and files[0].format == "parquet" and files[0].modified
    frame = read_file(files[0], "text", "id", limit=3)
    assert len(frame) == 3 and frame["_curator_error"].isna().all()
