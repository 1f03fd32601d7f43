"""Every shell command the README shows in a ```bash block works here, or names a real executable.

Commands that are safe offline run for real (`python run.py --help`, `--cfg job`, `curator-classifiers`);
every `python run.py ...` line is composed as Hydra would compose it (groups, keys and types checked);
every other command must name a module, a script or an executable that this environment installs, with
the subcommands and options it uses (`hf download --help`), unless the allow-list below says why it
cannot be checked here.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent

# Executables that need a cluster, a GPU stack or the network, with the reason they are not checked here.
NEEDS_ELSEWHERE = {
    "sbatch": "SLURM's job submission: only on a SLURM login node",
    "srun": "SLURM's task launcher: only inside a SLURM allocation",
    "dask cuda": "dask-cuda's worker (the `gpu` extra): needs CUDA and RAPIDS",
}
SHELL = {".", "source", "export", "set", "[", "sleep", "while", "do", "done", "if", "then", "fi", "cd"}
KEYWORDS = {"while", "do", "done", "if", "then", "else", "fi", "!"}


def bash_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, body) of every ```bash block."""
    return [
        (text[: m.start()].count("\n") + 2, m.group(1)) for m in re.finditer(r"```bash\n(.*?)```", text, re.S)
    ]


def commands(body: str) -> list[list[str]]:
    """The simple commands of a shell snippet as argument lists (comments, `&&`, `;`, `&`, `|` split)."""
    body = body.replace("\\\n", " ")
    body = re.sub(r"\$\{?([A-Za-z_]\w*)\}?", r"/env/\1", body)  # variables: a placeholder path
    found: list[list[str]] = []
    for line in body.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token in {";", "&", "&&", "|", "||"}:
                while current and (current[0] in KEYWORDS or re.fullmatch(r"[A-Za-z_]\w*=.*", current[0])):
                    current.pop(0)  # `while ...`, `do ...`, `VAR=value cmd`
                if current:
                    found.append(current)
                current = []
            else:
                current.append(token)
    return found


def readme_commands() -> list[tuple[str, list[str]]]:
    """(README line, argv) of every command in a bash block."""
    blocks = bash_blocks(README.read_text())
    return [(f"README.md:{line}", argv) for line, body in blocks for argv in commands(body)]


def installed(name: str) -> bool:
    """A console script of an installed distribution, or an executable installed into this environment."""
    scripts = {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")}
    return name in scripts or (BIN / name).exists()


def first_of_sweeps(overrides: list[str]) -> list[str]:
    """A multirun's overrides with each sweep (`a,b,c`) replaced by its first value."""
    parser = OverridesParser.create()
    out = []
    for text, parsed in zip(overrides, parser.parse_overrides(overrides), strict=True):
        if parsed.is_sweep_override():
            out.append(f"{parsed.get_key_element()}={next(iter(parsed.sweep_string_iterator()))}")
        else:
            out.append(text)
    return out


def compose_overrides(overrides: list[str]) -> None:
    """Compose as `python run.py OVERRIDES` would: hydra.* overrides with Hydra's config, the rest as
    plain dataclasses (a misspelt key, a wrong type or an unknown option raises)."""
    ours = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    compose_config(ours)
    if len(ours) < len(overrides):
        with initialize_config_module(config_module="curator.conf", version_base="1.3"):
            compose(config_name="config", overrides=overrides, return_hydra_config=True)


def check_python(argv: list[str]) -> None:
    """`python -m module ...`, `python script.py overrides...`, `python run.py ...`."""
    if argv[1] == "-m":
        assert importlib.util.find_spec(argv[2]) is not None, f"no module {argv[2]!r}"
        return
    script = ROOT / argv[1]
    assert script.is_file(), f"no script {argv[1]}"
    args = [a for a in argv[2:] if a not in ("-m", "--multirun")]
    if args[:1] in (["--help"], ["--cfg"]):
        return  # run for real below
    compose_overrides(first_of_sweeps(args))


@functools.cache
def help_text(*words: str) -> str:
    """`<words> --help`, which must succeed."""
    result = subprocess.run([*words, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"`{' '.join(words)} --help` failed: {result.stderr[-500:]}"
    return result.stdout


def check_cli(argv: list[str]) -> None:
    """An installed CLI with subcommands: the subcommand exists and takes every option given."""
    words = [argv[0]]
    for arg in argv[1:]:
        if " ".join([*words, arg]) in NEEDS_ELSEWHERE:
            return
        group = re.search(r"^Usage: .*\bCOMMAND\b", help_text(*words), re.M)  # Click/Typer subcommands
        if group is None or arg.startswith("-"):
            break  # the rest are this command's options and arguments
        listed = re.search(rf"^\s+{re.escape(arg)}\s", help_text(*words), re.M)
        assert listed, f"`{' '.join(words)}` has no subcommand {arg!r}"
        words.append(arg)
    text = help_text(*words)
    for option in (a.split("=")[0] for a in argv if a.startswith("--")):
        assert option in text, f"`{' '.join(words)}` has no option {option}"


def check_pip(argv: list[str]) -> None:
    """`pip install -e '.[extra]'`: the extras exist in this project's metadata."""
    extras = set(importlib.metadata.metadata("curator-classify").get_all("Provides-Extra") or [])
    for arg in argv:
        match = re.fullmatch(r"\.\[(.+)\]", arg)
        if match:
            assert set(match.group(1).split(",")) <= extras, f"{arg}: extras are {sorted(extras)}"


@pytest.mark.parametrize(("where", "argv"), readme_commands(), ids=lambda x: x if isinstance(x, str) else "")
def test_readme_command_is_real(where: str, argv: list[str]) -> None:
    name = argv[0]
    if name in SHELL:
        return
    if name in NEEDS_ELSEWHERE:
        return
    assert installed(name), f"{where}: `{name}` is not installed by this project's dependencies"
    if name.startswith("python"):
        check_python(argv)
    elif name == "pip":
        check_pip(argv)
    elif name in ("hf", "dask"):
        check_cli(argv)


def test_readme_shows_the_commands_this_test_runs() -> None:
    shown = {" ".join(argv) for _, argv in readme_commands()}
    assert {"python run.py --help", "python run.py --cfg job", "curator-classifiers domain aegis"} <= shown
    assert not [c for c in shown if "huggingface-cli" in c]  # removed in huggingface_hub 1.0: `hf`


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["python", "run.py", "--help"], "cluster: local, local_cuda, scheduler, slurm, sync"),
        (["python", "run.py", "--cfg", "job"], "zero_shot_domain:"),
        (["curator-classifiers", "domain", "aegis"], "nvidia/domain-classifier"),
    ],
)
def test_offline_safe_readme_commands_run(argv: list[str], expected: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    exe = [sys.executable, *argv[1:]] if argv[0] == "python" else [str(BIN / argv[0]), *argv[1:]]
    result = subprocess.run(exe, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout


def test_no_huggingface_cli_anywhere() -> None:
    """huggingface_hub 1.0 removed `huggingface-cli`; messages and docs name `hf` (`hf download`)."""
    stale = [
        str(path.relative_to(ROOT))
        for folder in ("curator", "scripts")
        for path in (ROOT / folder).rglob("*")
        if path.suffix in {".py", ".sh", ".md", ".yaml"} and "huggingface-cli" in path.read_text()
    ]
    assert stale == []
