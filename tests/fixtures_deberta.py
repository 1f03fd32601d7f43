"""Tiny look-alikes of NVIDIA's DeBERTa mixin checkpoints, in the published on-disk format.

A 2-layer DeBERTa-v2 backbone (relative attention with position buckets, no absolute positions, like
deberta-v3-base), a DeBERTa-v2 Unigram tokenizer trained on a few sentences, and classifier folders whose
config.json and tensor names are those the PyTorchModelHubMixin classes write. Random weights.
"""

from __future__ import annotations

import json
import shutil
import string
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import DebertaV2Config, DebertaV2Model

from tests.conftest import DOCS

SPECIAL_TOKENS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]  # ids 0..4, as deberta-v3's spm vocab
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
TOKENIZER_CORPUS = [text for _, text in DOCS] + [
    "Write a short poem about the sea at night.",
    "Summarize the following article in three sentences for a busy reader.",
    "What is the capital of France? Answer with one word.",
    "Classify the sentiment of this review: the food was cold and the service slow.",
    "Translate to German: good morning, how are you today?",
    "Write a Python function that returns the n-th Fibonacci number.",
]

# deberta-v3-base's architecture at toy size: the same attention kinds, 2 layers of 32 dims. The wide
# initialisation makes random weights tell documents apart (predictions vary from document to document).
TINY_DEBERTA = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=512,
    relative_attention=True,
    position_buckets=256,
    max_relative_positions=-1,
    pos_att_type=["p2c", "c2p"],
    share_att_key=True,
    norm_rel_ebd="layer_norm",
    position_biased_input=False,
    type_vocab_size=0,
    layer_norm_eps=1e-7,
    hidden_act="gelu",
    pad_token_id=0,
    initializer_range=0.3,
)

DOMAIN_LABELS = [
    "Adult",
    "Arts_and_Entertainment",
    "Autos_and_Vehicles",
    "Beauty_and_Fitness",
    "Books_and_Literature",
    "Business_and_Industrial",
    "Computers_and_Electronics",
    "Finance",
    "Food_and_Drink",
    "Games",
    "Health",
    "Hobbies_and_Leisure",
    "Home_and_Garden",
    "Internet_and_Telecom",
    "Jobs_and_Education",
    "Law_and_Government",
    "News",
    "Online_Communities",
    "People_and_Society",
    "Pets_and_Animals",
    "Real_Estate",
    "Science",
    "Sensitive_Subjects",
    "Shopping",
    "Sports",
    "Travel_and_Transportation",
]
QUALITY_LABELS = ["High", "Medium", "Low"]  # index order; alphabetical order differs

TASK_TYPES = [
    "Brainstorming",
    "Chatbot",
    "Classification",
    "Closed QA",
    "Code Generation",
    "Extraction",
    "Open QA",
    "Other",
    "Rewrite",
    "Summarization",
    "Text Generation",
    "Unknown",
]
# The prompt classifier's head description; the head order is the one its published code reads.
PROMPT_HEADS = {
    "task_type": 12,
    "creativity_scope": 3,
    "reasoning": 2,
    "contextual_knowledge": 2,
    "number_of_few_shots": 6,
    "domain_knowledge": 4,
    "no_label_reason": 1,
    "constraint_ct": 2,
}
PROMPT_WEIGHTS = {
    "creativity_scope": [2, 1, 0],
    "reasoning": [0, 1],
    "contextual_knowledge": [0, 1],
    "number_of_few_shots": [0, 1, 2, 3, 4, 5],
    "domain_knowledge": [3, 1, 2, 0],
    "no_label_reason": [0],
    "constraint_ct": [1, 0],
}
PROMPT_DIVISORS = {
    "creativity_scope": 2,
    "reasoning": 1,
    "contextual_knowledge": 1,
    "number_of_few_shots": 1,
    "domain_knowledge": 3,
    "no_label_reason": 1,
    "constraint_ct": 1,
}


def write_tokenizer(folder: Path) -> int:
    """A DeBERTa-v2 Unigram tokenizer ([PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3); returns its vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "),
            normalizers.NFC(),
            normalizers.Strip(left=False, right=True),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        unk_token="[UNK]",
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TOKENIZER_CORPUS, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    specials = dict(
        bos_token="[CLS]",
        eos_token="[SEP]",
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )
    config = {"tokenizer_class": "DebertaV2Tokenizer", "model_max_length": 512, "do_lower_case": False}
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, **specials}, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    return tokenizer.get_vocab_size()


def copy_tokenizer(source: Path, folder: Path) -> None:
    """Put a tokenizer's files in a checkpoint folder (the classifiers ship their own)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(source / name, folder / name)


