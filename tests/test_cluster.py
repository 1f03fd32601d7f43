"""Clusters: a scheduler and workers started from the CLI, LocalCluster workers' settings, closing on
error, dask-cuda's arguments and the clear errors without RAPIDS, SLURM job scripts without SLURM."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from distributed import Client, LocalCluster
from distributed.core import Status

from curator import pipeline
from curator.cluster import connect, scheduler_address, slurm_job_script
from curator.config import ClusterConfig
from curator.errors import ConfigError
from curator.inference import cache
from curator.io.files import discover
from curator.io.gpu import partition_reader, read_partition_cudf
from curator.io.partitions import Part
from curator.io.readers import read_file
from tests.conftest import DOCS, compose_config, write_jsonl

REPO = Path(__file__).resolve().parent.parent

MARKER = "hf_curatorTestMarker0123456789"  # a fake token: it must reach workers and never a file


def start(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_pipeline_runs_on_a_scheduler_and_workers_started_from_the_cli(
    make_config, tmp_path: Path, tiny_model: str
) -> None:
    scheduler_file = tmp_path / "scheduler.json"
    processes = [
        start(
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            ":0",
            "--scheduler-file",
            str(scheduler_file),
            log=tmp_path / "scheduler.log",
        ),
    ]
    try:
        deadline = time.time() + 60
        while not scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        for i in range(2):
            processes.append(
                start(
                    "distributed.cli.dask_worker",
                    "--scheduler-file",
                    str(scheduler_file),
                    "--nthreads",
                    "1",
                    "--name",
                    f"w{i}",
                    "--host",
                    "127.0.0.1",
                    log=tmp_path / f"worker{i}.log",
                )
            )
        with Client(scheduler_file=str(scheduler_file)) as client:
            client.wait_for_workers(2, timeout=60)
        folder = tmp_path / "in"
        for i in range(4):
            write_jsonl(folder / f"f{i}.jsonl", [{"text": f"{text} {i}"} for _, text in DOCS])
        summary = pipeline.run(
            make_config(
                f"dataset.path={folder}",
                tiny_model,
                "cluster=scheduler",
                f"cluster.scheduler_file={scheduler_file}",
                "cluster.torch_threads=1",
            )
        )
        with Client(scheduler_file=str(scheduler_file)) as client:
            loads = client.run(cache.load_count)
            threads = client.run(lambda: __import__("torch").get_num_threads())
            address = client.scheduler.address
        joined = {}
        for key in ("scheduler_address", "address"):  # the name and the older one
            with connect(ClusterConfig(kind="scheduler", **{key: address})) as client:
                joined[key] = len(client.scheduler_info()["workers"])
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    assert summary["read"] == summary["written"] == 4 * len(DOCS)
    assert len(loads) == 2 and all(n in (0, 2) for n in loads.values())  # model + tokenizer, once per worker
    assert set(threads.values()) == {1}  # cluster.torch_threads reached the workers
    assert joined == {"scheduler_address": 2, "address": 2}
    outputs = sorted((tmp_path / "out").glob("*.jsonl"))
    assert [p.name for p in outputs] == ["f0.jsonl", "f1.jsonl", "f2.jsonl", "f3.jsonl"]
    assert all(pd.read_json(p, lines=True)["domain_pred"].notna().all() for p in outputs)


def test_scheduler_address_has_one_name_and_an_older_alias() -> None:
    assert scheduler_address(ClusterConfig(kind="scheduler", scheduler_address="tcp://a:1")) == "tcp://a:1"
    assert scheduler_address(ClusterConfig(kind="scheduler", address="tcp://a:1")) == "tcp://a:1"
    with pytest.raises(ConfigError, match="set only one"):
        scheduler_address(ClusterConfig(kind="scheduler", address="tcp://a:1", scheduler_address="tcp://b:2"))
    with (
        pytest.raises(ConfigError, match=r"scheduler_address or cluster\.scheduler_file"),
        connect(ClusterConfig(kind="scheduler")),
    ):
        pass


@pytest.mark.slow
def test_local_workers_get_threads_and_hf_settings_and_the_dashboard_is_logged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in (("HF_HOME", str(tmp_path)), ("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HF_TOKEN", MARKER)
    caplog.set_level(logging.INFO, logger="curator.cluster")
    with connect(ClusterConfig(kind="local", n_workers=1, torch_threads=1)) as client:
        # A lambda travels by value: the worker does not import this test module to run it.
        seen = client.submit(lambda: {"pid": os.getpid(), **os.environ}, pure=False).result()
        seen["threads"] = client.submit(torch.get_num_threads, pure=False).result()
        cluster = client.cluster
    assert seen["pid"] != os.getpid()  # a separate worker process
    assert seen["HF_HOME"] == str(tmp_path) and seen["HF_HUB_OFFLINE"] == seen["TRANSFORMERS_OFFLINE"] == "1"
    assert seen["HF_TOKEN"] == MARKER  # inherited from this process, never passed as a setting
    assert seen["OMP_NUM_THREADS"] == "1" and seen["threads"] == 1
    assert "Dask dashboard: http://" in caplog.text and MARKER not in caplog.text
    assert cluster.status == Status.closed


def mallinfo():
    """glibc's allocator statistics for this process (mallinfo2)."""
    import ctypes
    import ctypes.util

    class MallInfo2(ctypes.Structure):
        names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        _fields_ = [(name, ctypes.c_size_t) for name in names.split()]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2()


