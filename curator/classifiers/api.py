"""The Python API of NeMo Curator's classifiers, built from the same YAML configs as `run.py`.

`DomainClassifier(filter_by=["Games"])(dataset)` composes `conf/classifier/domain.yaml` with the keyword
arguments as overrides and builds the classifier through the same registry as the Hydra pipeline.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, ClassVar

from omegaconf import OmegaConf

from curator.classifiers.base import DistributedDataClassifier
from curator.classifiers.registry import build_classifier
from curator.config import ClassifierConfig, InferenceConfig


def classifier_config(name: str, **overrides: Any) -> ClassifierConfig:
    """A shipped classifier config (`conf/classifier/<name>.yaml`) with overrides; typos fail here."""
    path = resources.files("curator") / "conf" / "classifier" / f"{name}.yaml"
    node = OmegaConf.merge(
        OmegaConf.structured(ClassifierConfig), OmegaConf.load(str(path)), OmegaConf.create(overrides)
    )
    return OmegaConf.to_object(node)  # type: ignore[return-value]


def _inference(device_type: str | None, autocast: bool, max_mem_gb: float | None) -> InferenceConfig:
    """NeMo Curator's device arguments as this project's inference settings (None device: CUDA if any)."""
    return InferenceConfig(
        device=device_type or "auto", dtype="auto" if autocast else "float32", max_mem_gb=max_mem_gb
    )


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
        token: str | None = None,
        **extra: Any,
    ) -> None:
        overrides: dict[str, Any] = {"text_field": text_field}
        given = dict(batch_size=batch_size, pred_column=pred_column, model=model, **extra)
        overrides.update({self.config_keys.get(k, k): v for k, v in given.items() if v is not None})
        if max_chars is not None:
            overrides["max_chars"] = None if max_chars < 0 else max_chars  # NeMo's -1: the whole document
        if prob_column is not None:
            overrides.update(prob_column=prob_column, keep_prob=True)
        cfg = classifier_config(self.config_name, **overrides)
        inference = _inference(device_type, autocast, max_mem_gb)
        self.classifier: DistributedDataClassifier = build_classifier(
            self.config_name, cfg, text_field, inference, token=token
        )
        self.classifier.filter_by = list(filter_by) if filter_by is not None else None

    @property
    def labels(self) -> list[str]:
        """The labels its prediction column can hold."""
        return self.classifier.labels

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