def save_backbone(folder: Path, seed: int = 0) -> Path:
    """A tiny DebertaV2Model saved as transformers saves it (safetensors), with its tokenizer."""
    vocab_size = write_tokenizer(folder)
    torch.manual_seed(seed)
    DebertaV2Model(DebertaV2Config(vocab_size=vocab_size, **TINY_DEBERTA)).save_pretrained(folder)
    return folder


def _head(rows: int, hidden: int, generator: torch.Generator, scale: float) -> dict[str, torch.Tensor]:
    """A linear head's tensors, large enough that class probabilities differ clearly."""
    return {
        "weight": torch.randn(rows, hidden, generator=generator) * scale,
        "bias": torch.randn(rows, generator=generator) * 0.1,
    }


def _backbone_state(backbone: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The backbone's saved tensors under the classifier's attribute name."""
    return {f"{prefix}{key}": value for key, value in load_file(str(backbone / "model.safetensors")).items()}


def mixin_config(base_model: str, labels: list[str], fc_dropout: float = 0.2) -> dict:
    """config.json of a single-head classifier, with exactly the keys the published ones have."""
    return {
        "base_model": base_model,
        "config_path": None,
        "fc_dropout": fc_dropout,
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
        "model_type": "deberta-v2",
        "pretrained": True,
    }


def write_mixin_checkpoint(
    folder: Path, backbone: Path, labels: list[str], seed: int = 0, base_model: str | None = None
) -> Path:
    """A single-head classifier folder: config.json as the mixin writes it, `model.*` + `fc.*` tensors."""
    folder.mkdir(parents=True, exist_ok=True)
    config = mixin_config(base_model or str(backbone), labels)
    (folder / "config.json").write_text(json.dumps(config, sort_keys=True, indent=2))
    hidden = TINY_DEBERTA["hidden_size"]
    head = _head(len(labels), hidden, torch.Generator().manual_seed(seed), scale=0.5)
    state = {**_backbone_state(backbone, "model."), **{f"fc.{k}": v for k, v in head.items()}}
    save_file(state, str(folder / "model.safetensors"))
    copy_tokenizer(backbone, folder)
    return folder


def prompt_task_config(base_model: str) -> dict:
    """config.json of the prompt task/complexity classifier (heads in the order its code reads them).

    A fresh dict each call: tests edit it (the shared PROMPT_WEIGHTS once leaked an edit into later tests)."""
    return {
        "base_model": base_model,
        "fc_dropout": 0.2,
        "targets": list(PROMPT_HEADS),
        "target_sizes": dict(PROMPT_HEADS),
        "task_type_map": {str(i): name for i, name in enumerate(TASK_TYPES)},
        "weights_map": {target: list(weights) for target, weights in PROMPT_WEIGHTS.items()},
        "divisor_map": dict(PROMPT_DIVISORS),
    }


def write_prompt_task_checkpoint(folder: Path, backbone: Path, seed: int = 0) -> Path:
    """The multi-head classifier folder: `backbone.*` + `head_i.fc.*` tensors."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(prompt_task_config(str(backbone)), indent=2))
    generator = torch.Generator().manual_seed(seed)
    state = _backbone_state(backbone, "backbone.")
    for i, size in enumerate(PROMPT_HEADS.values()):
        head = _head(size, TINY_DEBERTA["hidden_size"], generator, scale=2.0)
        state.update({f"head_{i}.fc.{k}": v for k, v in head.items()})
    save_file(state, str(folder / "model.safetensors"))
    copy_tokenizer(backbone, folder)
    return folder


def texts_of_many_lengths() -> list[str]:
    """Documents from a few tokens to past any test max_length, so sorting and batching matter."""
    short = ["Hi.", "What is 2+2?", "Sports!"]
    long = [
        "Write a detailed story about a small town where a clock goes missing. " * 12,
        "The vet said the puppy needs a flea treatment and two more vaccinations. " * 5,
    ]
    return [text for _, text in DOCS] + short + long
