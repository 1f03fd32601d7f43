"""nvidia/prompt-task-and-complexity-classifier: the model card's arithmetic, reproduced exactly, on a
look-alike checkpoint and on hand-made probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from transformers import AutoModel, AutoTokenizer

from curator import pipeline
from curator.classifiers.prompt_task import (
    COMPLEXITY_COLUMN,
    PromptTaskComplexityClassifier,
    PromptTaskSpec,
    prompt_task_columns,
)
from curator.config import InferenceConfig
from curator.errors import ConfigError
from curator.models.weights import CheckpointMismatchError
from tests.conftest import DOCS, renamed_key_copy
from tests.fixtures_deberta import (
    PROMPT_HEADS,
    TASK_TYPES,
    prompt_task_config,
    save_backbone,
    texts_of_many_lengths,
    write_prompt_task_checkpoint,
)

# The card's `np.array(tensor)` warns on numpy 2; it is the reference, kept as published.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

MAX_LENGTH = 48
NUMERIC = [
    "task_type_prob",
    "creativity_scope",
    "reasoning",
    "contextual_knowledge",
    "number_of_few_shots",
    "domain_knowledge",
    "no_label_reason",
    "constraint_ct",
    "prompt_complexity_score",
]


# ---- the model card's code (NeMo Curator's CustomHFDeberta), on the CPU ----------------------------
class MeanPooling(nn.Module):
    def forward(self, last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        input_mask_expanded = attention_mask.unsqueeze(-1).expand(last_hidden_state.size()).float()
        sum_embeddings = torch.sum(last_hidden_state * input_mask_expanded, 1)
        sum_mask = input_mask_expanded.sum(1)
        sum_mask = torch.clamp(sum_mask, min=1e-9)
        return sum_embeddings / sum_mask


class MulticlassHead(nn.Module):
    def __init__(self, input_size: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(input_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class CardModel(nn.Module, PyTorchModelHubMixin):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.backbone = AutoModel.from_pretrained(config["base_model"])
        self.target_sizes = config["target_sizes"].values()
        self.task_type_map = config["task_type_map"]
        self.weights_map = config["weights_map"]
        self.divisor_map = config["divisor_map"]
        self.heads = [MulticlassHead(self.backbone.config.hidden_size, sz) for sz in self.target_sizes]
        for i, head in enumerate(self.heads):
            self.add_module(f"head_{i}", head)
        self.pool = MeanPooling()

    def compute_results(self, preds: torch.Tensor, target: str, decimal: int = 4):
        if target == "task_type":
            top2_indices = torch.topk(preds, k=2, dim=1).indices
            softmax_probs = torch.softmax(preds, dim=1)
            top2_probs = softmax_probs.gather(1, top2_indices)
            top2 = top2_indices.detach().cpu().tolist()
            top2_prob = top2_probs.detach().cpu().tolist()
            top2_strings = [[self.task_type_map[str(idx)] for idx in sample] for sample in top2]
            top2_prob_rounded = [[round(value, 3) for value in sublist] for sublist in top2_prob]
            for counter, sublist in enumerate(top2_prob_rounded):
                if sublist[1] < 0.1:
                    top2_strings[counter][1] = "NA"
            task_type_1 = [sublist[0] for sublist in top2_strings]
            task_type_2 = [sublist[1] for sublist in top2_strings]
            task_type_prob = [sublist[0] for sublist in top2_prob_rounded]
            return (task_type_1, task_type_2, task_type_prob)
        preds = torch.softmax(preds, dim=1)
        weights = np.array(self.weights_map[target])
        weighted_sum = np.sum(np.array(preds.detach().cpu()) * weights, axis=1)
        scores = weighted_sum / self.divisor_map[target]
        scores = [round(value, decimal) for value in scores]
        if target == "number_of_few_shots":
            scores = [x if x >= 0.05 else 0 for x in scores]
        return scores

    def process_logits(self, logits: list[torch.Tensor]) -> dict:
        result = {}
        task_type_results = self.compute_results(logits[0], target="task_type")
        result["task_type_1"] = task_type_results[0]
        result["task_type_2"] = task_type_results[1]
        result["task_type_prob"] = task_type_results[2]
        # Rounds 2-8, which the card spells out one by one, in its order
        scored = (
            "creativity_scope",
            "reasoning",
            "contextual_knowledge",
            "number_of_few_shots",
            "domain_knowledge",
            "no_label_reason",
            "constraint_ct",
        )
        for i, target in enumerate(scored, start=1):
            result[target] = self.compute_results(logits[i], target=target)
        result["prompt_complexity_score"] = [
            round(
                0.35 * creativity
                + 0.25 * reasoning
                + 0.15 * constraint
                + 0.15 * domain_knowledge
                + 0.05 * contextual_knowledge
                + 0.05 * few_shots,
                5,
            )
            for creativity, reasoning, constraint, domain_knowledge, contextual_knowledge, few_shots in zip(
                result["creativity_scope"],
                result["reasoning"],
                result["constraint_ct"],
                result["domain_knowledge"],
                result["contextual_knowledge"],
                result["number_of_few_shots"],
            )
        ]
        return result

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        outputs = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        pooled = self.pool(outputs.last_hidden_state, attention_mask)
        return [self.heads[k](pooled) for k in range(len(self.target_sizes))]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict:
        return self.process_logits(self.logits(batch["input_ids"], batch["attention_mask"]))


def card_run(folder: Path, texts: list[str]) -> tuple[dict, list[torch.Tensor]]:
    """The card's usage: tokenise as one padded batch, run, post-process; also the raw logits."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = CardModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, return_tensors="pt", padding="longest", truncation=True, max_length=MAX_LENGTH)
    with torch.no_grad():
        logits = model.logits(batch["input_ids"], batch["attention_mask"])
    return model.process_logits(logits), logits


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def prompt_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    backbone = save_backbone(tmp_path_factory.mktemp("tiny-deberta-prompt"))
    return write_prompt_task_checkpoint(tmp_path_factory.mktemp("prompt-task"), backbone, seed=3)


