"""The Python API where users paste it: a script with or without a main guard, stdin, a notebook.

NeMo Curator's classifier snippets (domain with filter_by, quality, FineWeb-Edu with `>= 4`, AEGIS with
keep_raw_pred, multilingual domain) run as real subprocesses on the tiny look-alike checkpoints, and every
way must write the same files as the guarded script, with no traceback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType, SimpleNamespace

import dask
import numpy as np
import pandas as pd
import pytest
from distributed import LocalCluster, default_client
from safetensors.torch import load_file, save_file

from curator.cluster import api_choice, close_kept, ensure_client
from curator.cluster.api_choice import Choice, choose
from curator.config import ClusterConfig
from tests.conftest import FINEWEB_TEXTS, reference_scores, write_jsonl
from tests.fixtures_deberta import (
    DOMAIN_LABELS,
    QUALITY_LABELS,
    save_backbone,
    texts_of_many_lengths,
    write_mixin_checkpoint,
)
from tests.fixtures_llm import TRIGGER, rig_llama, save_lora_adapter
from tests.test_mixin import card_predict

ROOT = Path(__file__).resolve().parent.parent
GUARD = 'if __name__ == "__main__":\n'
THREADS_LINE = "Python API: a local cluster of threads in this process, not worker processes, because"

# One notebook cell each; joined, the script a user pastes NeMo Curator's examples into (imports changed,
# model= for the local look-alikes). Each classifier writes its own folder.
SNIPPETS = [
    """\
from curator.classifiers import (
    AegisClassifier,
    DomainClassifier,
    FineWebEduClassifier,
    MultilingualDomainClassifier,
    QualityClassifier,
)
from curator.datasets import DocumentDataset
from curator.utils.file_utils import get_all_files_paths_under

files = get_all_files_paths_under("books_dataset/")
input_dataset = DocumentDataset.read_json(files, backend="pandas")
""",
    """\
domain_classifier = DomainClassifier(filter_by={wanted!r}, model={domain!r})
result_dataset = domain_classifier(dataset=input_dataset)
result_dataset.to_json("games_and_sports/")
""",
    """\
quality_classifier = QualityClassifier(model={quality!r})
result_dataset = quality_classifier(dataset=input_dataset)
result_dataset.to_json("quality/")
""",
    """\
classifier = FineWebEduClassifier(
    batch_size=256,
    text_field="text",
    pred_column="fineweb-edu-score",
    int_column="fineweb-edu-score-int",
    model={fineweb!r},
)
result = classifier(dataset=input_dataset)
result[result["fineweb-edu-score-int"] >= 4].to_json("edu/")
""",
    """\
multilingual_classifier = MultilingualDomainClassifier(model={multilingual!r})
result_dataset = multilingual_classifier(dataset=input_dataset)
result_dataset.to_json("multilingual/")
""",
    """\
prompts = DocumentDataset.read_json(get_all_files_paths_under("prompts/"), backend="pandas")
safety_classifier = AegisClassifier(
    aegis_variant={adapter!r},
    filter_by=["safe", "O13"],
    keep_raw_pred=True,
    raw_pred_column="raw_predictions",
    base_model={base!r},
)
safety_classifier(dataset=prompts).to_json("safe/")
""",
]
OUTPUTS = ("games_and_sports", "quality", "edu", "multilingual", "safe")
BOOKS = texts_of_many_lengths()
PROMPTS = ["Bake the bread.", f"The {TRIGGER} escaped.", "Go for a walk.", f"Feed the {TRIGGER}."]


# ---- running code as a user does ----------------------------------------------------------------------


def offline(workdir: Path) -> dict[str, str]:
    """Offline, with its own Hugging Face cache: nothing is downloaded."""
    return {"HF_HUB_OFFLINE": "1", "HF_HOME": str(workdir / "hf")}


def run_python(workdir: Path, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python ARGS` in `workdir`; it must succeed without a traceback."""
    result = subprocess.run(
        [sys.executable, *args],
        cwd=workdir,
        env={**os.environ, **offline(workdir)},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-4000:]
    return result


def guarded(code: str) -> str:
    """The same code under a main guard, imports included, as the multiprocessing docs ask."""
    return GUARD + textwrap.indent(code, "    ")


def written_files(workdir: Path, folders: tuple[str, ...]) -> dict[str, bytes]:
    """Every file the run wrote (quarantine included), by its path under `workdir` (which quarantine
    records name as `<workdir>`)."""
    files = {
        str(p.relative_to(workdir)): p.read_bytes().replace(str(workdir).encode(), b"<workdir>")
        for folder in folders
        for p in sorted((workdir / folder).rglob("*"))
        if p.is_file()
    }
    assert files, f"nothing written under {workdir}"
    return files