def where_a_reused_buffer_lives() -> dict:
    """Whether a 12 MiB buffer (a MiniLM batch's FFN activation), made again after a free, is mmapped."""
    import numpy as np

    np.ones(3 * 2**20, dtype=np.float32)  # once, so glibc's heap (or its mmap threshold) has seen the size
    before = mallinfo().hblkhd
    buffer = np.ones(3 * 2**20, dtype=np.float32)
    return {
        "mapped": mallinfo().hblkhd - before,  # bytes glibc mmapped for it (0: it came from the heap)
        "size": buffer.nbytes,
        "trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
    }


def freed_heap_kept(sync: bool) -> int:
    """Bytes of free heap glibc keeps mapped after three 12 MiB buffers are freed, in a fresh process
    (inside a cluster=sync connection, or without one)."""
    script = f"""
import numpy as np
from curator.cluster import connect
from curator.config import ClusterConfig
from tests.test_cluster import mallinfo
def cycle():
    np.ones(3 * 2**20, dtype=np.float32)  # mmapped, then glibc raises its thresholds to this size
    buffers = [np.ones(3 * 2**20, dtype=np.float32) for _ in range(3)]  # from the heap
    del buffers
    print(mallinfo().fordblks)
if {sync}:
    with connect(ClusterConfig(kind="sync", torch_threads=1)):
        cycle()
else:
    cycle()
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    return int(run.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_sync_run_keeps_freed_batch_buffers_for_the_next_batch_as_workers_do() -> None:
    size = 3 * 12 * 2**20
    assert freed_heap_kept(sync=False) < size  # glibc's default gives the freed top of the heap back
    assert freed_heap_kept(sync=True) >= size  # kept mapped: the next batch reuses it without page faults


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_workers_reuse_freed_batch_buffers_despite_the_nannys_trim_setting() -> None:
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as plain, Client(plain) as c:
        untuned = c.submit(where_a_reused_buffer_lives, pure=False).result()
    with connect(ClusterConfig(kind="local", n_workers=1, torch_threads=1)) as client:
        tuned = client.submit(where_a_reused_buffer_lives, pure=False).result()
    assert untuned["trim"] == tuned["trim"] == "65536"  # distributed's nanny sets it on both
    assert untuned["mapped"] >= untuned["size"]  # mapped, page-faulted in and unmapped afresh for every batch
    assert tuned["mapped"] == 0  # served from the heap, which keeps the freed buffer for the next one


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_an_error_mid_run_closes_the_cluster_and_its_workers() -> None:
    with (
        pytest.raises(ZeroDivisionError),
        connect(ClusterConfig(kind="local", n_workers=1, torch_threads=1)) as client,
    ):
        cluster = client.cluster
        pids = list(client.run(os.getpid).values())
        assert pids and all(alive(pid) for pid in pids)
        client.submit(lambda: 1 / 0, pure=False).result()  # a task fails on a worker
    assert cluster.status == Status.closed and client.status == "closed"
    assert not any(alive(pid) for pid in pids)


def frozen_after_teardown(dask_worker) -> tuple[int, int]:
    """This worker's QuickExit teardown, run where the worker lives, while it runs (as when the plugin is
    replaced) and as it closes: how many objects each froze."""
    import gc

    plugin = dask_worker.plugins["curator-quick-exit"]
    plugin.teardown(dask_worker)
    running = gc.get_freeze_count()
    status, dask_worker.status = dask_worker.status, Status.closing
    try:
        plugin.teardown(dask_worker)
    finally:
        dask_worker.status = status
    return running, gc.get_freeze_count()


@pytest.mark.slow
def test_a_worker_process_skips_its_last_collection_and_a_threads_worker_leaves_the_client_alone() -> None:
    """A worker process with torch loaded spent ~0.5 s in its final garbage collection, and the run's close
    waited for it. Freezing is for processes that end with their worker: never the client's own."""
    with connect(ClusterConfig(kind="local", n_workers=1, torch_threads=1)) as client:
        (frozen,) = client.run(frozen_after_teardown).values()
        assert frozen[0] == 0 < frozen[1]  # a closing nanny's worker: its objects are left to the OS
    import gc

    with connect(ClusterConfig(kind="local", n_workers=1, torch_threads=1, processes=False)) as client:
        (frozen,) = client.run(frozen_after_teardown).values()
    assert frozen == (0, 0) and gc.get_freeze_count() == 0  # this process goes on collecting


