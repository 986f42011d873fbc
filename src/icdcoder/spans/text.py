"""Text normalisation shared by the span tools: accent- and case-insensitive word forms."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^0-9a-zñ]+")
_KEEP = {"ñ": "\uE000", "Ñ": "\uE001"}


def strip_accents(text: str) -> str:
    """``"Diagnóstico"`` -> ``"Diagnostico"`` (drops combining marks after NFKD), keeping ``ñ``.

    ``ñ`` is a letter of its own in Spanish: "año" (year) and "ano" (anus) must not meet.
    """
    for letter, placeholder in _KEEP.items():
        text = text.replace(letter, placeholder)
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    for letter, placeholder in _KEEP.items():
        stripped = stripped.replace(placeholder, letter)
    return stripped


def normalize_text(text: str) -> str:
    """Lower case, no accents but ``ñ``, punctuation as spaces, single spaces: the key for surface forms."""
    return _NON_WORD.sub(" ", strip_accents(text).lower()).strip()


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
