"""Descriptions and clinical sentences as bags of content words, so that "primary ovarian carcinoma" can meet
"Malignant neoplasm of unspecified ovary": qualifiers dropped, site adjectives mapped to the nouns ICD titles use,
"carcinoma"/"cancer"/"sarcoma" read as "malignant neoplasm". English only (ICD titles and CodiEsp translations)."""

from __future__ import annotations

import functools
import re

#: words that qualify a description without naming the concept
QUALIFIERS = frozenset(
    "of the and or with in to a an by for on at as from other unspecified specified nos site sites part parts type due not "
    "elsewhere classified".split()
)
#: site adjectives and synonyms, mapped to the noun ICD titles use
NOUNS = {
    "ovarian": "ovary", "renal": "kidney", "hepatic": "liver", "pulmonary": "lung", "tibial": "tibia", "femoral": "femur",
    "cardiac": "heart", "gastric": "stomach", "vertebral": "vertebra", "urethral": "urethra", "vesical": "bladder",
    "splenic": "spleen", "pancreatic": "pancreas", "cutaneous": "skin", "ocular": "eye", "orbital": "orbit",
    "testicular": "testis", "testicle": "testis", "prostatic": "prostate", "uterine": "uterus", "mammary": "breast",
    "intestinal": "intestine", "colonic": "colon", "esophageal": "esophagus", "duodenal": "duodenum", "biliary": "bile",
    "ureteral": "ureter", "nasal": "nose", "oral": "mouth", "dental": "tooth", "teeth": "tooth", "osseous": "bone",
    "cerebral": "brain", "encephalic": "brain", "arterial": "artery", "venous": "vein", "lymphatic": "lymph",
    "ganglion": "lymph", "tumour": "neoplasm", "tumor": "neoplasm", "neoplasia": "neoplasm", "metastasis": "secondary",
    "metastatic": "secondary", "haemorrhage": "hemorrhage", "bleeding": "hemorrhage", "lithiasis": "calculus",
    "stone": "calculus", "calculi": "calculus", "abdominal": "abdomen", "pelvic": "pelvis", "thoracic": "chest",
    "thorax": "chest", "scrotal": "scrotum", "mandibular": "mandible", "axillary": "axilla", "testes": "testis",
}
_MALIGNANT = ("malignant", "neoplasm")
#: words that stand for two title words
EXPANSIONS = {"carcinoma": _MALIGNANT, "cancer": _MALIGNANT, "adenocarcinoma": _MALIGNANT, "sarcoma": _MALIGNANT, "liposarcoma": _MALIGNANT}
_WORD = re.compile(r"\w+")
#: where a sentence ends: after closing punctuation and a space, or at a line break
_SENTENCE_END = re.compile(r"(?<=[.;:!?])\s+|\n+")


def fold_word(word: str) -> str:
    """``word`` in lower case without accents, an English plural folded: "arteries" -> "artery", "stones" -> "stone";
    singulars in -s ("testis", "calculus", "pancreas", "mass") stay."""
    from icdcoder.baselines.dictionary import normalize_word

    norm = normalize_word(word)
    if len(norm) > 4 and norm.endswith("ies"):
        return norm[:-3] + "y"
    if norm.endswith("sses"):
        return norm[:-2]
    if len(norm) > 3 and norm.endswith("s") and not norm.endswith(("ss", "us", "is", "as")):
        return norm[:-1]
    return norm


@functools.cache
def _folded_maps() -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """``NOUNS`` and ``EXPANSIONS`` with keys and values folded as the words of a text are, so that each key meets
    the word it stands for."""
    nouns = {fold_word(key): fold_word(value) for key, value in NOUNS.items()}
    expansions = {fold_word(key): tuple(fold_word(word) for word in words) for key, words in EXPANSIONS.items()}
    return nouns, expansions


def content_words(text: str) -> frozenset[str]:
    """The concept words of ``text``: lower case, no accents, plurals folded, nouns for site adjectives, no qualifiers."""
    nouns, expansions = _folded_maps()
    words = []
    for word in _WORD.findall(text):
        norm = fold_word(word)
        norm = nouns.get(norm, norm)
        words.extend(expansions.get(norm, (norm,)))
    return frozenset(word for word in words if word not in QUALIFIERS and not word.isdigit())


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of ``text``, without surrounding blanks."""
    spans, start = [], 0
    for boundary in (*_SENTENCE_END.finditer(text), None):
        end = boundary.start() if boundary else len(text)
        piece = text[start:end]
        if piece.strip():
            lead = len(piece) - len(piece.lstrip())
            spans.append((start + lead, start + len(piece.rstrip())))
        start = boundary.end() if boundary else end
    return spans
