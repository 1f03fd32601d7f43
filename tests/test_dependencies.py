"""pyproject.toml's dependency floors say what really installs together with the transformers tested."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info < (3, 11):
    pytest.skip("tomllib needs Python 3.11", allow_module_level=True)
import tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def floors(requirements: list[Requirement]) -> dict[str, Version]:
    """name → the lowest version a requirement allows (its >= or == bound)."""
    out = {}
    for req in requirements:
        for spec in req.specifier:
            if spec.operator in (">=", "==", "~="):
                out[canonicalize_name(req.name)] = Version(spec.version)
    return out


def project_requirements() -> list[Requirement]:
    data = tomllib.loads(PYPROJECT.read_text())
    return [Requirement(text) for text in data["project"]["dependencies"]]


def test_floors_are_not_below_what_the_installed_transformers_requires() -> None:
    ours = floors(project_requirements())
    declared = [Requirement(r) for r in importlib.metadata.requires("transformers") or []]
    theirs = floors([r for r in declared if r.marker is None])
    for name in ("huggingface-hub", "safetensors", "tokenizers"):
        assert ours[name] >= theirs[name], (
            f"{name}: pyproject says >={ours[name]}, transformers needs {theirs[name]}"
        )


def test_transformers_has_a_tested_upper_bound_and_torch_stays_permissive() -> None:
    reqs = {canonicalize_name(r.name): r for r in project_requirements()}
    installed = Version(importlib.metadata.version("transformers"))
    assert installed in reqs["transformers"].specifier  # the tested version is allowed
    assert any(s.operator == "<" for s in reqs["transformers"].specifier)  # imports internals: bounded
    assert Version("6.0") not in reqs["transformers"].specifier
    assert str(reqs["torch"].specifier) == ">=2.4"  # bring your own CUDA build
