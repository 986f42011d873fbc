"""Coder names -> predictor classes, imported lazily (torch is only loaded when needed)."""

from __future__ import annotations

import importlib

from icdcoder.errors import InputError
from icdcoder.predictor import Predictor

#: name -> "module:Class"
PREDICTORS: dict[str, str] = {
    "tfidf": "icdcoder.baselines.tfidf:TfidfPredictor",
    "dictionary": "icdcoder.baselines.dictionary:DictionaryPredictor",
    "laat": "icdcoder.baselines.laat:LaatPredictor",
    "plm": "icdcoder.baselines.plm:PlmPredictor",
    "prompt": "icdcoder.baselines.prompt:PromptPredictor",
    "llm": "icdcoder.infer.coder:SpanLLMPredictor",
}


def predictor_class(name: str) -> type[Predictor]:
    """The class registered under ``name``; an unknown name is a one-line error."""
    if name not in PREDICTORS:
        raise InputError(f"unknown system '{name}' (choose from: {', '.join(sorted(PREDICTORS))})")
    module_name, class_name = PREDICTORS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
