"""The Python API of NeMo Curator's classifiers, built from the same YAML configs as `run.py`.

`DomainClassifier(filter_by=["Games"])(dataset)` composes `conf/classifier/domain.yaml` with the keyword
arguments as overrides and builds the classifier through the same registry as the Hydra pipeline.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, ClassVar

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from curator.classifiers.base import DistributedDataClassifier
from curator.classifiers.registry import build_classifier, load_config
from curator.config import ClassifierConfig, InferenceConfig
from curator.errors import ConfigError, SettingTypeError
from curator.validate import classifier_problems, inference_problems, raise_problems

DEVICE_TYPES = (None, "cpu", "cuda")


def classifier_config(name: str, **overrides: Any) -> ClassifierConfig:
    """A shipped classifier config (`conf/classifier/<name>.yaml`) with overrides; typos fail here."""
    path = resources.files("curator.conf") / "classifier" / f"{name}.yaml"
    try:
        return load_config(OmegaConf.load(str(path)), OmegaConf.create(overrides))
    except ConfigKeyError as err:  # a keyword that is neither NeMo Curator's nor a key of the YAML
        raise SettingTypeError(
            f"unexpected keyword argument {err.key!r}; the {name} classifier takes NeMo Curator's "
            f"arguments and the keys of conf/classifier/{name}.yaml"
        ) from err
    except ValidationError as err:  # a YAML key given a value of the wrong type
        raise SettingTypeError(f"{err.key}={err.value!r}: {err.msg.splitlines()[0]}") from err


def _inference(device_type: str | None, autocast: bool, max_mem_gb: float | None) -> InferenceConfig:
    """NeMo Curator's device arguments as this project's inference settings (None device: CUDA if any)."""
    return InferenceConfig(
        device=device_type or "auto", dtype="auto" if autocast else "float32", max_mem_gb=max_mem_gb
    )


def _labels(filter_by: Any) -> list[str] | None:
    """filter_by as a list of labels: one string is one label (never its characters)."""
    if filter_by is None:
        return None
    labels = [filter_by] if isinstance(filter_by, str) else filter_by
    if not isinstance(labels, list | tuple | set | frozenset) or not all(isinstance(x, str) for x in labels):
        raise SettingTypeError(f"filter_by={filter_by!r}: give a label or a list of labels (strings)")
    if not labels:
        raise ConfigError("filter_by=[] would keep nothing; give at least one label, or None to keep all")
    return list(labels)


WANTED = {str | bool: "str, bool"}  # how a union of accepted types is named in a TypeError


def _types(kind: Any) -> tuple[type, ...]:
    """The classes `kind` (a class or a union of them) accepts."""
    return tuple(getattr(kind, "__args__", (kind,)))


def check_arguments(
    batch_size: Any,
    text_field: Any,
    pred_column: Any,
    prob_column: Any,
    max_chars: Any,
    device_type: Any,
    autocast: Any,
    max_mem_gb: Any,
    token: Any,
) -> None:
    """NeMo Curator's keyword arguments: a TypeError for a wrong type, a ValueError for a wrong value."""
    kinds = {
        "batch_size": (batch_size, int, True),
        "text_field": (text_field, str, False),
        "pred_column": (pred_column, str, True),
        "prob_column": (prob_column, str, True),
        "max_chars": (max_chars, int, True),
        "max_mem_gb": (max_mem_gb, int | float, True),
        "autocast": (autocast, bool, False),
        "token": (token, str | bool, True),  # NeMo's: a token, or True/False (use the saved one or none)
    }
    for name, (value, kind, optional) in kinds.items():
        wrong_bool = isinstance(value, bool) and bool not in _types(kind)  # True is an int to Python
        if (value is None and not optional) or (
            value is not None and (wrong_bool or not isinstance(value, kind))
        ):
            wanted = getattr(kind, "__name__", None) or WANTED.get(kind, "a number")
            shown = f"a {type(value).__name__}" if name == "token" else repr(value)  # never the secret
            raise SettingTypeError(f"{name}={shown}: must be {wanted}{' or None' if optional else ''}")
    if device_type not in DEVICE_TYPES:
        raise ConfigError(
            f"device_type={device_type!r}: choose 'cpu', 'cuda' or None (CUDA when there is one)"
        )
    if max_mem_gb is not None and not max_mem_gb > 0:
        raise ConfigError(f"max_mem_gb={max_mem_gb}: must be > 0, or None for what is free on the device")
    if max_chars is not None and (max_chars == 0 or max_chars < -1):
        raise ConfigError(f"max_chars={max_chars}: must be >= 1, or -1 for the whole document")
    for name, value in (
        ("text_field", text_field),
        ("pred_column", pred_column),
        ("prob_column", prob_column),
    ):
        if value is not None and not value.strip():
            raise ConfigError(f"{name}={value!r}: must be a non-empty string")


