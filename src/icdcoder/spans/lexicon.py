"""Surface-form lexicons: known wordings of codes found in a note, each with how reliable it was on training notes.

The core of the coder's lexicon signals (:mod:`icdcoder.infer.signals`) and of the ``dictionary`` baseline
(:mod:`icdcoder.baselines.dictionary`), which wraps it with thresholds.

Surface forms come from the training evidence (CodiEsp-X references: the exact words annotators tied to a code) and,
for English notes, from the ontology's descriptions and inclusion terms. Matching is case- and accent-insensitive on
whole words: both the note and the forms are cut into ``\\w+`` tokens which are lower-cased and stripped of diacritics
(:func:`icdcoder.text.normalize_word`, plural ``s``/``es`` folded). By default every known form is matched,
nested ones included; leftmost-longest non-overlapping matching is the alternative (``matching: longest``).

A form is not proof of a code: ``"dolor"`` is written in many notes that are not coded with ``R52``. So the index also
counts, on the training notes, in how many notes each form is matched (``matched_docs``) and in how many of those the
note is coded with each of its codes (``hits``). The *reliability* of ``form -> code`` is the smoothed ratio
``(hits + prior * weight) / (matched_docs + weight)``; a note's score for a code is the noisy-or of the reliabilities
of the distinct forms that point to it::

    index = SurfaceFormIndex.build(train_docs, ontology=None)
    for hit in index.code_hits(note_text):                      # best first
        hit.code, hit.system, hit.score, hit.evidence            # evidence: list[Evidence] into note_text
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from icdcoder import text as normaliser
from icdcoder.config import StrictModel
from icdcoder.data.schema import Document, Evidence
from icdcoder.errors import InputError
from icdcoder.ontology import labels
from icdcoder.ontology.labels import code_key, split_key
from icdcoder.ontology.ontology import derived_table
from icdcoder.text import normalize_word

#: fields of the ``dictionary`` baseline's settings that index files written inside it carry; an index ignores them
BASELINE_FIELDS = frozenset({"ontology_terms", "threshold"})

_TOKEN = re.compile(r"\w+")
#: English qualifiers dropped from ontology descriptions to get the words a note would use
_ONTOLOGY_NOISE = re.compile(r",?\s*\b(unspecified|not elsewhere classified|NEC|NOS)\b", re.IGNORECASE)
_PARENTHESES = re.compile(r"\s*[\(\[][^\)\]]*[\)\]]")
_WITHOUT_CLAUSE = re.compile(r"\s+without\b.*$", re.IGNORECASE)
#: what a term must hold (lower-cased) for ``_ONTOLOGY_NOISE`` to find anything in it
_NOISE_WORDS = ("unspecified", "not elsewhere classified", "nec", "nos")


class LexiconConfig(StrictModel):
    """Settings of a surface-form index (see the module docstring for the scoring)."""

    use_training_evidence: bool = True
    ontology_systems: list[str] = ["icd10cm"]
    #: also shortened ontology descriptions (see ``description_variants``), each kept for its most general code
    ontology_variants: bool = True
    #: longest form kept, in tokens (English CodiEsp evidence is whole sentences: useless as a form)
    max_form_tokens: int = 10
    #: shortest form kept, in characters of its normalized words
    min_form_chars: int = 3
    #: for sentence-level evidence (English CodiEsp): also every phrase of up to this many words
    #: inside an evidence, kept for a code only if it matched in >= ``phrase_min_hits`` of its
    #: notes with a reliability >= ``phrase_min_reliability`` (most phrases are not about the code)
    evidence_phrases: int = Field(0, ge=0)
    phrase_min_hits: int = Field(2, ge=1)
    phrase_min_reliability: float = Field(0.7, ge=0.0, le=1.0)
    #: smoothing of the reliability ratio towards ``prior``
    prior: float = 0.5
    prior_weight: float = 1.0
    #: drop ``form -> code`` pairs less reliable than this (keeps weak forms from adding up)
    min_reliability: float = 0.05
    #: "longest": leftmost-longest, non-overlapping matches; "all": every known form at every word,
    #: nested ones included ("dolor" inside "dolor abdominal"), each with its own learned reliability
    matching: Literal["longest", "all"] = "all"
    #: match singular and plural alike (a trailing ``s``/``es`` is dropped from longer words)
    fold_plurals: bool = True


def smoothed_reliability(right: int, matched: int, prior: float = 0.5, weight: float = 2.0) -> float:
    """How often a match was right, smoothed towards ``prior`` as if ``weight`` more matches had been seen:
    ``(right + prior * weight) / (matched + weight)``. With the defaults, (right + 1) / (matched + 2): a match never
    seen scores 0.5, one never wrong tends to 1, one often wrong to 0."""
    return (right + prior * weight) / (matched + weight)


@dataclass(frozen=True)
class Token:
    start: int
    end: int
    norm: str


def tokenize(text: str, fold_plurals: bool = False) -> list[Token]:
    """Whole-word tokens of ``text`` with their character offsets and normalized form."""
    return [Token(m.start(), m.end(), normalize_word(m.group(), fold_plurals)) for m in _TOKEN.finditer(text)]


def form_of(text: str, fold_plurals: bool = False) -> tuple[str, ...]:
    """The normalized word tuple a piece of text matches as."""
    return tuple(normalize_word(word, fold_plurals) for word in _TOKEN.findall(text))


@dataclass(frozen=True)
class FormMatch:
    """One occurrence of a known surface form in a note: ``text[start:end]`` reads as the form."""

    form: tuple[str, ...]
    start: int
    end: int


@dataclass
class CodeHit:
    """A code the index proposes for a note: score in [0, 1] and where the note says it."""

    code: str
    system: str
    score: float
    evidence: list[Evidence] = field(default_factory=list)
    forms: list[str] = field(default_factory=list)


@dataclass
class FormEntry:
    """What the index knows about one surface form."""

    #: code key -> training notes where the form matched and the note had that code
    hits: dict[str, int] = field(default_factory=dict)
    #: training notes where the form matched
    matched_docs: int = 0


class SurfaceFormIndex:
    """Surface forms -> codes with reliabilities learned on training notes. Reusable outside this coder."""

    def __init__(self, config: LexiconConfig | None = None, entries: dict[tuple[str, ...], FormEntry] | None = None):
        self.config = config or LexiconConfig()
        self.entries: dict[tuple[str, ...], FormEntry] = entries or {}
        self._refresh_lengths()

    # ----------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        documents: Sequence[Document],
        ontology: Any | None = None,
        config: LexiconConfig | None = None,
    ) -> SurfaceFormIndex:
        """Collect forms from ``documents`` (and ``ontology`` terms if given), then count reliabilities on them."""
        index = cls(config)
        phrases: set[tuple[tuple[str, ...], str]] = set()
        if index.config.use_training_evidence:
            index._add_forms(_evidence_forms(documents, index.config.fold_plurals))
            if index.config.evidence_phrases:
                phrases = set(_evidence_phrases(documents, index.config.fold_plurals, index.config.evidence_phrases))
                phrases -= {(form, key) for form, entry in index.entries.items() for key in entry.hits}
                index._add_forms(phrases)
        if ontology is not None:
            config = index.config
            index._add_forms(
                _ontology_forms(ontology, tuple(config.ontology_systems), config.fold_plurals, config.ontology_variants)
            )
        index._count_on(documents)
        index._prune(phrases)
        return index

    def _add_forms(self, pairs: Iterable[tuple[tuple[str, ...], str]]) -> None:
        for form, key in pairs:
            if not form or len(form) > self.config.max_form_tokens or len("".join(form)) < self.config.min_form_chars:
                continue
            self.entries.setdefault(form, FormEntry()).hits.setdefault(key, 0)
        self._refresh_lengths()

    def _count_on(self, documents: Sequence[Document]) -> None:
        """Count, per form, the notes it matches in and the notes where each of its codes is gold."""
        for doc in documents:
            gold = {code_key(g.code, g.system) for g in doc.codes}
            for form in {match.form for match in self.scan(doc.text)}:
                entry = self.entries[form]
                entry.matched_docs += 1
                for key in entry.hits.keys() & gold:
                    entry.hits[key] += 1

    def _prune(self, phrases: AbstractSet[tuple[tuple[str, ...], str]] = frozenset()) -> None:
        """Drop unreliable ``form -> code`` pairs, rare phrase pairs, and forms left without codes."""
        config = self.config
        for form in list(self.entries):
            entry = self.entries[form]
            entry.hits = {
                key: n
                for key, n in entry.hits.items()
                if (form, key) not in phrases
                and self.reliability(entry, key) >= config.min_reliability
                or n >= config.phrase_min_hits
                and self.reliability(entry, key) >= config.phrase_min_reliability
            }
            if not entry.hits:
                del self.entries[form]
        self._refresh_lengths()

    def _refresh_lengths(self) -> None:
        self._lengths = sorted({len(form) for form in self.entries}, reverse=True)

    # ----------------------------------------------------------------- lookup
    def reliability(self, entry: FormEntry, key: str) -> float:
        """Smoothed share of training notes matching the form that carry the code."""
        return smoothed_reliability(
            entry.hits.get(key, 0), entry.matched_docs, self.config.prior, self.config.prior_weight
        )

    def scan(self, text: str) -> list[FormMatch]:
        """Matches of known forms in ``text`` (see ``LexiconConfig.matching``), in text order."""
        tokens = tokenize(text, self.config.fold_plurals)
        norms = [token.norm for token in tokens]
        matches: list[FormMatch] = []
        position = 0
        while position < len(tokens):
            lengths = self._form_lengths_at(norms, position)
            if self.config.matching == "longest":
                lengths = lengths[:1]
            for length in lengths:
                form = tuple(norms[position : position + length])
                matches.append(FormMatch(form, tokens[position].start, tokens[position + length - 1].end))
            position += lengths[0] if lengths and self.config.matching == "longest" else 1
        return matches

    def _form_lengths_at(self, norms: list[str], position: int) -> list[int]:
        """Lengths (longest first) of the known forms starting at word ``position``."""
        return [
            length
            for length in self._lengths
            if position + length <= len(norms) and tuple(norms[position : position + length]) in self.entries
        ]

    def code_hits(self, text: str, trained: bool | None = None) -> list[CodeHit]:
        """Codes the note's matches point to, best first, each with every occurrence as evidence.

        ``trained=True`` reads only ``form -> code`` pairs seen together in some training note,
        ``False`` only the others (ontology terms no training note confirmed: the one way to
        codes the training notes never carry).
        """
        occurrences: dict[tuple[str, ...], list[FormMatch]] = defaultdict(list)
        for match in self.scan(text):
            occurrences[match.form].append(match)
        miss: dict[str, float] = defaultdict(lambda: 1.0)
        evidence: dict[str, list[Evidence]] = defaultdict(list)
        forms: dict[str, list[str]] = defaultdict(list)
        for form, found in occurrences.items():
            entry = self.entries[form]
            for key, count in entry.hits.items():
                if trained is not None and (count > 0) != trained:
                    continue
                miss[key] *= 1.0 - self.reliability(entry, key)
                evidence[key].extend(Evidence(pieces=((m.start, m.end),)) for m in found)
                forms[key].append(" ".join(form))
        hits = [
            CodeHit(*split_key(key), score=round(1.0 - miss[key], 6), evidence=evidence[key], forms=forms[key])
            for key in miss
        ]
        return sorted(hits, key=lambda hit: (-hit.score, hit.system, hit.code))

    # ----------------------------------------------------------------- persistence
    def to_json(self) -> dict[str, Any]:
        forms = [
            [" ".join(form), entry.matched_docs, dict(sorted(entry.hits.items()))]
            for form, entry in sorted(self.entries.items())
        ]  # sorted throughout: the same training notes give the same file
        return {"config": self.config.model_dump(mode="json", include=set(LexiconConfig.model_fields)), "forms": forms}

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path | None = None) -> SurfaceFormIndex:
        try:
            config = LexiconConfig.model_validate({k: v for k, v in data["config"].items() if k not in BASELINE_FIELDS})
            entries = {tuple(form.split(" ")): FormEntry(dict(hits), int(n)) for form, n, hits in data["forms"]}
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"not a surface-form index ({type(err).__name__}: {err})", path=path) from None
        return cls(config, entries)

    def __len__(self) -> int:
        return len(self.entries)


def _evidence_forms(documents: Iterable[Document], fold_plurals: bool) -> Iterable[tuple[tuple[str, ...], str]]:
    """``(form, code key)`` from every gold evidence of the training notes."""
    for doc in documents:
        for gold in doc.codes:
            for evidence in gold.evidence:
                yield form_of(evidence.text_in(doc.text), fold_plurals), code_key(gold.code, gold.system)


def _evidence_phrases(
    documents: Iterable[Document], fold_plurals: bool, longest: int
) -> Iterable[tuple[tuple[str, ...], str]]:
    """``(phrase, code key)`` for every run of 1..``longest`` words inside each gold evidence."""
    for doc in documents:
        for gold in doc.codes:
            key = code_key(gold.code, gold.system)
            for evidence in gold.evidence:
                words = form_of(evidence.text_in(doc.text), fold_plurals)
                for size in range(1, longest + 1):
                    for start in range(len(words) - size + 1):
                        yield words[start : start + size], key


def _bare(term: str) -> str:
    """An ontology term without qualifiers notes do not write (unspecified, NOS, parentheses).

    Each pattern runs only on terms holding its words or brackets (most hold none): a lexicon reads ~300,000 terms."""
    lowered = term.lower()
    if any(word in lowered for word in _NOISE_WORDS):
        term = _ONTOLOGY_NOISE.sub("", term)
    if "(" in term or "[" in term:
        term = _PARENTHESES.sub("", term)
    return term.strip(" ,")


def description_variants(description: str) -> set[str]:
    """Shorter wordings of a description, as a note would write it.

    ``"Diverticulosis of large intestine without perforation or abscess"`` ->
    ``"Diverticulosis of large intestine"``; ``"Undescended testicle, unspecified, bilateral"``
    -> ``"Undescended testicle"`` (the text before the first comma).
    """
    bare = _bare(description)
    without = _WITHOUT_CLAUSE.sub("", bare).strip(" ,") if "without" in bare.lower() else bare
    variants = {bare.split(",")[0].strip(), without}
    return {variant for variant in variants if variant and variant != bare}


def _ontology_forms(
    ontology: Any, systems: tuple[str, ...], fold_plurals: bool, variants: bool
) -> tuple[tuple[tuple[str, ...], str], ...]:
    """:func:`_ontology_form_pairs`, computed once per ontology and options (:func:`derived_table`) and kept on disk:
    ~5 s of every process that fits a lexicon on the full ontology."""
    return derived_table(
        ontology,
        ("lexicon forms", systems, fold_plurals, variants),
        lambda: tuple(_ontology_form_pairs(ontology, systems, fold_plurals, variants)),
        systems,
        (__file__, normaliser.__file__, labels.__file__),
    )


def _ontology_form_pairs(
    ontology: Any, systems: Sequence[str], fold_plurals: bool, variants: bool
) -> Iterable[tuple[tuple[str, ...], str]]:
    """``(form, code key)`` from ontology descriptions and inclusion terms, with and without qualifiers.

    With ``variants``, shortened descriptions too; a shortened form that is no code's own
    term goes to the code(s) with the shortest description among those it came from
    (``"undescended testicle"`` -> the unspecified code, not the bilateral one).
    """
    primary: set[tuple[str, ...]] = set()
    shortened: dict[tuple[str, ...], list[tuple[int, str]]] = defaultdict(list)
    for system in systems:
        for code in ontology.codes(system):
            info = ontology.get(code, system)
            if info is None:
                continue
            key = code_key(code, system)
            for term in (info.description, *info.inclusion_terms):
                for variant in {term, _bare(term)}:
                    form = form_of(variant, fold_plurals)
                    primary.add(form)
                    yield form, key
            if variants:
                for variant in description_variants(info.description):
                    shortened[form_of(variant, fold_plurals)].append((len(info.description), key))
    for form, sources in shortened.items():
        if form in primary:
            continue
        shortest = min(length for length, _ in sources)
        for length, key in sources:
            if length == shortest:
                yield form, key
