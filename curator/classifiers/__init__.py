"""Classifier definitions (mostly YAML), the classes behind each model family, and the Python API."""

from curator.classifiers.api import (
    AegisClassifier,
    ContentTypeClassifier,
    DomainClassifier,
    FineWebEduClassifier,
    FineWebMixtralEduClassifier,
    FineWebNemotronEduClassifier,
    InstructionDataGuardClassifier,
    MultilingualDomainClassifier,
    PromptTaskComplexityClassifier,
    QualityClassifier,
)
from curator.classifiers.base import DistributedDataClassifier
from curator.classifiers.zero_shot import ZeroShotClassifier

__all__ = [
    "AegisClassifier",
    "ContentTypeClassifier",
    "DistributedDataClassifier",
    "DomainClassifier",
    "FineWebEduClassifier",
    "FineWebMixtralEduClassifier",
    "FineWebNemotronEduClassifier",
    "InstructionDataGuardClassifier",
    "MultilingualDomainClassifier",
    "PromptTaskComplexityClassifier",
    "QualityClassifier",
    "ZeroShotClassifier",
]
