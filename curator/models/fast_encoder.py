"""A leaner forward pass for BERT-family encoders (BERT, RoBERTa, XLM-R) at inference.

Same weights and the same arithmetic as Hugging Face's modules, with less work around it:

- one fused Q/K/V projection per layer (one 3·hidden-wide matmul instead of three narrow ones);
- `scaled_dot_product_attention` with a boolean padding mask;
- `positions="first"`: a head that reads only the first token (BERT's pooler, RoBERTa's head, NeMo's
  CLS heads) needs, in the last layer, keys and values for every token but queries, attention output
  and feed-forward only for that token — about 5/6 of the last layer's work is skipped.

Outputs equal Hugging Face's within float rounding (tested to 1e-5). Anything this module does not
recognise (other attention types, relative positions, unknown activations) is left to Hugging Face.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}
ENCODER_TYPES = {"bert", "roberta", "xlm-roberta"}  # absolute positions, post-norm layers, same module names


class FastLayer(nn.Module):
    """One post-norm transformer layer with the Q/K/V projections fused into one Linear."""

    def __init__(self, layer: nn.Module, heads: int, activation: str) -> None:
        super().__init__()
        attention = layer.attention.self
        parts = (attention.query, attention.key, attention.value)
        hidden = attention.query.in_features
        self.qkv = nn.Linear(hidden, 3 * hidden)
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([p.weight for p in parts]))
            self.qkv.bias.copy_(torch.cat([p.bias for p in parts]))
        self.qkv.to(attention.query.weight.dtype)
        self.out = layer.attention.output.dense
        self.norm1 = layer.attention.output.LayerNorm
        self.up = layer.intermediate.dense
        self.down = layer.output.dense
        self.norm2 = layer.output.LayerNorm
        self.heads = heads
        self.activation = activation

    def forward(self, x: torch.Tensor, mask: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        rows, width, hidden = x.shape
        q, k, v = self.qkv(x).view(rows, width, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        if first_only:  # only the first token's output is read after this layer
            q, x = q[:, :, :1], x[:, :1]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        attended = attended.transpose(1, 2).reshape(rows, x.shape[1], hidden)
        x = self.norm1(self.out(attended) + x)
        return self.norm2(self.down(ACTIVATIONS[self.activation](self.up(x))) + x)


class FastEncoder(nn.Module):
    """A BERT-family encoder's embeddings and layers, run by `FastLayer`s."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        config = base.config
        self.config = config
        self.embeddings = base.embeddings
        self.layers = nn.ModuleList(
            FastLayer(layer, config.num_attention_heads, config.hidden_act) for layer in base.encoder.layer
        )

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, first_only: bool = False
    ) -> torch.Tensor:
        """Hidden states [rows, width, hidden], or [rows, 1, hidden] with `first_only`."""
        x = self.embeddings(input_ids=input_ids)
        mask = attention_mask[:, None, None, :].bool()
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, first_only=first_only and i == last)
        return x


class FastSequenceClassifier(nn.Module):
    """Logits of a BERT/RoBERTa sequence-classification model whose head reads the first token."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        base = getattr(model, model.base_model_prefix)
        self.config = model.config
        self.encoder = FastEncoder(base)
        self.pooler = getattr(base, "pooler", None)  # BERT: dense + tanh on the first token
        self.classifier = model.classifier  # RoBERTa's head takes features[:, 0] itself

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask, first_only=True)
        if self.pooler is not None:
            return self.classifier(self.pooler(hidden))
        return self.classifier(hidden)


def supports_fast_encoder(config: Any) -> bool:
    """Whether `FastEncoder` reproduces this config's encoder exactly."""
    return (
        getattr(config, "model_type", None) in ENCODER_TYPES
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and isinstance(getattr(config, "hidden_act", None), str)
        and config.hidden_act in ACTIVATIONS
        and not getattr(config, "is_decoder", False)
        and config.hidden_size % config.num_attention_heads == 0
    )


def fast_sequence_classifier(model: nn.Module) -> nn.Module | None:
    """The fast path for a BERT/RoBERTa/XLM-R sequence classifier, or None when it does not apply."""
    name = type(model).__name__
    if not name.endswith("ForSequenceClassification") or not supports_fast_encoder(model.config):
        return None
    if model.config.model_type == "bert" and getattr(model.bert, "pooler", None) is None:
        return None
    return FastSequenceClassifier(model).eval()
