"""Secrets travel in the environment only: refuse to write a file (a job script) that holds one's value."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from curator.errors import ConfigError

# whole words of a name: HF_TOKEN, AWS_SECRET_ACCESS_KEY, DB_PASSWORD; not TOKENIZERS_PARALLELISM
SECRET_NAME = re.compile(r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|KEY)(_|$)")


# NAME=value in a shell line (export, env, a plain assignment); a value starting with $ copies a variable
ASSIGNMENT = re.compile(r"(?:^|[\s;,\[])([A-Za-z_][A-Za-z0-9_]*)=[\"']?([^\s\"';,\]]+)")


def is_secret(name: str) -> bool:
    """Variables whose values must never be written to a file (paths to token files are not secrets)."""
    return bool(SECRET_NAME.search(name)) and not name.endswith(("_PATH", "_FILE", "_DIR"))


def check_no_secrets(text: str, where: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to write a file that would hold a secret's value: secrets travel in the environment only."""
    environ = os.environ if environ is None else environ
    for name, value in environ.items():
        if is_secret(name) and len(value) >= 8 and value in text:
            raise ConfigError(
                f"The {where} would contain the value of ${name}. Secrets reach workers through the "
                "environment only; remove it from the cluster settings."
            )
    for name, value in ASSIGNMENT.findall(text):  # `export HF_TOKEN=hf_...` written into the settings
        if is_secret(name) and not value.startswith("$"):
            raise ConfigError(
                f"The {where} would set ${name} to a value written in the cluster settings. Secrets "
                "reach workers through the environment only: export it where you start the run instead."
            )


URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")  # https://user:password@host


def mask_secrets(text: str) -> str:
    """A setting's text as it may be shown: values assigned to secret-named variables, and credentials
    in URLs, replaced by ***."""
    text = URL_CREDENTIALS.sub(r"\1***@", text)
    return ASSIGNMENT.sub(_masked_assignment, text)


def _masked_assignment(match: re.Match) -> str:
    name, value = match.groups()
    return match.group(0).replace(value, "***") if is_secret(name) else match.group(0)


def mask_override(override: str) -> str:
    """A Hydra override (`key=value`) as it may be shown: the value hidden when a part of the key looks
    secret (`storage_options.secret`, `hf_token`), else with mask_secrets applied."""
    key, sep, _ = override.partition("=")
    if sep and any(is_secret(word.upper()) for word in re.split(r"[.+~]", key)):
        return f"{key}=***"
    return mask_secrets(override)
