"""Root conftest: fixture modules shared by several test files, loaded as plugins."""

pytest_plugins = ["tests.fixtures_llm"]
