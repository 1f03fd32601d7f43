"""Classifier definitions (mostly YAML) and the classes behind each model family."""

from curator.classifiers.base import DistributedDataClassifier
from curator.classifiers.zero_shot import ZeroShotClassifier

__all__ = ["DistributedDataClassifier", "ZeroShotClassifier"]
