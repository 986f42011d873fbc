"""``codes search`` in Spanish and English: code titles and inclusion terms, plus the Spanish words clinicians wrote.

The ontology's titles are English, so "infarto" finds nothing there. The shipped coder's retriever holds the surface
forms of the CodiEsp training evidence ("infarto agudo de miocardio" -> I21.9, as written in the training notes, with
the number of notes each was annotated in); :func:`search_codes` searches both, accent-, case- and plural-insensitive.

Ranking: the share of the query's words a code's best text holds (a title, an inclusion term or a Spanish form), then
the share of that text's words the query holds (the more exact match), then in how many training notes the form
annotated the code, then tabular order. Stop words ("de", "the") count for neither.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from icdcoder.errors import InputError
from icdcoder.ontology.build import STOPWORDS, tokenize
from icdcoder.ontology.codes import check_system
from icdcoder.ontology.ontology import Ontology, load_ontology

#: the shipped coder's retriever: its ``forms`` (normalized form -> code index -> training note -> count),
#: ``display`` (form -> the text as written) and ``codes`` ([code, system] by index)
FORMS_PATH = Path(__file__).resolve().parent.parent / "models" / "default" / "retriever" / "retriever.json"
SPANISH_STOPWORDS = frozenset(
    {"de", "del", "la", "el", "los", "las", "y", "e", "o", "u", "en", "con", "por", "para", "a", "al", "un", "una"}
)
#: ontology hits rescored per query (its own idf ranking picks them)
ONTOLOGY_CANDIDATES = 200


@dataclass(frozen=True, slots=True)
class CodeHit:
    """One answer of :func:`search_codes`; ``matched`` is the text that matched, ``source`` ``title`` or ``spanish``."""

    code: str
    system: str
    description: str
    score: float
    matched: str
    source: str
    #: training notes in which the Spanish form annotated the code (0 for titles)
    notes: int = 0


def _stem(word: str) -> str:
    """Singular-ish form, so that "infartos" finds "infarto" and "lesiones" "lesion"."""
    if len(word) > 4 and word.endswith("es"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s"):
        return word[:-1]
    return word


def words_of(text: str) -> frozenset[str]:
    """Accent-free, lower-case, stemmed content words."""
    return frozenset(
        _stem(token) for token in tokenize(text) if token not in STOPWORDS and token not in SPANISH_STOPWORDS
    )


@dataclass(frozen=True)
class SpanishForm:
    code: str
    system: str
    text: str
    words: frozenset[str]
    notes: int


@functools.cache
def spanish_forms(path: Path = FORMS_PATH) -> tuple[tuple[SpanishForm, ...], dict[str, list[int]]]:
    """The training evidence forms, and word -> the forms holding it; empty when the coder has no retriever file."""
    if not path.is_file():
        return (), {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        codes, display = data["codes"], data["display"]
        forms = tuple(
            SpanishForm(codes[int(index)][0], codes[int(index)][1], display.get(form, form), words_of(form), len(notes))
            for form, by_code in data["forms"].items()
            for index, notes in by_code.items()
        )
    except (ValueError, KeyError, IndexError, TypeError):
        raise InputError("unreadable training evidence forms (expected the retriever's JSON)", path=path) from None
    postings: dict[str, list[int]] = defaultdict(list)
    for position, form in enumerate(forms):
        for word in form.words:
            postings[word].append(position)
    return forms, dict(postings)


def _coverage(query: frozenset[str], text_words: frozenset[str]) -> tuple[float, float]:
    shared = len(query & text_words)
    return shared / len(query), shared / max(len(text_words), 1)


def _spanish_hits(query: frozenset[str], system: str | None, ontology: Ontology) -> dict[tuple[str, str], CodeHit]:
    forms, postings = spanish_forms()
    best: dict[tuple[str, str], tuple[tuple, CodeHit]] = {}
    for position in {p for word in query for p in postings.get(word, ())}:
        form = forms[position]
        if system is not None and form.system != system:
            continue
        recall, precision = _coverage(query, form.words)
        key = (recall, precision, form.notes)
        if (form.code, form.system) not in best or key > best[(form.code, form.system)][0]:
            description = ontology.describe(form.code, form.system, default="")
            best[(form.code, form.system)] = (
                key,
                CodeHit(form.code, form.system, description, recall, form.text, "spanish", form.notes),
            )
    return {code: hit for code, (_, hit) in best.items()}


def _title_hits(
    words: str, query: frozenset[str], system: str | None, ontology: Ontology
) -> dict[tuple[str, str], CodeHit]:
    hits = {}
    for hit in ontology.search(words, system=system, limit=ONTOLOGY_CANDIDATES):
        info = ontology.get(hit.code, hit.system)
        texts = (hit.description, *(info.inclusion_terms if info else ()))
        text = max(texts, key=lambda t: _coverage(query, words_of(t)))
        recall, _ = _coverage(query, words_of(text))
        if recall > 0:
            hits[(hit.code, hit.system)] = CodeHit(hit.code, hit.system, hit.description, recall, text, "title")
    return hits


def search_codes(
    words: str, system: str | None = None, limit: int = 20, ontology: Ontology | None = None
) -> list[CodeHit]:
    """Codes for ``words`` (Spanish or English), best first: see the module docstring for the ranking."""
    if system is not None:
        check_system(system)
    ontology = ontology or load_ontology()
    query = words_of(words)
    if not query:
        return []
    hits = _title_hits(words, query, system, ontology)
    for key, hit in _spanish_hits(query, system, ontology).items():
        if key not in hits or _rank(hit, query) < _rank(hits[key], query):
            hits[key] = hit
    order = {code: row for row, code in enumerate(hits)}
    return sorted(hits.values(), key=lambda hit: (_rank(hit, query), order[(hit.code, hit.system)]))[: max(limit, 0)]


def _rank(hit: CodeHit, query: frozenset[str]) -> tuple:
    """Sort key, smaller first: more of the query matched, then a more exact text, then more training notes."""
    recall, precision = _coverage(query, words_of(hit.matched))
    return (-round(recall, 9), -round(precision, 9), -hit.notes)
