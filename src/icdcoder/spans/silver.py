"""Evidence located for gold codes that come without offsets (MIMIC-IV's), so that their notes can teach the span coder.

The answer format quotes the evidence of every code, so a code without offsets makes no training example. Here each
such code gets the note words that best name it: the code's terms (its title and inclusion terms, and those of its
ancestors down to the ICD-10-CM category or the 4-character ICD-10-PCS prefix) are read as content words
(:func:`icdcoder.spans.concepts.content_words`, numbers kept) and scored against each sentence of the note by the share
of a term's words the sentence holds; a sentence naming an operation by its clinical word ("biopsy") holds the PCS
operation ("Excision"). The best sentence, when it holds at least ``min_share`` of a term and two of its words (its one
word, for a one-word term), gives the evidence: from the first to the last word it matched. English notes only: the
terms are the ontology's English ones.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from icdcoder.data.schema import Document, Evidence
from icdcoder.spans.concepts import alternatives, concepts_of, content_words, fold_word
from icdcoder.spans.procedures import OPERATION_WORDS
from icdcoder.spans.segment import sentence_spans

_WORD = re.compile(r"\w+")
#: the shortest ancestor whose terms still name the code: the ICD-10-CM category, the PCS prefix down to the body part
NAMED_LEVEL = {"icd10cm": 3, "icd10pcs": 4}


@dataclass(frozen=True)
class SilverReport:
    """How many gold codes without offsets got evidence, and how many found none (they teach nothing)."""

    located: int
    missing: int


@functools.cache
def _operation_words() -> dict[str, frozenset[str]]:
    """Clinical word (folded) -> the content words of the PCS operation it names ("biopsy" -> {"excision"})."""
    words: dict[str, set[str]] = {}
    for operation, clues in OPERATION_WORDS.items():
        for clue in clues:
            words.setdefault(fold_word(clue), set()).update(content_words(operation))
    return {clue: frozenset(named) for clue, named in words.items()}


def _word_concepts(word: str) -> frozenset[str]:
    """What one word of a note stands for: its concept words, and the operations it names."""
    return frozenset(concepts_of(word)) | _operation_words().get(fold_word(word), frozenset())


def code_terms(ontology, code: str, system: str) -> list[frozenset[str]]:
    """The content-word sets a note could name ``code`` by, most specific first, without repeats."""
    if ontology.get(code, system) is None:
        return []
    level = NAMED_LEVEL.get(system, 3)
    names = [
        code,
        *(ancestor for ancestor in ontology.ancestors(code, system) if "-" not in ancestor and len(ancestor) >= level),
    ]
    terms: list[frozenset[str]] = []
    for name in names:
        info = ontology.get(name, system)
        for text in (info.description, *info.inclusion_terms):
            for variant in alternatives(text):
                words = content_words(variant, numbers=True)
                if words and words not in terms:
                    terms.append(words)
    return terms


def _held(term: frozenset[str], sentence_words: frozenset[str], min_share: float) -> int:
    """How many of ``term``'s words the sentence holds, or 0 when that is too few to name it."""
    held = len(term & sentence_words)
    enough = held >= min(2, len(term)) and held >= math.ceil(min_share * len(term))
    return held if enough else 0


def locate_evidence(text: str, terms: Sequence[frozenset[str]], min_share: float = 0.5) -> tuple[int, int] | None:
    """The span of ``text`` that best names one of ``terms``: within the sentence holding the largest share of a term
    (ties: more words, then the earlier sentence), from the first to the last word that matched; None when no sentence
    holds enough of any term."""
    best: tuple[float, int, int] | None = None
    span = None
    for start, end in sentence_spans(text):
        tokens = [
            (match.start() + start, match.end() + start, _word_concepts(match.group()))
            for match in _WORD.finditer(text[start:end])
        ]
        words = frozenset().union(*(concepts for _, _, concepts in tokens)) if tokens else frozenset()
        for term in terms:
            held = _held(term, words, min_share)
            if not held:
                continue
            rank = (held / len(term), held, -start)
            if best is None or rank > best:
                matched = [(first, last) for first, last, concepts in tokens if concepts & term]
                best, span = rank, (matched[0][0], matched[-1][1])
    return span


def with_silver_evidence(
    documents: Sequence[Document], ontology, min_share: float = 0.5
) -> tuple[list[Document], SilverReport]:
    """``documents`` with evidence located for every gold code that has none (codes with offsets are kept as they are)."""
    located = missing = 0
    result = []
    for document in documents:
        codes = []
        for gold in document.codes:
            if gold.evidence:
                codes.append(gold)
                continue
            span = locate_evidence(document.text, code_terms(ontology, gold.code, gold.system), min_share)
            located, missing = located + (span is not None), missing + (span is None)
            codes.append(gold if span is None else gold.model_copy(update={"evidence": (Evidence(pieces=(span,)),)}))
        result.append(document.model_copy(update={"codes": tuple(codes)}))
    return result, SilverReport(located=located, missing=missing)
