"""Coding notes with the span coder.

Layers, each importing only those below it: ``signals/`` (one module per signal, behind one protocol, and their
registry) -> ``settings`` (weights derived from the registry) -> ``fusion`` (best value per signal, weighted mean,
thresholds) and ``store`` (the coder folder's files) -> ``tuning`` -> ``coder`` (orchestration) -> ``records``,
``profiles``, ``cli`` (commands and output formats).
"""
