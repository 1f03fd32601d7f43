"""Root conftest: fixture modules shared by several test files, loaded as plugins."""

import os

# The suite's numbers are float32 on every machine: `inference.dtype=auto` means bf16 on CPUs with native
# bf16 (AMX, AVX512-BF16; see curator/inference/numerics.py). Tests of that branch set the flags themselves.
os.environ.setdefault("CURATOR_CPU_FEATURES", "none")

pytest_plugins = ["tests.fixtures_llm"]
