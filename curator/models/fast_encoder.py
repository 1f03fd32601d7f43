"""A leaner forward pass for BERT-family encoders (BERT, RoBERTa, XLM-R) at inference.

Same weights and the same arithmetic as Hugging Face's modules, with less work around it:

- one fused Q/K/V projection per layer (one 3·hidden-wide matmul instead of three narrow ones);
- on CPU, the attention by the compiled kernel of `curator.models.native` (DeBERTa's, without position
  terms), in float32 also under bf16 autocast; elsewhere, or with `inference.native_attention=false`,
  `scaled_dot_product_attention` with a boolean padding mask;
- `positions="first"`: a head that reads only the first token (BERT's pooler, RoBERTa's head, NeMo's
  CLS heads) needs, in the last layer, keys and values for every token but queries, attention output
  and feed-forward only for that token — about 5/6 of the last layer's work is skipped;
- built uninitialised and handed the checkpoint's tensors: no random initialisation first, and
  Hugging Face's modelling code (seconds of imports on every worker) is never imported.

Outputs equal Hugging Face's within float rounding (tested to 1e-5). Anything this module does not
recognise (other attention types, relative positions, unknown activations) is left to Hugging Face.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from curator.inference.numerics import cpu_numerics
from curator.models.native import deberta_attention
from curator.models.weights import IGNORABLE_SUFFIXES

ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}
ENCODER_TYPES = {"bert", "roberta", "xlm-roberta"}  # absolute positions, post-norm layers, same module names
INIT_FUNCTIONS = ("kaiming_uniform_", "uniform_", "normal_", "ones_", "zeros_")  # Linear, Embedding, norms
KERNEL_WIDTH = 4096  # the compiled attention keeps an n x n float32 buffer per thread: 64 MiB here
WIDENED = (torch.float32, torch.bfloat16, torch.float16)  # q, k, v the kernel takes (widened to float32)


class FastEmbeddings(nn.Module):
    """Word + token type 0 + absolute position embeddings, then LayerNorm, as BERT and RoBERTa add them."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, hidden)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, hidden)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        # RoBERTa and XLM-R count positions from padding_idx + 1 over real tokens; pads sit at padding_idx.
        self.padding_idx = None if config.model_type == "bert" else config.pad_token_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.padding_idx is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        else:
            real = input_ids.ne(self.padding_idx).int()
            positions = (torch.cumsum(real, dim=1).type_as(real) * real).long() + self.padding_idx
        x = self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x + self.position_embeddings(positions))


class FastLayer(nn.Module):
    """One post-norm transformer layer with the Q/K/V projections fused into one Linear."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        hidden, eps = config.hidden_size, config.layer_norm_eps
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden, eps=eps)
        self.up = nn.Linear(hidden, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=eps)
        self.heads = config.num_attention_heads
        self.activation = config.hidden_act
        self.native = True  # the compiled attention where it applies (`set_native_attention`)
        self.compiled = True  # whether this kind of layer can run it at all

    def project(self, x: torch.Tensor, first_only: bool) -> tuple[torch.Tensor, ...]:
        """q, k, v [rows, heads, width, head size] from one fused matmul; q and x cut to the first token
        when only its output is read after this layer."""
        rows, width, hidden = x.shape
        q, k, v = self.qkv(x).view(rows, width, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        if first_only:
            q, x = q[:, :, :1], x[:, :1]
        return q, k, v, x

    def finish(self, attended: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Output projection, residual and norm, then the feed-forward block with its own."""
        attended = attended.transpose(1, 2).reshape(x.shape)
        x = self.norm1(self.out(attended) + x)
        return self.norm2(self.down(ACTIVATIONS[self.activation](self.up(x))) + x)

    def compiled_attention(self, q: torch.Tensor, first_only: bool) -> Any | None:
        """The compiled attention where it can run: every query, on CPU, float32 q, k and v or bf16/fp16
        ones under autocast (it computes in float32)."""
        if not self.native or first_only or q.dtype not in WIDENED or q.device.type != "cpu":
            return None
        return deberta_attention() if q.shape[2] <= KERNEL_WIDTH else None

    def wants_kernel(self, dtype: torch.dtype) -> bool:
        """Whether q, k, v of `dtype` go to the compiled attention where it can run: under autocast not
        on a CPU with AMX tiles, which run PyTorch's bf16 attention (not measured against the kernel)."""
        return dtype == torch.float32 or "amx_bf16" not in cpu_numerics().flags

    def kernel(self, q: torch.Tensor, first_only: bool) -> Any | None:
        """The compiled attention for this layer's q, or None: PyTorch's attention."""
        return self.compiled_attention(q, first_only) if self.wants_kernel(q.dtype) else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor, first_only: bool = False) -> torch.Tensor:
        q, k, v, x = self.project(x, first_only)
        if (kernel := self.kernel(q, first_only)) is not None:
            # head size 32 (MiniLM): 1.1-1.4x PyTorch's fused attention on 2 cores (AMD EPYC), and in
            # float32 under bf16 autocast, where PyTorch's bf16 attention is no faster than its float32
            q32, k32, v32 = (t.float() for t in (q, k, v))
            scale = q.shape[-1] ** -0.5
            attended = kernel(q32, k32, v32, None, None, mask, scale)  # [rows, n, heads, d]
            return self.finish(attended.transpose(1, 2).to(q.dtype), x)
        return self.finish(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), x)