class Records(logging.Handler):
    """The records that reach distributed.worker's handlers (after its filters)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def close_mid_heartbeat(cluster: LocalCluster) -> list[str]:
    """Close a worker while its heartbeat waits for the scheduler's answer (held back until the worker
    has closed); what the worker logged."""
    import asyncio

    scheduler = cluster.scheduler
    answer = scheduler.handlers["heartbeat_worker"]

    async def close() -> None:
        asked, closed = asyncio.Event(), asyncio.Event()

        async def late_answer(*args, **kwargs):
            asked.set()
            await closed.wait()
            return answer(*args, **kwargs)

        scheduler.handlers["heartbeat_worker"] = late_answer
        (worker,) = cluster.workers.values()
        beat = asyncio.ensure_future(worker.heartbeat())
        await asyncio.wait_for(asked.wait(), 30)  # the heartbeat is in flight
        await worker.close()
        closed.set()
        await beat

    records, logger = Records(), logging.getLogger("distributed.worker")
    logger.addHandler(records)
    try:
        cluster.sync(close)
    finally:
        logger.removeHandler(records)
    return records.messages


@pytest.mark.parametrize("ours", [False, True])
def test_a_worker_closed_mid_heartbeat_logs_no_traceback_on_our_clusters(
    ours: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """distributed's Worker.close closes the connection of a heartbeat in flight, which then logs a
    traceback (seen in CI on the terminal of a run that succeeded). A bare LocalCluster shows it; the
    clusters this project starts drop that one message, and only while the worker closes."""
    if not ours:  # earlier threads clusters of this test process left their workers' filters on the logger
        monkeypatch.setattr(logging.getLogger("distributed.worker"), "filters", [])
    cfg = ClusterConfig(kind="local", n_workers=1, processes=False, torch_threads=1)
    with connect(cfg) if ours else LocalCluster(n_workers=1, processes=False, dashboard_address=None) as got:
        cluster = got.cluster if ours else got
        messages = close_mid_heartbeat(cluster)
    failed = [m for m in messages if m.startswith("Failed to communicate with scheduler during heartbeat")]
    assert len(failed) == (0 if ours else 1), messages


# --- local_cuda: no RAPIDS here, so the errors are real; dask-cuda's arguments via a stand-in module --


def test_local_cuda_without_dask_cuda_says_to_install_the_gpu_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # not importable, as on any machine without RAPIDS
    with (
        pytest.raises(ConfigError, match=r"cluster=local_cuda needs `dask_cuda`.*\.\[gpu\]"),
        connect(compose_config(["cluster=local_cuda"]).cluster),
    ):
        pass


def fake_dask_cuda(received: dict) -> types.ModuleType:
    """A stand-in `dask_cuda` whose LocalCUDACluster records its arguments and runs threads in-process."""

    class LocalCUDACluster(LocalCluster):
        def __init__(self, **kwargs) -> None:
            received.update(kwargs)
            super().__init__(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=":0")

    return types.SimpleNamespace(LocalCUDACluster=LocalCUDACluster)  # type: ignore[return-value]


def test_local_cuda_without_a_gpu_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    received: dict = {}
    monkeypatch.setitem(sys.modules, "dask_cuda", fake_dask_cuda(received))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with (
        pytest.raises(ConfigError, match="needs an NVIDIA GPU"),
        connect(compose_config(["cluster=local_cuda"]).cluster),
    ):
        pass
    assert received == {}  # nothing was started


def test_local_cuda_passes_gpus_pool_spilling_and_protocol_to_dask_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    received: dict = {}
    monkeypatch.setitem(sys.modules, "dask_cuda", fake_dask_cuda(received))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    cfg = compose_config(
        [
            "cluster=local_cuda",
            "cluster.cuda_visible_devices=[0,2]",
            "cluster.rmm_pool_size=24GB",
            "cluster.device_memory_limit=0.8",
            "cluster.enable_cudf_spill=true",
            "cluster.protocol=ucx",
            "cluster.local_directory=/scratch/dask",
        ]
    )
    before = torch.get_num_threads()
    try:
        with connect(cfg.cluster) as client:
            assert client.submit(lambda: 1 + 1).result() == 2
    finally:
        torch.set_num_threads(before)  # the stand-in's workers are threads of this process
    assert received == {
        "CUDA_VISIBLE_DEVICES": "0,2",  # one worker per listed GPU
        "rmm_pool_size": "24GB",
        "device_memory_limit": 0.8,  # a fraction of the device, as dask-cuda expects it
        "enable_cudf_spill": True,
        "protocol": "ucx",
        "local_directory": "/scratch/dask",
        "threads_per_worker": 1,
        "memory_limit": "auto",
        "dashboard_address": ":0",
    }


# --- slurm: dask-jobqueue writes the job script without SLURM; sbatch itself is faked at the PATH edge --

needs_jobqueue = pytest.mark.skipif(
    importlib.util.find_spec("dask_jobqueue") is None, reason="needs dask-jobqueue (the slurm extra)"
)
SLURM_GPU = [
    "cluster=slurm",
    "cluster.cores=16",
    "cluster.memory=64GB",
    "cluster.gpus=2",
    "cluster.walltime=02:00:00",
    "cluster.job_name=curator-worker",
    "cluster.partition=gpu",
    "cluster.account=proj42",
    "cluster.job_extra_directives=['--qos=high']",
    "cluster.job_script_prologue=[module load cuda/12.4,source /shared/venv/bin/activate]",
    "cluster.worker_extra_args=[--rmm-pool-size,24GB]",
]


@pytest.fixture()
def hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """HF settings and a fake token in this process's environment, as a user would have them."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", MARKER)
    return tmp_path / "hf"


