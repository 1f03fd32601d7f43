"""Config → classifier objects: the one place that knows which family builds which class.

A family is a `DistributedDataClassifier` subclass whose `schema` (a dataclass extending
`ClassifierConfig`) lists its YAML keys, each also a keyword of its constructor. A line in FAMILIES, a
`register_family` call, or an installed package's `curator.families` entry point makes `family: <name>`
in a classifier YAML build it.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, get_type_hints

from omegaconf import OmegaConf

from curator.config import ClassifierConfig, Config, InferenceConfig
from curator.errors import ConfigError

if TYPE_CHECKING:  # the families' classes import torch: Hydra composes configs without them
    from curator.classifiers.base import DistributedDataClassifier

# family name (the YAML's `family:`) → the class that implements it, imported only when used
FAMILIES = {
    "zero_shot": "curator.classifiers.zero_shot:ZeroShotClassifier",
    "embedding": "curator.classifiers.embedding:EmbeddingClassifier",
    "head": "curator.classifiers.head:HeadClassifier",
    "sequence_classification": "curator.classifiers.sequence:SequenceClassifier",
    "regression": "curator.classifiers.sequence:RegressionClassifier",
    "deberta_mixin": "curator.classifiers.mixin:MixinClassifier",
    "prompt_task_complexity": "curator.classifiers.prompt_task:PromptTaskComplexityClassifier",
    "llm_guard": "curator.classifiers.aegis:AegisClassifier",
    "instruction_data_guard": "curator.classifiers.instruction_data_guard:InstructionDataGuardClassifier",
}
# the built-in classes' schemas (their `schema`), read without importing the classes
SCHEMAS = {
    "curator.classifiers.zero_shot:ZeroShotClassifier": "ZeroShotConfig",
    "curator.classifiers.embedding:EmbeddingClassifier": "ClassifierConfig",
    "curator.classifiers.head:HeadClassifier": "ClassifierConfig",
    "curator.classifiers.sequence:SequenceClassifier": "SequenceConfig",
    "curator.classifiers.sequence:RegressionClassifier": "RegressionConfig",
    "curator.classifiers.mixin:MixinClassifier": "MixinConfig",
    "curator.classifiers.prompt_task:PromptTaskComplexityClassifier": "MixinConfig",
    "curator.classifiers.aegis:AegisClassifier": "AegisConfig",
    "curator.classifiers.instruction_data_guard:InstructionDataGuardClassifier": "GuardConfig",
}


def register_family(family: str, target: str) -> None:
    """Make `family: <family>` build `target` ("module:Class"); call before `register_configs()`."""
    FAMILIES[family] = target
    family_class.cache_clear()
    family_schema.cache_clear()
    composed_schema.cache_clear()
    composed_config.cache_clear()


def add_entry_points() -> None:
    """Families that installed packages declare (`[project.entry-points."curator.families"]`)."""
    for point in entry_points(group="curator.families"):
        if point.name not in FAMILIES:
            register_family(point.name, point.value)


@cache
def family_class(family: str) -> type[DistributedDataClassifier]:
    """The class behind a family name; an unknown name is an error listing the known ones."""
    module, _, attr = _target(family).partition(":")
    return getattr(import_module(module), attr)


@cache
def family_schema(family: str) -> type[ClassifierConfig]:
    """The family's YAML keys (its class's `schema`): a built-in family's without importing its class."""
    name = SCHEMAS.get(_target(family))
    if name is None:
        return family_class(family).schema
    from curator.classifiers import schemas

    return getattr(schemas, name)


def _target(family: str) -> str:
    if family not in FAMILIES:
        raise ConfigError(f"Unknown classifier family {family!r}; known families: {sorted(FAMILIES)}")
    return FAMILIES[family]


@cache
def composed_schema() -> type[ClassifierConfig]:
    """What a classifier node may hold while Hydra composes it: every registered family's keys.

    A key two families share must have one type and one default, so a node means the same to both.
    """
    own: dict[str, tuple[Any, dataclasses.Field, str]] = {}
    base = {f.name for f in dataclasses.fields(ClassifierConfig)}
    for family in FAMILIES:
        schema = family_schema(family)
        hints = get_type_hints(schema)  # the types themselves, not their names in the family's module
        for f in dataclasses.fields(schema):
            if f.name in base:
                continue
            if f.name in own and (own[f.name][0], _default(own[f.name][1])) != (hints[f.name], _default(f)):
                raise ConfigError(
                    f"Family {family!r} declares key {f.name!r} unlike family {own[f.name][2]!r} "
                    "(another type or default); rename one of them."
                )
            own.setdefault(f.name, (hints[f.name], f, family))
    extra = [(name, kind, _copy(f)) for name, (kind, f, _) in own.items()]
    schema = dataclasses.make_dataclass("ComposedClassifierConfig", extra, bases=(ClassifierConfig,))
    schema.__module__ = __name__  # pickled by name (submitit ships composed configs to its jobs)
    return schema


@cache
def composed_config() -> type[Config]:
    """The run's schema while Hydra composes it: `Config` whose classifier nodes are `composed_schema()`."""
    classifier = ("classifier", dict[str, composed_schema()], dataclasses.field(default_factory=dict))
    schema = dataclasses.make_dataclass("ComposedConfig", [classifier], bases=(Config,))
    schema.__module__ = __name__
    return schema


def __getattr__(name: str) -> Any:
    """The composed schemas by name, so that a pickled config loads in a fresh process."""
    if name == "ComposedClassifierConfig":
        return composed_schema()
    if name == "ComposedConfig":
        return composed_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _copy(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=f.default_factory)
    return dataclasses.field(default=f.default)


def load_config(*nodes: Any) -> ClassifierConfig:
    """A classifier YAML (+ overrides) in its family's schema; OmegaConf names a wrong key or type."""
    family = OmegaConf.merge(*nodes).get("family")
    node = OmegaConf.merge(OmegaConf.structured(family_schema(family)), *nodes)
    return OmegaConf.to_object(node)  # type: ignore[return-value]


def family_config(name: str, composed: ClassifierConfig) -> ClassifierConfig:
    """A composed classifier node in its family's own schema; a key set for another family is an error."""
    schema = family_schema(composed.family)
    keys = {f.name for f in dataclasses.fields(schema)}
    foreign = sorted(
        f.name
        for f in dataclasses.fields(composed)
        if f.name not in keys and getattr(composed, f.name) != _default(f)
    )
    if foreign:
        raise ConfigError(
            f"Classifier {name!r} (family {composed.family}) does not take {', '.join(foreign)}; "
            f"its keys: {', '.join(sorted(keys))}."
        )
    return schema(**{key: getattr(composed, key) for key in keys})


def build_classifier(
    name: str,
    cfg: ClassifierConfig,
    text_field: str,
    inference: InferenceConfig,
    token: str | bool | None = None,
) -> DistributedDataClassifier:
    """Build one classifier from its config; unknown families fail with the list of known ones.

    `token` comes only from the Python API (configs never hold secrets; runs read HF_TOKEN).
    """
    cls = family_class(cfg.family)
    if type(cfg) is not cls.schema:
        cfg = family_config(name, cfg)
    common = dict(text_field=cfg.text_field or text_field, inference=inference, token=token)
    return cls.from_config(name, cfg, **common)


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


add_entry_points()