def set_native_attention(model: nn.Module, enabled: bool) -> None:
    """Use (or not) the compiled attention in every lean layer (BERT-family or DeBERTa) of `model`."""
    for part in model.modules():
        if isinstance(part, FastLayer):
            part.native = enabled


def attention_kind(model: nn.Module, dtype: torch.dtype = torch.float32) -> str | None:
    """How `model`'s lean layers compute attention on CPU with q, k, v in `dtype` (autocast's), for the
    summary: 'compiled' or 'PyTorch' (no compiler, switched off, or not for this dtype here); None for a
    model without lean layers."""
    layers = [m for m in model.modules() if isinstance(m, FastLayer) and m.compiled]
    if not layers:
        return None
    used = layers[0].native and layers[0].wants_kernel(dtype) and deberta_attention() is not None
    return "compiled" if used else "PyTorch"


class FastEncoder(nn.Module):
    """A BERT-family encoder's embeddings and layers, run by `FastLayer`s."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.embeddings = FastEmbeddings(config)
        self.layers = nn.ModuleList(FastLayer(config) for _ in range(config.num_hidden_layers))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, first_only: bool = False
    ) -> torch.Tensor:
        """Hidden states [rows, width, hidden], or [rows, 1, hidden] with `first_only`."""
        x = self.embeddings(input_ids)
        mask = attention_mask[:, None, None, :].bool()
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, first_only=first_only and i == last)
        return x


class Pooler(nn.Module):
    """BERT's pooler: dense + tanh on the first token."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class RobertaHead(nn.Module):
    """RoBERTa's classification head: dense + tanh + out_proj on the first token."""

    def __init__(self, hidden: int, labels: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, labels)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out_proj(torch.tanh(self.dense(hidden[:, 0])))


