"""Config → classifier objects: the one place that knows which family builds which class."""

from __future__ import annotations

from curator.classifiers.base import DistributedDataClassifier
from curator.classifiers.sequence import SequenceClassifier
from curator.classifiers.zero_shot import ZeroShotClassifier
from curator.config import ClassifierConfig, InferenceConfig
from curator.errors import ConfigError

FAMILIES = {"zero_shot": ZeroShotClassifier, "sequence_classification": SequenceClassifier}


def build_classifier(
    name: str, cfg: ClassifierConfig, text_field: str, inference: InferenceConfig
) -> DistributedDataClassifier:
    """Build one classifier from its config; unknown families fail with the list of known ones."""
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
    )
    if cfg.family == "zero_shot":
        return ZeroShotClassifier(
            name,
            model=cfg.model,
            revision=cfg.revision,
            labels=[(label.name, label.description) for label in cfg.labels],
            temperature=cfg.temperature,
            label_template=cfg.label_template,
            **common,
        )
    return SequenceClassifier(name, model=cfg.model, revision=cfg.revision, **common)


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
