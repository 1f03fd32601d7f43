"""A lean forward pass for DeBERTa-v2/v3 encoders (deberta-v3-base, mdeberta-v3-base) at inference.

Same weights and arithmetic as Hugging Face's `DebertaV2Model`, with less work around it:

- one fused Q/K/V projection per layer, and `scaled_dot_product_attention` (fused on CPU and GPU);
- the disentangled-attention terms without any gather: the position projections of every layer
  (`key_proj`/`query_proj` of the normed relative embeddings, a constant of the weights) are computed
  once at load time instead of once per batch; per batch, the projections are laid out along the 2n-1
  relative distances of its width n (a small index_select), multiplied with the queries (content →
  position) and keys (position → content), and the [n, n] terms read from those products as strided
  views (row i of a term is row i of its product from column n-1-i on: no copy), summed into the additive
  attention bias that carries the padding mask too;
- `first_only`: a head that reads the first token (the CLS heads of domain, quality, content type)
  needs the last layer's keys and values for every token but its queries, bias row, attention output
  and feed-forward for that token only;
- built uninitialised and handed the checkpoint's tensors (no random init, no modelling import);
- on CPU: the attention itself by a C++ kernel compiled on first use (`curator.models.native`: each
  (row, head)'s scores built in cache, not in passes over the whole bias), in float32 also under bf16
  autocast (the bf16 ops' transposed adds and casts cost more than float32 scores); in float32 also the
  output block's bias + GELU and residual + LayerNorm as one pass each; PyTorch's ops where they cannot
  be built or `inference.native_attention=false`.

Results equal Hugging Face's within float rounding (tests/test_fast_deberta.py). Configs it does not
reproduce exactly (convolution layers, embedding projections, other attention kinds) are left to
Hugging Face's modules, with a log line saying why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from curator.models.fast_encoder import (
    ACTIVATIONS,
    LAYER_KEY,
    FastLayer,
    _assigned,
    fuse_qkv,
    uninitialised,
)
from curator.models.fast_encoder import LAYER_PARTS as BERT_LAYER_PARTS
from curator.models.native import kernels as native_kernels
from curator.models.weights import IGNORABLE_SUFFIXES

log = logging.getLogger(__name__)

POSITION_TERMS = {"c2p", "p2c"}  # content → position, position → content
# Queries (c2p) and keys (p2c) per block of the position terms: a block's product is small and spans
# n + BLOCK - 1 relative distances, not 2n - 1 (512 tokens: 3x faster than one 48 MiB product, AMX Xeon)
BLOCK = 128
REL_NORMS = {"layer_norm", "none"}


def position_terms(config: Any) -> list[str]:
    """`pos_att_type` as a list ("p2c|c2p" in some configs, a list in others)."""
    kinds = getattr(config, "pos_att_type", None) or []
    if isinstance(kinds, str):
        kinds = kinds.split("|")
    return [str(k).strip().lower() for k in kinds]


def rel_norms(config: Any) -> list[str]:
    """`norm_rel_ebd` as a list of its parts."""
    return [x.strip() for x in str(getattr(config, "norm_rel_ebd", "none")).lower().split("|")]


def unsupported(config: Any) -> str | None:
    """Why this lean forward would not reproduce `config`'s encoder exactly; None when it does."""
    hidden, heads = getattr(config, "hidden_size", 0), getattr(config, "num_attention_heads", 1)
    checks = [
        (getattr(config, "model_type", None) == "deberta-v2", "model_type is not deberta-v2"),
        (not getattr(config, "conv_kernel_size", 0), "a convolution layer (conv_kernel_size)"),
        (getattr(config, "embedding_size", hidden) in (None, hidden), "an embedding projection"),
        (isinstance(getattr(config, "hidden_act", None), str), "a non-string activation"),
        (
            getattr(config, "hidden_act", None) in ACTIVATIONS,
            f"activation {getattr(config, 'hidden_act', None)}",
        ),
        (hidden % heads == 0, "hidden size not a multiple of the heads"),
        (
            getattr(config, "attention_head_size", hidden // heads) == hidden // heads,
            "an attention_head_size",
        ),
        (set(position_terms(config)) <= POSITION_TERMS, f"pos_att_type {position_terms(config)}"),
        (set(rel_norms(config)) <= REL_NORMS, f"norm_rel_ebd {getattr(config, 'norm_rel_ebd', None)}"),
        (not getattr(config, "is_decoder", False), "a decoder"),
    ]
    return next((reason for ok, reason in checks if not ok), None)


def log_bucket(relative: torch.Tensor, buckets: int, max_position: int) -> torch.Tensor:
    """DeBERTa's log-bucketed relative positions (exact below buckets/2, logarithmic beyond), as HF's
    `make_log_bucket_position` computes them, float32 step for step."""
    sign = torch.sign(relative)
    mid = buckets // 2
    abs_pos = torch.where(
        (relative < mid) & (relative > -mid), torch.tensor(mid - 1).type_as(relative), torch.abs(relative)
    )
    ratio = torch.log(torch.tensor((max_position - 1) / mid))
    log_pos = torch.ceil(torch.log(abs_pos / mid) / ratio * (mid - 1)) + mid
    return torch.where(abs_pos <= mid, relative.type_as(log_pos), log_pos * sign)


class FastDebertaEmbeddings(nn.Module):
    """Word embeddings (+ absolute positions, + token type 0, where the config has them), LayerNorm."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, hidden)
        self.positions = getattr(config, "position_biased_input", True)
        if self.positions:
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, hidden)
        self.token_types = config.type_vocab_size > 0
        if self.token_types:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids)
        if self.positions:
            x = x + self.position_embeddings.weight[: input_ids.shape[1]]
        if self.token_types:
            x = x + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)  # padding rows are not zeroed: no real token attends to them


def toeplitz(product: torch.Tensor, n: int) -> torch.Tensor:
    """[..., b, w] (each [b, w] block contiguous, w = n + b - 1) → the [..., b, n] view whose (i, j) is
    product[..., i, b-1-i+j]: no copy, no gather."""
    rows, width = product.shape[-2:]
    assert product.stride(-1) == 1 and product.stride(-2) == width, "rows of the product must be contiguous"
    strides = product.stride()
    return product.as_strided(
        (*product.shape[:-1], n), (*strides[:-2], width - 1, 1), product.storage_offset() + rows - 1
    )


def by_head(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """x [rows, heads, n, d] · positions [heads, m, d] → [rows, heads, n, m] as one matmul per head
    over every row's tokens (rows folded into the matmul: the position table is not copied per row)."""
    rows, heads, n, d = x.shape
    folded = x.transpose(0, 1).reshape(heads, rows * n, d)
    product = torch.bmm(folded, positions.transpose(-1, -2).to(folded.dtype))
    return product.view(heads, rows, n, -1).transpose(0, 1)


def padded_columns(keep: torch.Tensor) -> slice:
    """The span of key columns where some row is padding: sorted batches pad little, so masking only
    those skips a pass over every layer's bias. All columns on other devices (no host sync there)."""
    if keep.device.type != "cpu":
        return slice(None)
    columns = (~keep).reshape(-1, keep.shape[-1]).any(0).nonzero()
    return slice(int(columns[0]), int(columns[-1]) + 1) if len(columns) else slice(0, 0)


class FastDebertaLayer(FastLayer):
    """One DeBERTa layer: BERT's post-norm layer with fused Q/K/V, plus the disentangled-attention bias."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        hidden = config.hidden_size
        self.head_size = hidden // self.heads
        self.terms = position_terms(config)
        self.relative = getattr(config, "relative_attention", False)
        self.compiled = self.relative and bool(self.terms)  # PyTorch's attention without position terms
        self.scale = 1.0 / math.sqrt(self.head_size * (1 + len(self.terms)))  # HF divides by this too
        self.share_key = getattr(config, "share_att_key", False)
        if self.relative and not self.share_key:
            if "c2p" in self.terms:
                self.pos_key_proj = nn.Linear(hidden, hidden)
            if "p2c" in self.terms:
                self.pos_query_proj = nn.Linear(hidden, hidden)
        # [heads, 2 x span, head_size] position keys/queries, pre-scaled: set by `prepare` after loading
        self.register_buffer("pos_key", None, persistent=False)
        self.register_buffer("pos_query", None, persistent=False)

    @torch.no_grad()
    def prepare(self, rel: torch.Tensor) -> None:
        """Project the (normed) relative embeddings once: they are weights, not inputs."""
        if not self.relative:
            return
        hidden = rel.shape[-1]
        if self.share_key:
            q, k, _ = F.linear(rel, self.qkv.weight, self.qkv.bias).split(hidden, dim=-1)
        else:
            k = self.pos_key_proj(rel) if "c2p" in self.terms else None
            q = self.pos_query_proj(rel) if "p2c" in self.terms else None
        shape = (len(rel), self.heads, self.head_size)
        self.pos_key = k.view(shape).transpose(0, 1).contiguous() * self.scale if k is not None else None
        self.pos_query = q.view(shape).transpose(0, 1).contiguous() * self.scale if q is not None else None

    def bias(self, q: torch.Tensor, k: torch.Tensor, index: torch.Tensor) -> torch.Tensor | None:
        """c2p + p2c scores [rows, heads, queries, n] (queries: n, or 1 for the first token only).

        `index[m]`: the position-table row of relative distance m - (n-1).
        """
        n = k.shape[2]
        out = None
        if q.shape[2] == 1:  # the first token only: distances 0 - j, j = 0..n-1
            first = index[:n].flip(0)
            if "c2p" in self.terms:
                out = q @ self.pos_key[:, first].transpose(-1, -2).to(q.dtype)
            if "p2c" in self.terms:
                p2c = (k * self.pos_query[:, first].to(k.dtype)).sum(-1).unsqueeze(2)
                out = p2c if out is None else out + p2c
            return out
        # c2p[i, j] = q_i · key_pos[bucket(i - j)], p2c[i, j] = k_j · query_pos[bucket(i - j)], by blocks
        # of BLOCK queries (c2p) and keys (p2c): a block's product spans n + BLOCK - 1 distances, not 2n - 1,
        # and stays small (one product over 512 tokens was 48 MiB, written to fresh pages each batch)
        key_table, query_table = self.position_tables(index)
        out = q.new_empty((*q.shape[:3], n)) if key_table is not None else q.new_zeros((*q.shape[:3], n))
        blocks = [(start, min(n, start + BLOCK)) for start in range(0, n, BLOCK)]
        if key_table is not None:  # rows start..end-1 meet distances start-(n-1)..end-1
            for start, end in blocks:
                positions = key_table[:, n - end : 2 * n - 1 - start]
                out[:, :, start:end] = toeplitz(by_head(q[:, :, start:end], positions), n)
        if query_table is not None:  # after every c2p row is written: p2c adds by columns
            for start, end in blocks:
                positions = query_table[:, n - end : 2 * n - 1 - start]
                out[..., start:end] += toeplitz(by_head(k[:, :, start:end], positions), n).transpose(-1, -2)
        return out

    def position_tables(self, index: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The c2p (key) and p2c (query) position tables laid along the 2n - 1 relative distances once
        per layer and batch, [heads, 2n - 1, d] (None for a term the model lacks): key column m holds
        distance (i - j) = n - 1 - m, query column m distance m - (n - 1)."""
        key_table = self.pos_key[:, index.flip(0)] if "c2p" in self.terms else None
        query_table = self.pos_query[:, index] if "p2c" in self.terms else None
        return key_table, query_table

    def kernel_tables(self, index: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """`position_tables` transposed, [heads, d, 2n - 1], as the compiled kernel reads them: its position
        products are then plain matmuls, which BLAS runs faster than ones with a transposed operand."""
        # whole rows gathered, then one transposed copy: 1.6x faster than gathering columns (AMD EPYC)
        key_table, query_table = (
            t.transpose(1, 2).contiguous() if t is not None else None for t in self.position_tables(index)
        )
        return key_table, query_table

    def wants_kernel(self, dtype: torch.dtype) -> bool:
        """Any dtype the kernel takes, AMX or not: under bf16 autocast PyTorch's position ops cost more
        than float32 scores built in cache (AMD EPYC, 1.09-1.26x)."""
        return True

    def kernel(self, q: torch.Tensor, first_only: bool, index: torch.Tensor | None = None) -> Callable | None:
        """The compiled attention where BERT's applies and the position terms are on."""
        if not self.compiled or index is None:
            return None
        return super().kernel(q, first_only)

    def fused(self, x: torch.Tensor) -> Any | None:
        """The compiled bias + GELU and residual + LayerNorm steps where they apply: float32 on CPU
        outside autocast, plain Linear layers (not int8's), an erf GELU."""
        plain = all(type(part) is nn.Linear for part in (self.out, self.up, self.down))
        if not (self.native and plain and self.activation == "gelu") or torch.is_autocast_enabled("cpu"):
            return None
        return native_kernels() if x.dtype == torch.float32 and x.device.type == "cpu" else None

    def finish(self, attended: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """BERT's output block; with the compiled steps, each matmul's bias, the activation, the residual
        and the norm in one pass over its output instead of a bias copy and two or three passes."""
        if (ops := self.fused(x)) is None:
            return super().finish(attended, x)
        rows = x.reshape(-1, x.shape[-1])
        attended = attended.transpose(1, 2).reshape(rows.shape)
        norm1, norm2 = self.norm1, self.norm2
        h = ops.bias_residual_layer_norm_(
            attended @ self.out.weight.t(), self.out.bias, rows, norm1.weight, norm1.bias, norm1.eps
        )
        up = ops.bias_gelu_(h @ self.up.weight.t(), self.up.bias)
        out = ops.bias_residual_layer_norm_(
            up @ self.down.weight.t(), self.down.bias, h, norm2.weight, norm2.bias, norm2.eps
        )
        return out.view(x.shape)

    def forward(
        self,
        x: torch.Tensor,
        keep: torch.Tensor,
        index: torch.Tensor | None,
        first_only: bool = False,
        padded: slice = slice(None),
    ) -> torch.Tensor:
        """`padded`: the key columns where some row is padding (only they are masked in the bias)."""
        q, k, v, x = self.project(x, first_only)
        if (kernel := self.kernel(q, first_only, index)) is not None:
            key_table, query_table = self.kernel_tables(index)
            q32, k32, v32 = (t.float() for t in (q, k, v))  # bf16 under autocast: scores in float32
            attended = kernel(q32, k32, v32, key_table, query_table, keep, self.scale)  # [rows, n, heads, d]
            return self.finish(attended.transpose(1, 2).to(q.dtype), x)
        bias = self.bias(q, k, index) if self.relative and index is not None else None
        if bias is not None:
            bias[..., padded].masked_fill_(~keep[..., padded], float("-inf"))
        mask = keep if bias is None else bias
        return self.finish(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale), x)


class FastDebertaEncoder(nn.Module):
    """A DeBERTa-v2/v3 backbone: embeddings, relative-position table, `FastDebertaLayer`s."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.embeddings = FastDebertaEmbeddings(config)
        self.relative = getattr(config, "relative_attention", False)
        if self.relative:
            max_relative = getattr(config, "max_relative_positions", -1)
            self.max_relative = max_relative if max_relative >= 1 else config.max_position_embeddings
            self.buckets = getattr(config, "position_buckets", -1)
            self.span = self.buckets if self.buckets > 0 else self.max_relative
            self.rel_embeddings = nn.Embedding(2 * self.span, config.hidden_size)
            if "layer_norm" in rel_norms(config):
                self.rel_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(FastDebertaLayer(config) for _ in range(config.num_hidden_layers))

    @torch.no_grad()
    def prepare(self) -> None:
        """Compute every layer's position projections (after the weights are loaded)."""
        if not self.relative:
            return
        rel = self.rel_embeddings.weight[: 2 * self.span]
        rel = self.rel_norm(rel) if hasattr(self, "rel_norm") else rel
        for layer in self.layers:
            layer.prepare(rel)

    def position_index(self, n: int, device: torch.device) -> torch.Tensor:
        """Position-table rows of the relative distances -(n-1)..n-1 (bucketed, clamped as HF does)."""
        relative = torch.arange(-(n - 1), n, device=device)
        if self.buckets > 0 and self.max_relative > 0:
            relative = log_bucket(relative, self.buckets, self.max_relative).long()
        return torch.clamp(relative + self.span, 0, 2 * self.span - 1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, first_only: bool = False
    ) -> torch.Tensor:
        """Hidden states [rows, width, hidden], or [rows, 1, hidden] with `first_only`."""
        x = self.embeddings(input_ids)
        keep = attention_mask[:, None, None, :].bool()
        index = self.position_index(input_ids.shape[1], input_ids.device) if self.relative else None
        last, padded = len(self.layers) - 1, padded_columns(keep)
        for i, layer in enumerate(self.layers):
            x = layer(x, keep, index, first_only=first_only and i == last, padded=padded)
        return x


class ContextPooler(nn.Module):
    """DebertaV2ForSequenceClassification's pooler: dense + activation on the first token."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        size = getattr(config, "pooler_hidden_size", None) or config.hidden_size
        self.dense = nn.Linear(size, size)
        self.activation = getattr(config, "pooler_hidden_act", "gelu")

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.activation](self.dense(hidden[:, 0]))


class FastDebertaSequenceClassifier(nn.Module):
    """Logits of a DebertaV2ForSequenceClassification checkpoint (pooler + classifier on token 0)."""

    def __init__(self, encoder: FastDebertaEncoder) -> None:
        super().__init__()
        self.config = config = encoder.config
        self.deberta = encoder
        self.pooler = ContextPooler(config)
        self.classifier = nn.Linear(self.pooler.dense.out_features, config.num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooler(self.deberta(input_ids, attention_mask, first_only=True)))


LAYER_PARTS = {
    **BERT_LAYER_PARTS,
    "attention.self.pos_key_proj": "pos_key_proj",
    "attention.self.pos_query_proj": "pos_query_proj",
}
QKV = ("query_proj", "key_proj", "value_proj")


def fast_deberta_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Hugging Face's DebertaV2Model keys under `prefix` → `FastDebertaEncoder` keys (same prefix),
    Q/K/V fused. Other keys (heads) pass unchanged; unknown ones stay, so the strict check fails."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    renames = {"encoder.rel_embeddings.": "rel_embeddings.", "encoder.LayerNorm.": "rel_norm."}
    for key, value in state.items():
        if key.endswith(IGNORABLE_SUFFIXES):
            continue
        rest = key[len(prefix) :] if key.startswith(prefix) else None
        match = LAYER_KEY.fullmatch(rest) if rest is not None else None
        if rest is None or (match is None and not rest.startswith(tuple(renames))):
            out[key] = value  # heads, embeddings.* (same names), unknown keys
        elif match is None:
            old = next(r for r in renames if rest.startswith(r))
            out[prefix + renames[old] + rest[len(old) :]] = value
        else:
            layer, part, kind = match.groups()
            name = part.rsplit(".", 1)[-1]
            if part.startswith("attention.self.") and name in QKV:
                qkv.setdefault((layer, kind), {})[name] = value
            elif part in LAYER_PARTS:
                out[f"{prefix}layers.{layer}.{LAYER_PARTS[part]}.{kind}"] = value
            else:
                out[key] = value
    out.update(fuse_qkv(qkv, QKV, prefix, prefix))
    return out


def lean_deberta(
    make: Callable[[FastDebertaEncoder], nn.Module],
    config: Any,
    state: dict[str, torch.Tensor],
    prefix: str,
    dtype: torch.dtype = torch.float32,
) -> nn.Module | None:
    """`make(encoder)` holding `state` (its backbone's keys under `prefix`) on the lean DeBERTa forward,
    or None (logged) where the config or the tensors do not fit it: then Hugging Face's modules run."""
    reason = unsupported(config)
    if reason is None:
        with uninitialised():
            module = make(FastDebertaEncoder(config))
        module = _assigned(module, fast_deberta_state(state, prefix), dtype)
        reason = None if module is not None else "the checkpoint's tensors differ from the config's"
    if reason is not None:
        log.info("Lean DeBERTa forward not used (%s): running Hugging Face's modules", reason)
        return None
    for part in module.modules():
        if isinstance(part, FastDebertaEncoder):
            part.prepare()
    return module


def fast_deberta_sequence_classifier(
    config: Any, state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32
) -> FastDebertaSequenceClassifier | None:
    """A DebertaV2ForSequenceClassification checkpoint on the lean forward, or None where it does not fit."""
    architectures = getattr(config, "architectures", None) or []
    if getattr(config, "model_type", None) != "deberta-v2" or not all(
        name == "DebertaV2ForSequenceClassification" for name in architectures
    ):
        return None
    if getattr(config, "pooler_hidden_act", "gelu") not in ACTIVATIONS:
        log.info("Lean DeBERTa forward not used (pooler activation): running Hugging Face's modules")
        return None
    return lean_deberta(FastDebertaSequenceClassifier, config, state, "deberta.", dtype)
