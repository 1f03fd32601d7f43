"""Packaging: the top-level conf/ installs as `curator.conf`, for an editable install and a built wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from importlib import resources
from pathlib import Path

import pytest

import curator

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(
    ".git", ".venv*", "build", "dist", "*.egg-info", "outputs", "multirun", "__pycache__"
)


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    found = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "curator").rglob("__init__.py")
    }
    assert set(tool["packages"]) == found | {"curator.conf"}
    assert tool["package-dir"] == {"curator.conf": "conf"}


def test_configs_come_from_the_top_level_conf_folder() -> None:
    # A leftover curator/conf/ (e.g. only __pycache__ after a pull) would shadow the packaged configs.
    assert not (ROOT / "curator" / "conf").exists(), "delete the old curator/conf/ folder"
    shipped = Path(str(resources.files("curator.conf")))
    assert (shipped / "config.yaml").is_file() and (shipped / "classifier" / "domain.yaml").is_file()
    if Path(curator.__file__).resolve().is_relative_to(ROOT):  # editable install: the checkout's own conf/
        assert shipped.resolve() == ROOT / "conf"


def build_wheel(out: Path, work: Path) -> Path:
    """A wheel built from a copy of the source tree (nothing written into the checkout)."""
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=SKIP)
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(out),
    ]
    subprocess.run([*command, str(source)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = out.glob("curator_classify-*.whl")
    return wheel


def wheel_venv(folder: Path, wheel: Path) -> Path:
    """A fresh venv with only the wheel's curator; its dependencies are this interpreter's (no download)."""
    venv.create(folder, system_site_packages=True, with_pip=False)
    python = folder / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Plain path lines: this interpreter's site-packages join sys.path, but their .pth files (the
    # editable install's finder among them) are not run, so `curator` can only come from the wheel.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "deps.pth").write_text("\n".join(deps) + "\n", encoding="utf-8")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)]
    subprocess.run(pip, check=True, capture_output=True, text=True, timeout=300)
    return folder / "bin"


@pytest.mark.slow
def test_a_wheel_install_finds_its_configs(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "wheels", tmp_path)
    bin_dir = wheel_venv(tmp_path / "venv", wheel)
    cwd = tmp_path / "elsewhere"  # not the checkout: nothing of it on sys.path
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(program: str, *args: str) -> str:
        done = subprocess.run(
            [str(bin_dir / program), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    where = run("python", "-c", "import curator, curator.conf; print(curator.__file__)").strip()
    assert Path(where).is_relative_to(tmp_path / "venv"), where  # the wheel's, not the checkout's
    shown = run("curator", "--cfg", "job")
    assert "zero_shot_domain:" in shown and "text_field: text" in shown and "kind: local" in shown
    assert "domain" in run("curator-classifiers")  # the catalogue reads the shipped classifier YAMLs
    # the native kernel's source ships with the wheel (it is compiled on the machine that runs it)
    shipped = run("python", "-c", "from curator.models import native; print(native.SOURCE.is_file())")
    assert shipped.strip() == "True"


def gpu_extras() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {k: v for k, v in extras["optional-dependencies"].items() if k.startswith("gpu")}


def test_gpu_extras_name_distributions_that_exist_per_cuda_major() -> None:
    """RAPIDS publishes cuDF per CUDA major (cudf-cu12, dask-cudf-cu12); a plain `dask-cudf` is not on
    PyPI, so `pip install -e '.[gpu]'` failed. `gpu` is the CUDA 12 set."""
    extras = gpu_extras()
    assert set(extras) == {"gpu", "gpu-cu12", "gpu-cu13"}
    assert extras["gpu"] == extras["gpu-cu12"]
    for name, requirements in extras.items():
        names = {r.split(">")[0].split("=")[0].split("[")[0] for r in requirements}
        major = "cu13" if name == "gpu-cu13" else "cu12"
        assert {f"cudf-{major}", f"dask-cudf-{major}", "dask-cuda", "crossfit"} == names


@pytest.mark.slow
@pytest.mark.parametrize("extra", ["gpu-cu12", "gpu-cu13"])
def test_gpu_extras_resolve_on_the_package_index(extra: str) -> None:
    """pip resolves each GPU extra against the package index (about a minute each; needs PyPI)."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q"]
    result = subprocess.run([*command, "-e", f"{ROOT}[{extra}]"], capture_output=True, text=True, timeout=600)
    if "Could not fetch URL" in result.stderr or "NewConnectionError" in result.stderr:
        pytest.skip("the package index is not reachable")
    assert result.returncode == 0, result.stderr[-3000:]


def test_importing_the_entry_point_leaves_torch_and_the_families_unimported() -> None:
    """Spawned worker processes re-import `run.py` (or the `curator` script), and with it `curator.cli`:
    that import must stay light, the classifier families (torch, transformers) load in `main()`."""
    heavy = ("torch", "transformers", "curator.classifiers")
    probe = f"import sys, run; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.splitlines()[-1] == "[]", out.stdout


def test_registering_the_configs_leaves_transformers_modelling_unimported() -> None:
    """Every `python run.py` registers every family's schema; importing transformers' modelling base
    (1.5 s) is left to the runs that build a Hugging Face model (the LLM guards, `fast_encoder=false`)."""
    probe = (
        "import sys; from curator.config import register_configs; register_configs(); "
        "print('transformers.modeling_utils' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.splitlines()[-1] == "False", out.stdout