@pytest.fixture(scope="session")
def card(prompt_ckpt: Path) -> CardModel:
    return CardModel.from_pretrained(prompt_ckpt).eval()


def make_classifier(folder: Path, **kwargs: object) -> PromptTaskComplexityClassifier:
    options = dict(
        pred_column="task_type_1",
        score_column=COMPLEXITY_COLUMN,
        max_length=MAX_LENGTH,
        inference=InferenceConfig(token_budget=64),
    )
    return PromptTaskComplexityClassifier("prompt", model=str(folder), **{**options, **kwargs})


class RawProbabilities(PromptTaskComplexityClassifier):
    """The engine's output before post-processing: every head's softmax, concatenated."""

    def postprocess(self, outputs: np.ndarray) -> dict:
        return {"raw": outputs}


def assert_equals_card(ours: dict, card_result: dict, atol: float = 0.0) -> None:
    """Same task types; same numbers (within `atol`, for model outputs that differ in the last bits)."""
    for column in ("task_type_1", "task_type_2"):
        assert list(ours[column]) == card_result[column], column
    for column in NUMERIC:
        expected = np.asarray(card_result[column], dtype=np.float64).astype(np.float32)
        np.testing.assert_allclose(np.asarray(ours[column], dtype=np.float32), expected, rtol=0, atol=atol)


def concat_softmax(logits: list[torch.Tensor]) -> np.ndarray:
    return torch.cat([torch.softmax(x, dim=1) for x in logits], dim=1).numpy()


SPEC = PromptTaskSpec.from_config(prompt_task_config("unused"))


# ---- the arithmetic ------------------------------------------------------------------------------
def hand_made_row(task: list[float], **heads: list[float]) -> np.ndarray:
    """One row of concatenated head probabilities; heads not given are uniform."""
    parts = [np.asarray(task + [0.0] * (12 - len(task)))]
    for name, size in list(PROMPT_HEADS.items())[1:]:
        parts.append(np.asarray(heads.get(name, [1.0 / size] * size)))
    return np.concatenate(parts).astype(np.float32)


