"""Helpers with the same import paths as NeMo Curator's, so its examples run with one import changed."""
