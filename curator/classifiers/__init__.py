"""Classifier definitions (mostly YAML), the classes behind each model family, and the Python API.

The names below load on first use: importing a submodule (the registry, the schemas) to compose a
config does not import torch and every family with it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

EXPORTS = {
    "AegisClassifier": "curator.classifiers.api",
    "ContentTypeClassifier": "curator.classifiers.api",
    "DistributedDataClassifier": "curator.classifiers.base",
    "DomainClassifier": "curator.classifiers.api",
    "FineWebEduClassifier": "curator.classifiers.api",
    "FineWebMixtralEduClassifier": "curator.classifiers.api",
    "FineWebNemotronEduClassifier": "curator.classifiers.api",
    "InstructionDataGuardClassifier": "curator.classifiers.api",
    "MultilingualDomainClassifier": "curator.classifiers.api",
    "PromptTaskComplexityClassifier": "curator.classifiers.api",
    "QualityClassifier": "curator.classifiers.api",
    "ZeroShotClassifier": "curator.classifiers.zero_shot",
}
__all__ = sorted(EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *EXPORTS])