def test_arithmetic_on_hand_made_probabilities() -> None:
    rows = np.stack(
        [
            hand_made_row(
                [0.7, 0.25, 0.05], creativity_scope=[1, 0, 0], number_of_few_shots=[0.96, 0.04, 0, 0, 0, 0]
            ),
            hand_made_row([0.0994, 0.9006], reasoning=[0, 1], number_of_few_shots=[0, 0, 1, 0, 0, 0]),
            hand_made_row([0.0996, 0.9004], domain_knowledge=[1, 0, 0, 0], constraint_ct=[0.25, 0.75]),
        ]
    )
    out = prompt_task_columns(rows, SPEC)
    assert list(out["task_type_1"]) == ["Brainstorming", "Chatbot", "Chatbot"]
    # second task type: "NA" when its probability *rounded to 3 places* is below 0.1
    assert list(out["task_type_2"]) == ["Chatbot", "NA", "Brainstorming"]
    np.testing.assert_array_equal(out["task_type_prob"], [0.7, 0.901, 0.9])
    np.testing.assert_array_equal(out["creativity_scope"], [1.0, 0.5, 0.5])  # [2, 1, 0] / 2
    np.testing.assert_array_equal(out["reasoning"], [0.5, 1.0, 0.5])
    np.testing.assert_array_equal(out["number_of_few_shots"], [0.0, 2.0, 2.5])  # 0.04 < 0.05 → 0
    np.testing.assert_array_equal(out["domain_knowledge"], [0.5, 0.5, 1.0])  # [3, 1, 2, 0] / 3
    np.testing.assert_array_equal(out["constraint_ct"], [0.5, 0.5, 0.25])
    np.testing.assert_array_equal(out["no_label_reason"], [0.0, 0.0, 0.0])
    # 0.35 creativity + 0.25 reasoning + 0.15 constraint + 0.15 domain + 0.05 contextual + 0.05 few-shots
    expected = [
        0.35 * 1.0 + 0.25 * 0.5 + 0.15 * 0.5 + 0.15 * 0.5 + 0.05 * 0.5 + 0.05 * 0.0,
        0.35 * 0.5 + 0.25 * 1.0 + 0.15 * 0.5 + 0.15 * 0.5 + 0.05 * 0.5 + 0.05 * 2.0,
        0.35 * 0.5 + 0.25 * 0.5 + 0.15 * 0.25 + 0.15 * 1.0 + 0.05 * 0.5 + 0.05 * 2.5,
    ]
    np.testing.assert_allclose(out[COMPLEXITY_COLUMN], expected, atol=1e-12)


def test_arithmetic_equals_the_card_bit_for_bit(card: CardModel) -> None:
    generator = torch.Generator().manual_seed(0)
    # wide and narrow logits: both "NA" branches, few-shot scores on both sides of 0.05, rounding ties
    scale = torch.tensor([0.5, 2.0, 6.0, 12.0]).repeat(100).unsqueeze(1)
    logits = [torch.randn(400, size, generator=generator) * scale for size in PROMPT_HEADS.values()]
    logits[4][:50, 0] += 20  # few-shot mass on "0 shots": scores below 0.05 that become 0
    expected = card.process_logits(logits)
    assert {"NA"} < set(expected["task_type_2"]) and 0 in expected["number_of_few_shots"]
    assert_equals_card(prompt_task_columns(concat_softmax(logits), SPEC), expected)


def test_empty_partition_gives_empty_columns() -> None:
    out = prompt_task_columns(np.empty((0,), dtype=np.float32), SPEC)
    assert all(len(values) == 0 for values in out.values()) and len(out) == 11


# ---- the model -----------------------------------------------------------------------------------
def test_predictions_equal_the_card(prompt_ckpt: Path) -> None:
    texts = texts_of_many_lengths()
    expected, logits = card_run(prompt_ckpt, texts)
    raw = RawProbabilities(
        "raw", model=str(prompt_ckpt), max_length=MAX_LENGTH, inference=InferenceConfig(token_budget=64)
    )
    np.testing.assert_allclose(raw.predict(texts)["raw"], concat_softmax(logits), atol=1e-5)
    assert raw.last_stats.batches > 3
    clf = make_classifier(prompt_ckpt)
    # the same arithmetic on probabilities equal to ~1e-7: rounded values may differ by one last digit
    assert_equals_card(clf.predict(texts), expected, atol=1.01e-4)
    # several labels take part (the look-alike's tokenizer is trained anew each session, so its random
    # head may put every text's first label on one class; the first two labels together do vary)
    assert len(set(expected["task_type_1"]) | set(expected["task_type_2"])) > 2


