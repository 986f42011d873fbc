"""icdcoder: automated ICD coding with small LLMs, with evidence for every code."""

__version__ = "0.1.0"