class PublishedClassifier:
    """A published classifier by config name, with NeMo Curator's keyword arguments (None: the YAML's)."""

    config_name: ClassVar[str]
    config_keys: ClassVar[dict[str, str]] = {}  # API keyword → config key, where they differ

    def __init__(
        self,
        filter_by: list[str] | None = None,
        batch_size: int | None = None,
        text_field: str = "text",
        pred_column: str | None = None,
        prob_column: str | None = None,
        max_chars: int | None = None,
        device_type: str | None = None,
        autocast: bool = True,
        max_mem_gb: float | None = None,
        model: str | None = None,
        token: str | bool | None = None,
        **extra: Any,
    ) -> None:
        check_arguments(
            batch_size,
            text_field,
            pred_column,
            prob_column,
            max_chars,
            device_type,
            autocast,
            max_mem_gb,
            token,
        )
        labels = _labels(filter_by)
        overrides: dict[str, Any] = {"text_field": text_field}
        given = dict(batch_size=batch_size, pred_column=pred_column, model=model, **extra)
        overrides.update({self.config_keys.get(k, k): v for k, v in given.items() if v is not None})
        if max_chars is not None:
            overrides["max_chars"] = None if max_chars < 0 else max_chars  # NeMo's -1: the whole document
        if prob_column is not None:
            overrides.update(prob_column=prob_column, keep_prob=True)
        cfg = classifier_config(self.config_name, **overrides)
        inference = _inference(device_type, autocast, max_mem_gb)
        raise_problems(
            [
                *classifier_problems(self.config_name, cfg, prefix=type(self).__name__),
                *inference_problems(inference),
            ],
            "argument",
        )
        self.classifier: DistributedDataClassifier = build_classifier(
            self.config_name, cfg, text_field, inference, token=token
        )
        self.classifier.filter_by = labels

    @property
    def labels(self) -> list[str]:
        """The labels its prediction column can hold."""
        return self.classifier.labels

    def get_labels(self) -> list[str]:
        """NeMo Curator's `get_labels()`: the labels in the model's order, from the YAML or the checkpoint's
        config.json (read when the classifier was built; no weights are loaded). Score-only classifiers
        (FineWeb-Edu, Instruction Data Guard) have none: an empty list."""
        return list(self.classifier.labels)

    def __call__(self, dataset: Any) -> Any:
        """Label a DocumentDataset (lazily); only `filter_by` labels are kept when it is set."""
        return self.classifier(dataset)


class DomainClassifier(PublishedClassifier):
    """nvidia/domain-classifier: 26 domains (DeBERTa-v3-base)."""

    config_name = "domain"


class MultilingualDomainClassifier(PublishedClassifier):
    """nvidia/multilingual-domain-classifier: the same 26 domains in 52 languages (mDeBERTa-v3-base)."""

    config_name = "multilingual_domain"


class QualityClassifier(PublishedClassifier):
    """nvidia/quality-classifier-deberta: High, Medium, Low (probabilities on by default)."""

    config_name = "quality"


class ContentTypeClassifier(PublishedClassifier):
    """nvidia/content-type-classifier-deberta: 11 speech/content types."""

    config_name = "content_type"


class PromptTaskComplexityClassifier(PublishedClassifier):
    """nvidia/prompt-task-and-complexity-classifier: task types and six complexity dimensions."""

    config_name = "prompt_task_complexity"


class FineWebEduClassifier(PublishedClassifier):
    """HuggingFaceFW/fineweb-edu-classifier: an educational score 0–5 and its rounded int."""

    config_name = "fineweb_edu"


class FineWebMixtralEduClassifier(PublishedClassifier):
    """The FineWeb-Edu model trained on Mixtral annotations; adds a high/low quality label."""

    config_name = "fineweb_mixtral_edu"
    config_keys: ClassVar[dict[str, str]] = {"quality_label_column": "label_column"}


class FineWebNemotronEduClassifier(PublishedClassifier):
    """The FineWeb-Edu model trained on Nemotron-4 annotations; adds a high/low quality label."""

    config_name = "fineweb_nemotron_edu"
    config_keys: ClassVar[dict[str, str]] = {"quality_label_column": "label_column"}


class AegisClassifier(PublishedClassifier):
    """AEGIS content safety (Llama Guard + LoRA): safe, O1..O13 or unknown."""

    config_name = "aegis"
    config_keys: ClassVar[dict[str, str]] = {"aegis_variant": "model"}

    def __init__(self, aegis_variant: str | None = None, **kwargs: Any) -> None:
        if aegis_variant and "permissive" in aegis_variant.lower():
            self.config_name = "aegis_permissive"  # type: ignore[misc]
        super().__init__(aegis_variant=aegis_variant, **kwargs)


class InstructionDataGuardClassifier(PublishedClassifier):
    """nvidia/instruction-data-guard: a poisoning score from the AEGIS model's last hidden state."""

    config_name = "instruction_data_guard"

    def __init__(self, prob_column: str | None = None, **kwargs: Any) -> None:
        # NeMo calls the poisoning score its prob_column; here it is the classifier's score column
        super().__init__(score_column=prob_column, **kwargs)