def test_classify_partition_types_and_values(prompt_ckpt: Path) -> None:
    texts = texts_of_many_lengths()
    clf = make_classifier(prompt_ckpt)
    out = clf.classify_partition(pd.DataFrame({"text": texts}))
    expected, _ = card_run(prompt_ckpt, texts)
    assert_equals_card({c: out[c].tolist() for c in out.columns}, expected, atol=1.01e-4)
    assert out["task_type_1"].dtype == pd.StringDtype() and out["task_type_2"].dtype == pd.StringDtype()
    assert all(out[c].dtype == np.float32 for c in NUMERIC)
    types = clf.output_types()
    assert list(types) == ["task_type_1", "task_type_2", *NUMERIC[:-1], COMPLEXITY_COLUMN]
    assert types["task_type_1"] == pa.string() and types[COMPLEXITY_COLUMN] == pa.float32()
    assert clf.labels == TASK_TYPES and clf.label_column == "task_type_1"


def test_pipeline_run_with_the_prompt_config(
    make_config, docs_dir: Path, tmp_path: Path, prompt_ckpt: Path
) -> None:
    cfg = make_config(
        f"dataset.path={docs_dir}",
        "classifier=prompt_task_complexity",
        f"classifier.prompt_task_complexity.model={prompt_ckpt}",
        f"classifier.prompt_task_complexity.max_length={MAX_LENGTH}",
        "inference.token_budget=64",
    )
    pipeline.run(cfg)
    frame = pd.concat(
        pd.read_json(p, lines=True, dtype=False) for p in sorted((tmp_path / "out").glob("*.jsonl*"))
    )
    frame = frame.set_index("id").loc[[f"d{i}" for i in range(len(DOCS))]]
    expected, _ = card_run(prompt_ckpt, [text for _, text in DOCS])
    assert_equals_card({c: frame[c].tolist() for c in frame.columns}, expected, atol=1.01e-4)


def test_config_matches_nemo_curator(make_config) -> None:
    cfg = make_config("classifier=prompt_task_complexity").classifier["prompt_task_complexity"]
    assert (cfg.family, cfg.model) == (
        "prompt_task_complexity",
        "nvidia/prompt-task-and-complexity-classifier",
    )
    assert (cfg.pred_column, cfg.score_column) == ("task_type_1", COMPLEXITY_COLUMN)
    assert (cfg.max_length, cfg.max_chars, cfg.batch_size) == (None, 2000, 256)  # 512, derived


def test_heads_out_of_the_published_order_are_refused(prompt_ckpt: Path, tmp_path: Path) -> None:
    config = json.loads((prompt_ckpt / "config.json").read_text())
    config["target_sizes"] = dict(sorted(config["target_sizes"].items()))
    with pytest.raises(ConfigError, match="target_sizes"):
        PromptTaskSpec.from_config(config)
    config = prompt_task_config("unused")
    config["weights_map"]["reasoning"] = [0, 1, 2]
    with pytest.raises(ConfigError, match="reasoning"):
        PromptTaskSpec.from_config(config)


def test_a_wrong_head_key_is_an_error_naming_it(prompt_ckpt: Path, tmp_path: Path) -> None:
    broken = renamed_key_copy(prompt_ckpt, tmp_path / "broken", "head_7.fc.weight", "heads.7.fc.weight")
    with pytest.raises(CheckpointMismatchError) as err:
        make_classifier(broken).predict(["some prompt"])
    assert "heads.7.fc.weight" in str(err.value) and "head_7.fc.weight" in str(err.value)


def test_python_api_builds_the_same_classifier(prompt_ckpt: Path) -> None:
    from curator.classifiers import PromptTaskComplexityClassifier as Api

    api = Api(model=str(prompt_ckpt), max_length=MAX_LENGTH, device_type="cpu")
    assert isinstance(api.classifier, PromptTaskComplexityClassifier) and api.labels == TASK_TYPES
    texts = texts_of_many_lengths()
    expected, _ = card_run(prompt_ckpt, texts)
    assert_equals_card(api.classifier.predict(texts), expected, atol=1.01e-4)