@needs_jobqueue
def test_slurm_gpu_job_script(hf_env: Path, tmp_path: Path) -> None:
    cfg = compose_config([*SLURM_GPU, f"cluster.log_directory={tmp_path / 'logs'}"])
    script = slurm_job_script(cfg.cluster)
    lines = script.splitlines()
    for directive in (
        "-p gpu",
        "-A proj42",
        "--cpus-per-task=16",
        "--mem=60G",  # 64GB in SLURM's GiB, rounded up
        "-t 02:00:00",
        "--gres=gpu:2",
        "--qos=high",
        f"-o {tmp_path / 'logs'}/curator-worker-%J.out",
    ):
        assert f"#SBATCH {directive}" in lines, directive
    assert lines.index("module load cuda/12.4") < lines.index("source /shared/venv/bin/activate")
    assert "export OMP_NUM_THREADS=8" in lines  # 16 cores / 2 GPU workers
    assert f"export HF_HOME={hf_env}" in lines and "export HF_HUB_OFFLINE=1" in lines
    command = lines[-1]
    assert f"{sys.executable} -m dask cuda worker tcp://" in command
    assert "--nthreads 1" in command and "--rmm-pool-size 24GB" in command and "--nworkers" not in command
    assert MARKER not in script and "HF_TOKEN" not in script