class FastSequenceClassifier(nn.Module):
    """Logits of a BERT/RoBERTa sequence-classification model whose head reads the first token."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.encoder = FastEncoder(config)
        if config.model_type == "bert":
            self.pooler: nn.Module | None = Pooler(config.hidden_size)
            self.classifier: nn.Module = nn.Linear(config.hidden_size, config.num_labels)
        else:
            self.pooler = None
            self.classifier = RobertaHead(config.hidden_size, config.num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask, first_only=True)
        return self.classifier(self.pooler(hidden) if self.pooler is not None else hidden)


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


LAYER_PARTS = {
    "attention.output.dense": "out",
    "attention.output.LayerNorm": "norm1",
    "intermediate.dense": "up",
    "output.dense": "down",
    "output.LayerNorm": "norm2",
}
LAYER_KEY = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")


def fast_state(state: dict[str, torch.Tensor], prefix: str, into: str) -> dict[str, torch.Tensor]:
    """Hugging Face's BERT-family keys under `prefix` → `FastEncoder` keys under `into`, Q/K/V fused.

    Keys outside `prefix` (the head) pass unchanged; keys of no known part stay as they were, so a
    strict load reports them.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.endswith(IGNORABLE_SUFFIXES):
            continue
        if not key.startswith(prefix):
            out[key] = value
            continue
        rest = key[len(prefix) :]
        match = LAYER_KEY.fullmatch(rest)
        if match is None:
            out[rest if rest.startswith("pooler.") else into + rest] = value  # pooler.*, embeddings.*
            continue
        layer, part, kind = match.groups()
        if part in ("attention.self.query", "attention.self.key", "attention.self.value"):
            qkv.setdefault((layer, kind), {})[part.rsplit(".", 1)[1]] = value
        elif part in LAYER_PARTS:
            out[f"{into}layers.{layer}.{LAYER_PARTS[part]}.{kind}"] = value
        else:
            out[key] = value
    out.update(fuse_qkv(qkv, ("query", "key", "value"), into, prefix))
    return out


def fuse_qkv(
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]], names: tuple[str, str, str], into: str, prefix: str
) -> dict[str, torch.Tensor]:
    """Each layer's Q, K and V (`names`, in that order) as one tensor; a layer missing one keeps its
    Hugging Face keys, so a strict load names them."""
    out: dict[str, torch.Tensor] = {}
    for (layer, kind), parts in qkv.items():
        if len(parts) == 3:
            out[f"{into}layers.{layer}.qkv.{kind}"] = torch.cat([parts[name] for name in names])
        else:
            stem = f"{prefix}encoder.layer.{layer}.attention.self"
            out.update({f"{stem}.{name}.{kind}": tensor for name, tensor in parts.items()})
    return out


@contextlib.contextmanager
def uninitialised() -> Iterator[None]:
    """Build Linear/Embedding/LayerNorm modules with empty tensors: the checkpoint's replace them next.

    Not the meta device: initialising meta tensors imports torch._dynamo (1.2 s); and not
    transformers' no_init_weights, which imports its modelling code.
    """
    saved = {name: getattr(nn.init, name) for name in INIT_FUNCTIONS}
    try:
        for name in INIT_FUNCTIONS:
            setattr(nn.init, name, _keep)
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def _keep(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


def _assigned(module: nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype) -> nn.Module | None:
    """`module` (uninitialised) holding exactly `state`'s tensors, or None if they differ."""
    if set(state) != set(module.state_dict()):
        return None
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError:  # a shape differs: Hugging Face's loader names it
        return None
    return module.to(dtype).eval()


def _prefix(state: dict[str, torch.Tensor], config: Any) -> str:
    name = "bert" if config.model_type == "bert" else "roberta"
    return f"{name}." if any(key.startswith(f"{name}.") for key in state) else ""


def fast_sequence_classifier(
    config: Any, state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32
) -> FastSequenceClassifier | None:
    """A BERT/RoBERTa/XLM-R sequence classifier's checkpoint on the fast path, or None where it does not fit.

    Built from the config and tensors alone: Hugging Face's modelling code is never imported (~2.5 s
    of every worker's start on 2 cores) and no weight is drawn at random first.
    """
    architectures = getattr(config, "architectures", None) or []
    if not supports_fast_encoder(config):
        return None
    if not all(name.endswith("ForSequenceClassification") for name in architectures):
        return None
    with uninitialised():
        module = FastSequenceClassifier(config)
    return _assigned(module, fast_state(state, _prefix(state, config), "encoder."), dtype)


def fast_encoder(
    config: Any, state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32
) -> FastEncoder | None:
    """A bare BERT/RoBERTa/XLM-R encoder checkpoint (its pooler, if any, unused) on the fast path, or None."""
    if not supports_fast_encoder(config):
        return None
    prefix = _prefix(state, config)
    state = {k: v for k, v in state.items() if not k.startswith(f"{prefix}pooler.")}
    with uninitialised():
        module = FastEncoder(config)
    return _assigned(module, fast_state(state, prefix, ""), dtype)
