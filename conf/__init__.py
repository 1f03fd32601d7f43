"""Hydra configs: config.yaml and its groups, installed as the package `curator.conf` (see pyproject.toml)."""