@needs_jobqueue
def test_slurm_cpu_job_script(hf_env: Path) -> None:
    cfg = compose_config(["cluster=slurm", "cluster.cores=8", "cluster.memory=32GB", "cluster.jobs=3"])
    script = slurm_job_script(cfg.cluster)
    lines = script.splitlines()
    assert "#SBATCH --cpus-per-task=8" in lines and not any("gres" in line for line in lines)
    assert "export OMP_NUM_THREADS=4" in lines  # 8 cores: 2 workers x 4 torch threads
    command = lines[-1]
    assert "-m distributed.cli.dask_worker tcp://" in command
    assert "--nworkers 2" in command and "--nthreads 1" in command
    assert MARKER not in script


@needs_jobqueue
def test_slurm_refuses_a_job_script_that_would_hold_a_secret(hf_env: Path) -> None:
    cfg = dataclasses.replace(
        compose_config(["cluster=slurm"]).cluster, job_script_prologue=[f"export HF_TOKEN={MARKER}"]
    )
    with pytest.raises(ConfigError, match=r"value of \$HF_TOKEN"):
        slurm_job_script(cfg)


@pytest.mark.parametrize(
    ("line", "refused"),
    [
        ("export HF_TOKEN=hf_typed_into_the_settings", True),  # not in this environment: still refused
        ("module load cuda; HUGGING_FACE_HUB_TOKEN='hf_abc' srun x", True),
        ("export AWS_SECRET_ACCESS_KEY=abc", True),
        ("export HF_TOKEN=$HF_TOKEN", False),  # copies the variable: no value in the file
        ("export TOKENIZERS_PARALLELISM=false", False),  # TOKEN inside a word is not a secret's name
        ("export HF_HOME=/data/hf", False),
    ],
)
def test_slurm_refuses_a_secret_assigned_in_the_job_script(
    line: str, refused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    cfg = dataclasses.replace(compose_config(["cluster=slurm"]).cluster, job_script_prologue=[line])
    if refused:
        with pytest.raises(ConfigError, match=r"would set \$\w+ to a value written in the cluster settings"):
            slurm_job_script(cfg)
    else:
        assert line in slurm_job_script(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["cluster.cores=null"], "needs cluster.cores"),
        (["cluster.gpus=2", "cluster.n_workers=4"], "one worker per GPU"),
    ],
)
@needs_jobqueue
def test_slurm_settings_that_cannot_work(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        slurm_job_script(compose_config(["cluster=slurm", *overrides]).cluster)


def test_slurm_without_dask_jobqueue_says_to_install_the_slurm_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with pytest.raises(ConfigError, match=r"cluster=slurm needs `dask_jobqueue`.*\.\[slurm\]"):
        slurm_job_script(compose_config(["cluster=slurm"]).cluster)


def test_slurm_without_sbatch_says_where_to_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with (
        pytest.raises(ConfigError, match="sbatch, which is not on PATH"),
        connect(compose_config(["cluster=slurm"]).cluster),
    ):
        pass


FAKE_SBATCH = """#!/bin/sh
# Stand-in for SLURM's sbatch: keep the submitted script, answer as sbatch does (job id: this pid).
cp "$1" {dir}/job-$$.sh
echo "Submitted batch job $$"
"""
FAKE_SCANCEL = """#!/bin/sh
echo "$@" >> {dir}/scancel.log
"""


@needs_jobqueue
def test_slurm_submits_cluster_jobs_and_cancels_them_on_exit(
    hf_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bin_dir, jobs_dir = tmp_path / "bin", tmp_path / "jobs"
    bin_dir.mkdir()
    jobs_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL)):
        (bin_dir / name).write_text(text.format(dir=jobs_dir))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    caplog.set_level(logging.INFO, logger="curator.cluster")
    cfg = compose_config(["cluster=slurm", "cluster.cores=4", "cluster.memory=8GB", "cluster.jobs=3"])
    with connect(cfg.cluster) as client:
        deadline = time.time() + 30
        while len(list(jobs_dir.glob("job-*.sh"))) < 3 and time.time() < deadline:
            time.sleep(0.1)
        cluster = client.cluster
    submitted = sorted(jobs_dir.glob("job-*.sh"))
    assert len(submitted) == 3  # scaled to cluster.jobs
    assert all(MARKER not in p.read_text() for p in submitted)  # what sbatch received holds no token
    assert cluster.status == Status.closed
    cancelled = (jobs_dir / "scancel.log").read_text().split()
    assert sorted(cancelled) == sorted(p.stem.split("-")[1] for p in submitted)  # closing cancelled them all
    assert "Dask dashboard: http://" in caplog.text


