"""Loaders, one per checkpoint family: offline-safe, strict, safetensors only."""
