"""Secrets travel in the environment only: refuse to write a file (a job script) that holds one's value."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from curator.errors import ConfigError

SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|CREDENTIAL|(^|_)KEY(_|$)")


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