# --- dataset.backend=cudf: the clear error without RAPIDS, and the reader's bookkeeping via a stand-in --


def test_cudf_backend_without_rapids_fails_before_any_work(
    monkeypatch: pytest.MonkeyPatch, make_config, docs_dir: Path
) -> None:
    monkeypatch.setitem(sys.modules, "cudf", None)
    with pytest.raises(ConfigError, match=r"dataset.backend=cudf needs `cudf`.*\.\[gpu\]"):
        pipeline.run(make_config(f"dataset.path={docs_dir}", "dataset.backend=cudf"))
    with pytest.raises(ConfigError, match="choose one of pandas, cudf"):
        partition_reader("modin")
    assert partition_reader("pandas") is read_file


def test_cudf_reader_gives_the_pandas_readers_rows_ids_and_marks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "docs.parquet"
    texts = [text for _, text in DOCS]
    table = pa.table({"text": [*texts[:3], None, *texts[3:]], "n": list(range(len(DOCS) + 1))})
    pq.write_table(table, path, row_group_size=3)

    def read_parquet(source: str, row_groups: list[int] | None = None) -> types.SimpleNamespace:
        frame = pq.ParquetFile(source).read_row_groups(row_groups) if row_groups else pq.read_table(source)
        return types.SimpleNamespace(to_pandas=frame.to_pandas)  # what cuDF hands back, on the host

    monkeypatch.setitem(sys.modules, "cudf", types.SimpleNamespace(read_parquet=read_parquet))
    spec = discover(str(path))[0]
    part = Part(spec, index=1, count=3, row_groups=(1,), first_row=3)
    for unit in (spec, part):
        expected = read_file(unit, "text", "id")
        got = partition_reader("cudf")(unit, "text", "id")
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert read_partition_cudf(part, "text", "id")["id"].tolist() == ["docs:3", "docs:4", "docs:5"]
