"""Every setting is checked at start-up, all problems in one message; nothing hangs on a bad cluster size;
a worker killed for memory is reported as such."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import dask
import pytest
import torch
from distributed.system import MEMORY_LIMIT
from transformers import BertModel

from curator import pipeline
from curator.cluster import connect
from curator.config import ClusterConfig
from curator.errors import ConfigError
from curator.validate import MIN_WORKER_MEMORY, config_problems
from tests.conftest import save_tiny_bert, write_jsonl

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def docs(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "docs" / "a.jsonl", [{"text": "The match ended 2-1."}, {"text": "Bake it."}]
    )


def run_fails(make_config, docs: Path, *overrides: str) -> str:
    """pipeline.run with these overrides must stop before any work; return its message."""
    cfg = make_config("dataset=jsonl", f"dataset.path={docs}", "dataset.name=tiny", *overrides)
    with pytest.raises(ConfigError) as err:
        pipeline.run(cfg)
    assert not Path(cfg.output.path).exists()  # nothing written, not even the output folder
    return str(err.value)


# The list, one setting at a time: (override, what the message must name).
BAD = [
    ("classifier.zero_shot_domain.batch_size=0", "classifier.zero_shot_domain.batch_size=0"),
    ("classifier.zero_shot_domain.batch_size=-5", "batch_size=-5: must be an integer >= 1"),
    ("classifier.zero_shot_domain.max_chars=0", "max_chars=0"),
    ("classifier.zero_shot_domain.max_length=-1", "max_length=-1"),
    ("classifier.zero_shot_domain.temperature=0", "temperature=0.0: must be a number > 0"),
    ("classifier.zero_shot_domain.pred_column=''", "pred_column='': must be a non-empty string"),
    ("inference.token_budget=-100", "inference.token_budget=-100"),
    ("inference.max_mem_gb=-3", "inference.max_mem_gb=-3.0: must be a number > 0"),
    (
        "inference.device=tpu",
        "inference.device='tpu': choose one of 'auto', 'cpu', 'cuda', 'simulated', 'cuda:N'",
    ),
    ("inference.dtype=int4", "inference.dtype='int4'"),
    ("inference.engine=onnx", "inference.engine='onnx': choose one of 'native', 'crossfit'"),
    ("inference.quantize=int4", "inference.quantize='int4': choose one of null, 'int8'"),
    ("cluster.torch_threads=0", "cluster.torch_threads=0"),
    ("cluster.threads_per_worker=0", "cluster.threads_per_worker=0"),
    ("cluster.n_workers=0", "cluster.n_workers=0"),
    ("cluster.n_workers=-1", "cluster.n_workers=-1: must be an integer >= 1"),
    ("cluster.kind=cloud", "cluster.kind='cloud': choose one of 'local', 'local_cuda', 'scheduler'"),
    ("dataset.retries=-1", "dataset.retries=-1: must be an integer >= 0"),
    ("dataset.files_per_partition=0", "dataset.files_per_partition=0"),
    ("dataset.blocksize=lots", "dataset.blocksize='lots' is not a size"),
    ("dataset.backend=spark", "dataset.backend='spark': choose one of 'pandas', 'cudf'"),
    ("dataset.format=csv", "dataset.format='csv'"),
    ("dataset.text_field=''", "dataset.text_field='': must be a non-empty string"),
    ("output.format=csv", "output.format='csv': choose one of null, 'jsonl', 'parquet'"),
    ("output.mode=append", "output.mode='append': choose one of 'resume', 'overwrite', 'error'"),
    ("filter.min_score=0.9 filter.max_score=0.1", "filter.min_score=0.9 > filter.max_score=0.1"),
    ("filter.min_score=nan", "filter.min_score=nan: must be a finite number (NaN keeps no row)"),
    ("filter.max_score=inf", "filter.max_score=inf: must be a finite number"),
    ("filter.keep=[]", "filter.keep=[] would keep no row"),  # it filtered every row out, silently
    ("dataset.path=''", "dataset.path='': name a file, folder, glob or @list (empty would read '.')"),
    ("cluster.torch_threads=1000", "cluster.torch_threads=1000: more than this machine's"),
]


@pytest.mark.parametrize(("override", "named"), BAD, ids=[o for o, _ in BAD])
def test_each_bad_setting_stops_the_run_naming_key_value_and_what_is_allowed(
    make_config, docs: Path, override: str, named: str
) -> None:
    message = run_fails(make_config, docs, *override.split())
    assert named in message and message.startswith("Invalid setting: ")


def test_every_problem_is_listed_in_one_error(make_config, docs: Path) -> None:
    overrides = [o for pair, _ in BAD[1:8] for o in pair.split()] + [
        "output.format=csv",
        "filter.min_score=1",
    ]
    overrides += ["filter.max_score=0"]
    message = run_fails(make_config, docs, *overrides)
    assert message.startswith("9 invalid settings:")
    for _, named in BAD[1:8]:
        assert named in message
    assert "output.format='csv'" in message and "filter.min_score=1.0 > filter.max_score=0.0" in message


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["classifier.zero_shot_domain.batch_size=1", "dataset.retries=0", "cluster.n_workers=1"],
        [
            "filter.min_score=0.5",
            "filter.max_score=0.5",
            "inference.token_budget=1",
            "inference.device=cuda:1",
            "cluster=slurm",  # its workers' GPUs, not this machine's: not checked here
        ],
        ["cluster=local_cuda", "cluster.memory_limit=0", "output.format=parquet", "dataset.format=jsonl"],
        ["cluster=slurm", "cluster.memory_limit=1MB"],  # memory_limit is read only by local kinds
        ["classifier=[zero_shot_domain,fineweb_edu]", "inference.max_mem_gb=0.5", "output.mode=overwrite"],
    ],
)
def test_boundary_and_default_values_are_accepted(make_config, overrides: list[str]) -> None:
    assert config_problems(make_config(*overrides)) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a CUDA GPU")
@pytest.mark.parametrize("cluster", ["sync", "local"])
def test_cuda_on_a_cluster_of_this_machine_without_a_gpu_stops_before_any_work(
    make_config, docs: Path, cluster: str
) -> None:
    """It once started every unit and failed each with a torch traceback."""
    message = run_fails(make_config, docs, f"cluster={cluster}", "inference.device=cuda")
    assert "inference.device=cuda: this machine has no CUDA GPU that torch can use" in message


def test_a_working_run_is_not_stopped(make_config, docs: Path, tiny_model: str) -> None:
    cfg = make_config(
        "dataset=jsonl", f"dataset.path={docs}", "dataset.name=tiny", "output.format=parquet",
        tiny_model, "filter.min_score=0", "filter.max_score=1",
    )  # fmt: skip
    assert pipeline.run(cfg)["written"] == 2


# ---- cluster size and memory ---------------------------------------------------------------------


@pytest.mark.parametrize("n_workers", [-1, 0])
def test_a_local_cluster_of_no_workers_is_refused_not_waited_for(n_workers: int) -> None:
    started = time.perf_counter()
    refused = pytest.raises(ConfigError, match=f"cluster.n_workers={n_workers}: must be an integer >= 1")
    with refused, connect(ClusterConfig(kind="local", n_workers=n_workers)):
        pass
    assert time.perf_counter() - started < 5


def test_a_memory_limit_too_small_to_load_a_model_is_refused_with_a_value_to_use(
    make_config, docs: Path
) -> None:
    message = run_fails(
        make_config, docs, "cluster=local", "cluster.n_workers=1", "cluster.memory_limit=100MB"
    )
    assert "cluster.memory_limit='100MB': 95.37 MiB per worker is too little" in message
    assert "cluster.memory_limit=4GB or more" in message
    assert "not a size" in run_fails(make_config, docs, "cluster=local", "cluster.memory_limit=lots")


def test_auto_memory_shared_by_too_many_workers_says_to_run_fewer(make_config, docs: Path) -> None:
    workers = MEMORY_LIMIT // (MIN_WORKER_MEMORY // 2) + 1  # under half a GiB each
    message = run_fails(
        make_config, docs, "cluster=local", f"cluster.n_workers={workers}", "cluster.torch_threads=1"
    )
    assert "cluster.memory_limit='auto'" in message and "set cluster.n_workers lower" in message


def test_local_workers_do_not_pause_when_a_model_fills_their_memory() -> None:
    # A paused worker never starts the next task, and a cached model never frees its memory: a hang.
    with connect(ClusterConfig(kind="local", n_workers=1, torch_threads=1, dashboard_address=None)) as client:
        fractions = client.run(lambda dask_worker: dask_worker.memory_manager.memory_pause_fraction)
    assert list(fractions.values()) == [False]


@pytest.mark.slow
def test_the_command_line_prints_the_list_without_a_traceback_and_never_hangs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "cluster=local", "cluster.n_workers=-1", "output.format=csv"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "2 invalid settings:" in result.stderr + result.stdout
    assert "cluster.n_workers=-1" in result.stderr + result.stdout and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_worker_killed_for_memory_during_the_run_is_reported_as_memory(
    make_config, docs: Path, minilm_path: Path, tmp_path: Path
) -> None:
    # A real checkpoint of ~1 GiB (hidden size 4096): loading it takes the worker past its 1 GiB limit.
    big = save_tiny_bert(tmp_path / "big", BertModel, minilm_path, hidden_size=4096, num_attention_heads=4)
    cfg = make_config(
        "cluster=local", "cluster.n_workers=1", "cluster.torch_threads=1", "cluster.memory_limit=1GiB",
        "dataset=jsonl", f"dataset.path={docs}", "dataset.name=tiny", "dataset.retries=0",
        f"classifier.zero_shot_domain.model={big}",
    )  # fmt: skip
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        pytest.raises(pipeline.RunFailedError) as err,
    ):
        pipeline.run(cfg)
    message = str(err.value)
    assert (
        "WorkerMemoryError" in message
        and "killed for using more memory than cluster.memory_limit=1GiB" in message
    )
    assert "Set cluster.memory_limit=4GiB or more" in message