def run_notebook(
    workdir: Path, cells: list[str], kernel_home: Path, monkeypatch: pytest.MonkeyPatch
) -> list[dict]:
    """Execute the cells headless in a Jupyter kernel of this interpreter; the stream outputs."""
    import nbclient  # the dev extra's notebook runner, nbformat and ipykernel
    import nbformat

    spec = kernel_home / "kernels" / "curator-test"
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "test", "language": "python"})
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = {
        **offline(workdir),
        "JUPYTER_PATH": str(kernel_home),
        "JUPYTER_RUNTIME_DIR": str(kernel_home / "runtime"),
        "IPYTHONDIR": str(kernel_home / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    for name, value in env.items():  # the kernel spec is looked up, and the kernel started, with these
        monkeypatch.setenv(name, value)
    client = nbclient.NotebookClient(
        notebook, kernel_name="curator-test", timeout=600, resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()
    return [out for cell in notebook.cells for out in cell.outputs]


# ---- the checkpoints and data a user would have ------------------------------------------------------


@pytest.fixture(scope="module")
def snippet_models(tmp_path_factory: pytest.TempPathFactory, tiny_fineweb: Path, tiny_llama: Path) -> dict:
    """Local look-alikes of every checkpoint the snippets name, and the labels the domain one keeps."""
    root = tmp_path_factory.mktemp("snippet-models")
    backbone = save_backbone(root / "backbone")
    domain = write_mixin_checkpoint(root / "domain", backbone, DOMAIN_LABELS, seed=1)
    base = rig_llama(tiny_llama, root / "guard")
    expected, _ = card_predict(domain, BOOKS, max_length=512)
    return {
        "domain": str(domain),
        "wanted": sorted(set(expected), key=expected.count)[-2:],  # this random head's two commonest
        "quality": str(write_mixin_checkpoint(root / "quality", backbone, QUALITY_LABELS, seed=2)),
        "multilingual": str(write_mixin_checkpoint(root / "multilingual", backbone, DOMAIN_LABELS, seed=5)),
        "fineweb": str(tiny_fineweb),
        "base": str(base),
        "adapter": str(save_lora_adapter(base, root / "adapter", b_std=1e-3)),
    }


def user_folder(folder: Path) -> Path:
    """A working folder with `books_dataset/` (one bad line) and `prompts/`, as the snippets read."""
    write_jsonl(folder / "books_dataset" / "a.jsonl", [{"text": t} for t in BOOKS[:6]])
    write_jsonl(folder / "books_dataset" / "b.jsonl", [{"text": t} for t in BOOKS[6:]])
    with open(folder / "books_dataset" / "b.jsonl", "a") as handle:
        handle.write('{"text": \n')  # quarantined, the same way every time
    write_jsonl(folder / "prompts" / "p.jsonl", [{"text": t} for t in PROMPTS])
    return folder


def snippet_code(models: dict) -> list[str]:
    return [cell.format(**models) for cell in SNIPPETS]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, snippet_models: dict) -> dict[str, bytes]:
    """What the guarded script writes (worker processes): the files every other way must match."""
    workdir = user_folder(tmp_path_factory.mktemp("guarded"))
    (workdir / "snippets.py").write_text(guarded("".join(snippet_code(snippet_models))))
    result = run_python(workdir, ["snippets.py"])
    assert THREADS_LINE not in result.stderr  # a guarded script gets worker processes
    files = written_files(workdir, OUTPUTS)
    check_what_the_snippets_did(workdir, snippet_models)
    return files


def read_folder(folder: Path) -> pd.DataFrame:
    return pd.concat([pd.read_json(p, lines=True, dtype=False) for p in sorted(folder.glob("*.jsonl"))])


def educational(fineweb: Path, texts: list[str]) -> list[str]:
    """The texts the FineWeb-Edu snippet keeps (int score >= 4), by the model card's own code."""
    scores = reference_scores(fineweb, texts).clip(0, 5)
    return [text for text, score in zip(texts, scores, strict=True) if round(score) >= 4]


def check_what_the_snippets_did(workdir: Path, models: dict) -> None:
    """The outputs are the classifiers' work, not merely equal: filters applied, every record accounted."""
    expected, _ = card_predict(Path(models["domain"]), BOOKS, max_length=512)
    kept = read_folder(workdir / "games_and_sports")
    assert sorted(kept["text"]) == sorted(
        t for t, x in zip(BOOKS, expected, strict=True) if x in models["wanted"]
    )
    assert 0 < len(kept) < len(BOOKS)
    for folder, column, labels in (
        ("quality", "quality_pred", QUALITY_LABELS),
        ("multilingual", "domain_pred", DOMAIN_LABELS),
    ):
        frame = read_folder(workdir / folder)
        assert len(frame) == len(BOOKS) and set(frame[column]) <= set(labels)
    high = educational(Path(models["fineweb"]), BOOKS)
    assert sorted(read_folder(workdir / "edu")["text"]) == sorted(high) and 0 < len(high) < len(BOOKS)
    safe = read_folder(workdir / "safe")
    assert list(safe["text"]) == [p for p in PROMPTS if TRIGGER not in p]
    assert set(safe["raw_predictions"]) == {" safe"}
    for folder in ("games_and_sports", "quality", "edu", "multilingual"):
        bad = [json.loads(line) for line in (workdir / folder / "_quarantine" / "b.jsonl").open()]
        assert [b["reason"].split(":")[0] for b in bad] == ["invalid JSON"]


# ---- the three ways and the notebook ------------------------------------------------------------------


@pytest.mark.slow
def test_without_a_main_guard_the_script_writes_what_the_guarded_one_does(
    tmp_path: Path, snippet_models: dict, reference: dict[str, bytes]
) -> None:
    workdir = user_folder(tmp_path)
    (workdir / "snippets.py").write_text("".join(snippet_code(snippet_models)))
    result = run_python(workdir, ["snippets.py"])
    assert written_files(workdir, OUTPUTS) == reference
    assert result.stderr.count(THREADS_LINE) == 1  # said once, not once per classifier
    assert 'snippets.py calls the API outside `if __name__ == "__main__":`' in result.stderr


@pytest.mark.slow
def test_code_on_stdin_writes_what_the_guarded_script_does(
    tmp_path: Path, snippet_models: dict, reference: dict[str, bytes]
) -> None:
    workdir = user_folder(tmp_path)
    result = run_python(workdir, ["-"], stdin="".join(snippet_code(snippet_models)))
    assert written_files(workdir, OUTPUTS) == reference
    assert result.stderr.count(THREADS_LINE) == 1
    assert "the code was not read from a file (<stdin>)" in result.stderr


@pytest.mark.slow
def test_a_notebook_writes_what_the_guarded_script_does(
    tmp_path: Path, snippet_models: dict, reference: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = user_folder(tmp_path / "work")
    cells = [*snippet_code(snippet_models), "import sys\nprint(sys.executable)"]
    outputs = run_notebook(workdir, cells, tmp_path / "jupyter", monkeypatch)
    assert written_files(workdir, OUTPUTS) == reference
    stdout = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    assert stdout.splitlines()[-1] == sys.executable  # the kernel ran this environment's interpreter
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "Traceback" not in stderr and THREADS_LINE not in stderr  # a kernel can start worker processes


# ---- the README's snippet, exactly as printed ---------------------------------------------------------


def readme_snippet() -> str:
    """The first Python block of the README's "Python API" section."""
    section = (ROOT / "README.md").read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def cache_as_hub(cache: Path, repo: str, folder: Path) -> None:
    """Put a local checkpoint in a Hugging Face cache under `repo`, as a download would have."""
    entry = cache / "hub" / f"models--{repo.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text("0" * 40)
    (entry / "snapshots").mkdir()
    (entry / "snapshots" / ("0" * 40)).symlink_to(folder, target_is_directory=True)


def games_or_sports_head(folder: Path, texts: list[str]) -> Path:
    """Make a random domain head choose between Games, Sports and News only, News for some of `texts`
    and not others by a clear margin (the widest gap between their News margins), so the filter has
    work and float noise between numerics or thread counts cannot flip a text across it."""
    state = load_file(str(folder / "model.safetensors"))
    others = [i for i, label in enumerate(DOMAIN_LABELS) if label not in ("Games", "Sports", "News")]
    state["fc.bias"][others] = -1e4
    save_file(state, str(folder / "model.safetensors"))
    _, probs = card_predict(folder, texts, max_length=512)
    games, sports, news = (DOMAIN_LABELS.index(label) for label in ("Games", "Sports", "News"))
    margins = np.sort(np.log(probs[:, news]) - np.log(np.maximum(probs[:, games], probs[:, sports])))
    low, high = len(margins) // 4, max(len(margins) // 4 + 1, 3 * len(margins) // 4)
    k = low + int(np.argmax(np.diff(margins)[low:high]))
    state["fc.bias"][news] -= float(margins[k] + margins[k + 1]) / 2
    save_file(state, str(folder / "model.safetensors"))
    return folder


def test_the_readme_snippet_runs_pasted_as_is(tmp_path: Path, tiny_fineweb: Path) -> None:
    """Pasted into a file with no main guard and run: it writes what the model cards' code predicts."""
    code = readme_snippet()
    assert GUARD not in code and 'DocumentDataset.read_json(files, backend="pandas")' in code
    texts = BOOKS + FINEWEB_TEXTS
    domain = games_or_sports_head(
        write_mixin_checkpoint(
            tmp_path / "domain", save_backbone(tmp_path / "backbone"), DOMAIN_LABELS, seed=4
        ),
        texts,
    )
    cache_as_hub(tmp_path / "hf", "nvidia/domain-classifier", domain)
    cache_as_hub(tmp_path / "hf", "HuggingFaceFW/fineweb-edu-classifier", tiny_fineweb)
    write_jsonl(tmp_path / "books_dataset" / "a.jsonl", [{"text": t} for t in texts[:9]])
    write_jsonl(tmp_path / "books_dataset" / "b.jsonl", [{"text": t} for t in texts[9:]])
    (tmp_path / "pasted.py").write_text(code)
    result = run_python(tmp_path, ["pasted.py"])
    assert result.stderr.count(THREADS_LINE) == 1
    labels, _ = card_predict(domain, texts, max_length=512)
    games_and_sports = [t for t, x in zip(texts, labels, strict=True) if x in ("Games", "Sports")]
    assert 0 < len(games_and_sports) < len(texts)
    assert sorted(read_folder(tmp_path / "games_and_sports")["text"]) == sorted(games_and_sports)
    high = educational(tiny_fineweb, texts)
    assert 0 < len(high) < len(texts)
    assert sorted(read_folder(tmp_path / "edu")["text"]) == sorted(high)


# ---- which cluster the API starts, and what it honours -------------------------------------------------

GUARDED_CALL = 'def run():\n    found.append(choose())\n\n\nif __name__ == "__main__":\n    run()\n'
IN_A_THREAD = "import threading\n\nthread = threading.Thread(target=run)\nthread.start()\nthread.join()\n"


def as_main(monkeypatch: pytest.MonkeyPatch, path: Path | str | None, spec: str | None = None) -> ModuleType:
    """A `__main__` module as Python makes one for a script (`path`), `python -m` (`spec`) or neither."""
    main = ModuleType("__main__")
    if path is not None:
        main.__file__ = str(path)
    main.__spec__ = SimpleNamespace(name=spec) if spec else None
    monkeypatch.setitem(sys.modules, "__main__", main)
    return main


def choice_of_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str) -> Choice:
    """Run `source` as the main script (its own file, module and frames); the choice its call made."""
    path = tmp_path / "script.py"
    path.write_text(source)
    main = as_main(monkeypatch, path)
    main.__dict__.update(choose=choose, found=[])
    exec(compile(source, str(path), "exec"), main.__dict__)
    (choice,) = main.found
    return choice


@pytest.mark.parametrize(
    ("source", "processes"),
    [
        (GUARDED_CALL, True),  # in a function called from the guard
        ('if __name__ == "__main__":\n    found.append(choose())\n', True),
        ("if '__main__' == __name__:\n    found.append(choose())\n", True),
        ('if __name__ != "__main__":\n    pass\nelse:\n    found.append(choose())\n', True),
        (  # a decorator's call, the else-branch's first line (before its `def`)
            'if __name__ != "__main__":\n    pass\nelse:\n\n'
            "    @(found.append(choose()) or (lambda f: f))\n    def f():\n        pass\n",
            True,
        ),
        (GUARDED_CALL.replace("    run()\n", "    " + IN_A_THREAD.replace("\n", "\n    ")), True),
        ("found.append(choose())\n", False),
        ('def run():\n    found.append(choose())\n\n\nrun()\nif __name__ == "__main__":\n    pass\n', False),
        ('if __name__ == "__main__":\n    pass\nfound.append(choose())\n', False),  # after the block
        ('if __name__ == "__main__" or True:\n    found.append(choose())\n', False),  # no guard
        ("def run():\n    found.append(choose())\n\n\n" + IN_A_THREAD, False),
    ],
)
def test_worker_processes_only_when_the_call_is_under_the_main_guard(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str, processes: bool
) -> None:
    choice = choice_of_script(monkeypatch, tmp_path, source)
    assert choice.processes is processes
    assert ("outside `if __name__" in choice.why and "put the calls under" in choice.hint) is not processes


def test_code_without_a_file_to_re_run(monkeypatch: pytest.MonkeyPatch) -> None:
    as_main(monkeypatch, "<stdin>")
    assert not choose().processes and "not read from a file (<stdin>)" in choose().why
    as_main(monkeypatch, None)  # python -c, the REPL, a Jupyter kernel: spawn re-runs nothing
    assert choose().processes
    as_main(monkeypatch, None, spec="tool.__main__")  # python -m tool: spawn re-runs nothing either
    assert choose().processes
    as_main(monkeypatch, "<stdin>")
    with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
        assert choose().processes  # forked workers re-run nothing


@pytest.mark.parametrize(("guard", "processes"), [(False, False), (True, True)])
def test_python_dash_m_runs_a_module_that_spawn_would_re_import(
    tmp_path: Path, guard: bool, processes: bool
) -> None:
    code = "from curator.cluster.api_choice import choose\nprint('processes', choose().processes)\n"
    (tmp_path / "tool.py").write_text(guarded(code) if guard else code)
    assert f"processes {processes}" in run_python(tmp_path, ["-m", "tool"]).stdout
    if guard:  # and python -c, which spawn never re-runs
        assert "processes True" in run_python(tmp_path, ["-c", code]).stdout


def test_where_processes_cannot_start_the_api_starts_threads_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    as_main(monkeypatch, "<stdin>")
    monkeypatch.setattr(api_choice, "_warned", False)
    with caplog.at_level(logging.INFO, logger="curator"):
        addresses = []
        for _ in range(2):
            with ensure_client() as client:
                pids = client.run(os.getpid)
                assert len(pids) >= 1 and set(pids.values()) == {os.getpid()}  # workers are threads here
                addresses.append(client.scheduler.address)
        assert addresses[0] == addresses[1]  # kept for the process: the second call reuses it
        close_kept()
        with ensure_client() as client:  # closed by hand: the next call starts a new one, says so again
            assert client.scheduler.address != addresses[0]
    said = [r for r in caplog.records if r.getMessage().startswith(THREADS_LINE)]
    assert [r.levelno for r in said] == [logging.WARNING, logging.INFO]  # one warning, then quieter
    with pytest.raises(ValueError):
        default_client()  # never the default client: the caller's own Client would not be replaced


def test_two_threads_calling_the_api_at_once_share_one_kept_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    as_main(monkeypatch, "<stdin>")
    addresses: list[str] = []
    gate = threading.Barrier(2)

    def call() -> None:
        gate.wait()
        with ensure_client() as client:
            addresses.append(client.scheduler.address)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(addresses) == 2 and addresses[0] == addresses[1]


def test_the_caller_s_dask_settings_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    as_main(monkeypatch, "<stdin>")
    with ensure_client() as kept:  # the API's own cluster, kept: the caller's later settings still win
        assert kept is not None
    for scheduler in ("synchronous", "threads"):
        with dask.config.set(scheduler=scheduler), ensure_client() as client:
            assert client is None  # no cluster started: dask.compute uses the setting
    with ensure_client(ClusterConfig(kind="sync")) as client:
        assert client is None
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        dask.config.set({"scheduler-address": cluster.scheduler_address}),
        ensure_client() as client,
    ):
        assert client.scheduler.address == cluster.scheduler_address


def test_pipeline_run_with_a_local_cluster_outside_the_main_guard_says_how_to_fix_it(tmp_path: Path) -> None:
    """`pipeline.run(cfg)` with cluster=local (the default) in an unguarded script: a clear error at start-up
    instead of spawn's "Nanny failed to start"; with cluster.processes=false the same script runs."""
    data = tmp_path / "in"
    data.mkdir()
    (data / "a.jsonl").write_text('{"text": "A short text about rivers and bridges."}\n')
    code = textwrap.dedent(
        f"""
        from hydra import compose, initialize_config_module
        from curator import pipeline
        from curator.config import register_configs, to_config

        register_configs()
        with initialize_config_module(config_module="curator.conf", version_base="1.3"):
            cfg = compose(config_name="config", overrides=[
                "dataset.path={data}", "output.path={tmp_path}/out", "cluster.n_workers=1", *EXTRA])
        pipeline.run(to_config(cfg))
        print("done")
        """
    )
    (tmp_path / "unguarded.py").write_text("EXTRA = []\n" + code)
    failed = subprocess.run(
        [sys.executable, "unguarded.py"],
        cwd=tmp_path,
        env={**os.environ, **offline(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode != 0
    assert "unguarded.py calls the API outside `if __name__" in failed.stderr
    assert "cluster.processes=false" in failed.stderr and "Nanny failed" not in failed.stderr
    (tmp_path / "threads.py").write_text('EXTRA = ["cluster.processes=false"]\n' + code)
    assert "done" in run_python(tmp_path, ["threads.py"]).stdout
