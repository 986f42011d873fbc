"""Coder names -> predictor classes, imported lazily (torch is only loaded when needed)."""

from __future__ import annotations

import importlib
import logging

from icdcoder.errors import InputError
from icdcoder.predictor import Predictor

#: name -> "module:Class"
PREDICTORS: dict[str, str] = {
    "tfidf": "icdcoder.baselines.tfidf:TfidfPredictor",
    "dictionary": "icdcoder.baselines.dictionary:DictionaryPredictor",
    "laat": "icdcoder.baselines.laat:LaatPredictor",
    "plm": "icdcoder.baselines.plm:PlmPredictor",
    "prompt": "icdcoder.baselines.prompt:PromptPredictor",
    "span": "icdcoder.infer.coder:SpanPredictor",
}

#: old name -> current name; the old name still loads, with a one-line notice
RENAMED: dict[str, str] = {"llm": "span"}

log = logging.getLogger(__name__)


def current_name(name: str) -> str:
    """``name``, or the name it was renamed to (the shipped coder was ``llm`` while its LLM was off)."""
    if name in RENAMED:
        log.warning("system '%s' is now called '%s'", name, RENAMED[name])
        return RENAMED[name]
    return name


def predictor_class(name: str) -> type[Predictor]:
    """The class registered under ``name``; an unknown name is a one-line error."""
    name = current_name(name)
    if name not in PREDICTORS:
        raise InputError(f"unknown system '{name}' (choose from: {', '.join(sorted(PREDICTORS))})")
    module_name, class_name = PREDICTORS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
