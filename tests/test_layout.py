"""The house's rules that code review alone would let slip: I/O never depends on models or filters."""

from __future__ import annotations

import ast
from pathlib import Path

import curator

PACKAGE = Path(curator.__file__).resolve().parent
IO_MAY_NOT_IMPORT = ("curator.classifiers", "curator.filters", "curator.inference", "curator.models")


def imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names), at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_io_knows_files_and_formats_not_models_or_filters() -> None:
    modules = sorted((PACKAGE / "io").glob("*.py"))
    assert len(modules) >= 6
    offenders = {
        path.name: sorted(m for m in imports(path) if m.startswith(IO_MAY_NOT_IMPORT)) for path in modules
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_the_stages_of_a_task_are_one_module_beside_the_pipeline() -> None:
    stages = imports(PACKAGE / "stages.py")
    assert {"curator.io.readers", "curator.io.writers", "curator.filters"} <= stages
    assert "curator.stages" in imports(PACKAGE / "execution.py")
    assert not (PACKAGE / "io" / "tasks.py").exists()
