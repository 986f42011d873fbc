"""Short forms of code titles for prompts and retrieval (the normalisers are in :mod:`icdcoder.text`)."""

from __future__ import annotations

import re

# saved retrievers (``retriever/tfidf.joblib``, the shipped coder's among them) pickle their preprocessor by this name
from icdcoder.text import normalize_text  # noqa: F401


def first_words(text: str, limit: int) -> str:
    """The first ``limit`` whitespace-separated words of ``text``, joined by single spaces."""
    return " ".join(text.split()[:limit])


_PARENTHESES = re.compile(r"\s*[(\[][^)\]]*[)\]]")
_FILLER = re.compile(r"\b(?:unspecified|NOS)\b,?\s*", re.IGNORECASE)


def short_title(title: str, max_words: int) -> str:
    """An ICD title in at most ``max_words`` words, losing the least information.

    Long titles lose parenthesised asides, then the words "unspecified"/"NOS"
    (the shorter sibling titles still tell them apart), and only then their tail:
    "Malignant neoplasm of unspecified part of unspecified bronchus or lung" ->
    "Malignant neoplasm of part of bronchus or lung".
    """
    for shorten in (lambda text: text, lambda text: _PARENTHESES.sub("", text), lambda text: _FILLER.sub("", text)):
        title = " ".join(shorten(title).split()).strip(" ,")
        if len(title.split()) <= max_words:
            return title
    return first_words(title, max_words)
