"""Text normalisation, the one place for it: accent- and case-insensitive word forms.

Two keys are in use and differ on purpose only for ``ñ``: :func:`normalize_text` (surface forms of retrieval, examples
and expansion) keeps it, "año" (year) and "ano" (anus) stay apart; :func:`normalize_word` (the lexicons' and concepts'
words) folds it, as the shipped lexicons were built (folding it there would change which forms match). Sentence
alignment folds accents under canonical decomposition only (``form="NFD"``: "º" stays), as its anchors were measured.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Literal

_NON_WORD = re.compile(r"[^0-9a-zñ]+")
_KEEP = {"ñ": "\ue000", "Ñ": "\ue001"}


def strip_accents(text: str, keep_enye: bool = True, form: Literal["NFKD", "NFD"] = "NFKD") -> str:
    """``"Diagnóstico"`` -> ``"Diagnostico"`` (drops combining marks after decomposing), keeping ``ñ`` unless told not to.

    ``ñ`` is a letter of its own in Spanish: "año" (year) and "ano" (anus) must not meet.
    """
    kept = _KEEP.items() if keep_enye else ()
    for letter, placeholder in kept:
        text = text.replace(letter, placeholder)
    decomposed = unicodedata.normalize(form, text)
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    for letter, placeholder in kept:
        stripped = stripped.replace(placeholder, letter)
    return stripped


@functools.lru_cache(maxsize=1 << 18)
def normalize_word(word: str, fold_plurals: bool = False) -> str:
    """Lower case without diacritics, ``ñ`` included: ``"Tórax"`` -> ``"torax"``; ``fold_plurals``: ``"edemas"`` ->
    ``"edema"``.

    Memoized: the English lexicon's ontology forms alone normalize ~4.6 million words, ~16,000 distinct ones."""
    norm = strip_accents(word.lower(), keep_enye=False)
    if fold_plurals and len(norm) > 4 and norm.endswith("es"):
        return norm[:-2]
    if fold_plurals and len(norm) > 3 and norm.endswith("s"):
        return norm[:-1]
    return norm


def normalize_text(text: str) -> str:
    """Lower case, no accents but ``ñ``, punctuation as spaces, single spaces: the key for surface forms."""
    return _NON_WORD.sub(" ", strip_accents(text).lower()).strip()
