"""Config → classifier objects: the one place that knows which family builds which class."""

from __future__ import annotations

from importlib import import_module

from curator.classifiers.base import DistributedDataClassifier
from curator.config import ClassifierConfig, InferenceConfig
from curator.errors import ConfigError

# family name (the YAML's `family:`) → the class that implements it, imported only when used
FAMILIES = {
    "zero_shot": "curator.classifiers.zero_shot:ZeroShotClassifier",
    "sequence_classification": "curator.classifiers.sequence:SequenceClassifier",
    "regression": "curator.classifiers.sequence:RegressionClassifier",
    "deberta_mixin": "curator.classifiers.mixin:MixinClassifier",
    "prompt_task_complexity": "curator.classifiers.prompt_task:PromptTaskComplexityClassifier",
    "llm_guard": "curator.classifiers.aegis:AegisClassifier",
    "instruction_data_guard": "curator.classifiers.instruction_data_guard:InstructionDataGuardClassifier",
}


def family_class(family: str) -> type[DistributedDataClassifier]:
    """The class behind a family name."""
    module, _, attr = FAMILIES[family].partition(":")
    return getattr(import_module(module), attr)


def build_classifier(
    name: str,
    cfg: ClassifierConfig,
    text_field: str,
    inference: InferenceConfig,
    token: str | None = None,
) -> DistributedDataClassifier:
    """Build one classifier from its config; unknown families fail with the list of known ones.

    `token` comes only from the Python API (configs never hold secrets; runs read HF_TOKEN).
    """
    if cfg.family not in FAMILIES:
        raise ConfigError(
            f"Classifier {name!r}: unknown family {cfg.family!r}; known families: {sorted(FAMILIES)}"
        )
    common = dict(
        text_field=cfg.text_field or text_field,
        pred_column=cfg.pred_column,
        score_column=cfg.score_column,
        prob_column=cfg.prob_column,
        keep_prob=cfg.keep_prob,
        max_chars=cfg.max_chars,
        max_length=cfg.max_length,
        batch_size=cfg.batch_size,
        inference=inference,
        token=token,
    )
    return family_class(cfg.family).from_config(name, cfg, **common)


def build_classifiers(
    configs: dict[str, ClassifierConfig], text_field: str, inference: InferenceConfig
) -> list[DistributedDataClassifier]:
    """All classifiers of a run, in config order; their output columns must not collide."""
    if not configs:
        raise ConfigError("No classifier selected: pass classifier=NAME (see `python run.py --help`).")
    classifiers = [build_classifier(n, c, text_field, inference) for n, c in configs.items()]
    seen: dict[str, str] = {}
    for clf in classifiers:
        for column in clf.output_types():
            if column in seen:
                raise ConfigError(
                    f"Classifiers {seen[column]!r} and {clf.name!r} both write column {column!r}; "
                    f"set a different pred_column/score_column on one of them."
                )
            seen[column] = clf.name
    return classifiers
