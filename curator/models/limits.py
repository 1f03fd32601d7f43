"""How many tokens a model reads: the reference's rule, derived from the tokenizer and backbone config.

CrossFit's `HFModel.max_seq_length` (what NeMo Curator's encoder classifiers truncate to): the tokenizer's
`model_max_length`, unless it is above 1e5 (Hugging Face's "unset" sentinel is ~1e30), then the model
config's `max_position_embeddings`. Sentence-transformers models read `max_seq_length` from
`sentence_bert_config.json`, else the smaller of those two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curator.errors import ConfigError

# CrossFit's guard: a tokenizer limit above this is Hugging Face's "no limit" value, not a length.
SANE_TOKENIZER_LIMIT = 100_000
# Architectures whose position ids start after the padding index (RoBERTa's 514 positions hold 512 tokens).
OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer"})


def tokenizer_limit(tokenizer: Any) -> int | None:
    """The tokenizer's `model_max_length` when it is a real length, else None."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int | float) and 0 < limit <= SANE_TOKENIZER_LIMIT:
        return int(limit)
    return None


def position_limit(config: Any) -> int | None:
    """Tokens the backbone can number: `max_position_embeddings`, less the padding offset where
    position ids start after the padding index (RoBERTa family, as Hugging Face numbers them)."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    if getattr(config, "model_type", None) in OFFSET_POSITIONS:
        pad = getattr(config, "pad_token_id", None)
        positions -= (1 if pad is None else pad) + 1
    return positions


# Encoders whose position embeddings are a table of absolute positions: a longer input has no row to read
# (DeBERTa's relative positions, and rotary LLMs, read past max_position_embeddings)
ABSOLUTE_POSITIONS = frozenset(
    {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert", "mpnet", "albert"}
)


def absolute_position_limit(config: Any) -> int | None:
    """The most tokens an encoder with absolute position embeddings can read at all; None for others."""
    absolute = getattr(config, "position_embedding_type", "absolute") == "absolute"
    if getattr(config, "model_type", None) not in ABSOLUTE_POSITIONS or not absolute:
        return None
    return position_limit(config)


def reference_max_length(tokenizer: Any, config: Any, source: str = "the model") -> int:
    """CrossFit's rule: the tokenizer's `model_max_length`, else the backbone's position limit."""
    limit = tokenizer_limit(tokenizer) or position_limit(config)
    if limit is None:
        raise ConfigError(
            f"Cannot tell how many tokens {source} reads: its tokenizer sets no model_max_length and "
            "its config no max_position_embeddings. Set the classifier's max_length."
        )
    return limit


def sentence_transformers_max_length(folder: Path, tokenizer: Any, config: Any) -> int:
    """sentence-transformers' rule: `max_seq_length` in sentence_bert_config.json, else the smaller of
    the tokenizer's limit and the backbone's positions."""
    path = folder / "sentence_bert_config.json"
    if path.is_file():
        configured = json.loads(path.read_text(encoding="utf-8")).get("max_seq_length")
        if configured:
            return int(configured)
    limits = [n for n in (tokenizer_limit(tokenizer), position_limit(config)) if n]
    if not limits:
        return reference_max_length(tokenizer, config, str(folder))
    return min(limits)
