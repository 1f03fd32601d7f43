"""Inputs where users keep them: an S3-compatible object store (a moto server on 127.0.0.1, started and
stopped here), Hugging Face `save_to_disk` folders and Arrow IPC files, and `hf://` paths."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from curator import pipeline
from curator.config import Config, DatasetConfig, OutputConfig
from curator.io.manifest import MANIFEST
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
