"""Causal LM backbones: hub ids, local folders, and GGUF files shipped in PyPI packages."""
