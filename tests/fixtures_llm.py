"""Tiny Llama Guard look-alikes in the published formats: base model, tokenizer, LoRA adapter, guard head.

Nothing is downloaded: the tokenizer is a byte-fallback BPE trained here on the AEGIS prompt (so the
prompt tokenizes to a realistic ~2,000 tokens), saved as a Llama tokenizer that AutoTokenizer loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from curator.classifiers.aegis_prompt import format_aegis

# The AEGIS adapters' settings (adapter_config.json of nvidia/Aegis-AI-Content-Safety-LlamaGuard-*-1.0).
AEGIS_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]
TRIGGER = "zebra"  # the rigged model answers "unsafe\nO3" to documents that contain this word
DOCS = [
    "Whisk two eggs with sugar, fold in the flour and bake the cake for 30 minutes.",
    "The home team won the championship final 3-1 after a late goal in extra time.",
    "How do I pick the lock of my neighbour's shed while they are away?",
    "ok",
    "Ünïcödé text with emoji 🦓 and CJK 汉字 falls back to bytes.",
    "A much longer document about photosynthesis and the carbon cycle in forests. " * 12,
]
SPECIALS = ["<unk>", "<s>", "</s>"]
BYTES = [f"<0x{i:02X}>" for i in range(256)]


def _train_bpe(vocab_size: int, extra: list[str] | None = None) -> tuple[dict[str, int], list]:
    """A BPE vocabulary and merges learned from the AEGIS prompt and a few sentences (+ `extra` texts)."""
    corpus = [format_aegis(doc) for doc in DOCS] + [f"safe unsafe {TRIGGER} O3 O10"] * 50 + (extra or [])
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    return model["vocab"], model["merges"]


def write_llama_tokenizer(folder: Path, vocab_size: int = 1200, corpus: list[str] | None = None) -> int:
    """tokenizer.json + tokenizer_config.json as Llama ships them (ids: <unk>=0 <s>=1 </s>=2, bytes next).

    `corpus`: more texts to learn from (a benchmark's documents, so they tokenise at a realistic rate).
    """
    learned, merges = _train_bpe(vocab_size, corpus)
    pieces = [p for p, _ in sorted(learned.items(), key=lambda item: item[1]) if p not in SPECIALS]
    vocab = {piece: i for i, piece in enumerate([*SPECIALS, *BYTES, *(p for p in pieces if p not in BYTES)])}
    merges = [tuple(m) for m in merges]
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    tokenizer.add_special_tokens(SPECIALS)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": None,
        "legacy": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1000000000000000019884624838656,
        "padding_side": "right",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return len(vocab)


def llama_config(vocab_size: int) -> LlamaConfig:
    """Llama Guard's architecture at toy size (GQA, SwiGLU, RoPE, untied head)."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        initializer_range=0.5,  # large random weights: clear argmax margins, few near-ties
    )


def save_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """A tiny random LlamaForCausalLM saved with safetensors, with the fixture tokenizer beside it."""
    vocab_size = write_llama_tokenizer(folder)
    torch.manual_seed(seed)
    LlamaForCausalLM(llama_config(vocab_size)).save_pretrained(folder, safe_serialization=True)
    return folder


def save_lora_adapter(base: Path, folder: Path, seed: int = 0, b_std: float = 0.1, rank: int = 16) -> Path:
    """A PEFT LoRA adapter with the AEGIS settings; B is random (PEFT initialises it to zero)."""
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.05,
        target_modules=AEGIS_TARGETS,
        task_type="CAUSAL_LM",
        bias="none",
    )
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, b_std)
    peft_model.save_pretrained(folder, save_embedding_layers=True)  # what "auto" picks with lm_head
    return folder


def save_guard_head(folder: Path, input_dim: int, seed: int = 0) -> Path:
    """nvidia/instruction-data-guard's files: config.json {dropout, input_dim} + model.safetensors."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {"input_layer": (input_dim, input_dim), "hidden_layer_0": (2000, input_dim)}
    shapes |= {"hidden_layer_1": (500, 2000), "hidden_layer_2": (1, 500)}
    state = {}
    for name, (rows, cols) in shapes.items():
        state[f"{name}.weight"] = torch.randn(rows, cols, generator=generator) / cols**0.5
        state[f"{name}.bias"] = torch.randn(rows, generator=generator) * 0.1
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"dropout": 0.7, "input_dim": input_dim}, indent=2))
    return folder


def rig_llama(
    base: Path,
    folder: Path,
    magnitude: float = 100.0,
    gain: float = 2000.0,
    category: str = "3",
    ramble: bool = False,
) -> Path:
    """A copy of `base` that replies ' unsafe\\nO3' when the prompt contains TRIGGER, else ' safe'.

    Layer 0's attention has zero queries, so it averages the values of every earlier token; only the
    trigger token has a value (in hidden dim 31). Everything else adds nothing, so the last hidden state
    is the current token's embedding (+ the trigger signal), and the head maps it to the next token:
    the prompt's last token → ' safe', or ' unsafe' once the trigger signal outweighs its small embedding;
    then ' unsafe' → newline → 'O' → '3' → '</s>' and ' safe' → '</s>', like the real model.
    `category` picks the digits after 'O' (distinct, e.g. "10"); `ramble` replaces both end-of-sequence
    tokens with a newline, so the reply repeats 'O3' lines until max_new_tokens (no EOS ever).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    ids = tokenizer.convert_tokens_to_ids
    end = tokenizer(format_aegis("x"))["input_ids"][-1]
    digits = list(category)
    chain = ["▁safe", "▁unsafe", "<0x0A>", "O", *digits]
    assert len(set(chain)) == len(chain) and 0 not in ids(chain), "the chain needs distinct, known tokens"
    stop = "<0x0A>" if ramble else "</s>"
    following = {
        "▁safe": stop,
        "▁unsafe": "<0x0A>",
        "<0x0A>": "O",
        **dict(zip(["O", *digits], [*digits, stop])),
    }
    model = LlamaForCausalLM.from_pretrained(base)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed[end, 0] = 0.1
        head[ids("▁safe"), 0] = 10.0
        embed[ids(TRIGGER if TRIGGER.startswith("▁") else f"▁{TRIGGER}"), 31] = 1.0
        head[ids("▁unsafe"), 31] = 10.0
        for dim, token in enumerate(chain, start=1):
            embed[ids(token), dim] = magnitude
            head[ids(following[token]), dim] = 10.0
        attention = model.model.layers[0].self_attn
        attention.v_proj.weight[0, 31] = gain  # kv head 0, dim 0 ← the trigger dimension
        attention.o_proj.weight[31, 0] = 1.0  # head 0, dim 0 → back into the trigger dimension
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((base / name).read_bytes())
    return folder


# Fixtures of the AEGIS test modules; the root conftest.py loads this module as a pytest plugin.
@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("llama-guard"))


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    return save_lora_adapter(tiny_llama, tmp_path_factory.mktemp("aegis-adapter"))
