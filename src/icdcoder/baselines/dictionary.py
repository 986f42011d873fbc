"""Dictionary coder: lookup of known surface forms in the note, with evidence offsets.

Surface forms come from the training evidence (CodiEsp-X references: the exact
words annotators tied to a code) and, for English notes, from the ontology's
descriptions and inclusion terms. Matching is case- and accent-insensitive on
whole words: both the note and the forms are cut into ``\\w+`` tokens which are
lower-cased and stripped of diacritics (plural ``s``/``es`` folded). By default
every known form is matched, nested ones included; leftmost-longest
non-overlapping matching is the alternative (``matching: longest``), 0.02 lower
in D MAP on CodiEsp dev.

A form is not proof of a code: ``"dolor"`` is written in many notes that are
not coded with ``R52``. So the index also counts, on the training notes, in how
many notes each form is matched (``matched_docs``) and in how many of those the
note is coded with each of its codes (``hits``). The *reliability* of
``form -> code`` is the smoothed ratio ``(hits + prior * weight) / (matched_docs
+ weight)``; a note's score for a code is the noisy-or of the reliabilities of
the distinct forms that point to it. The decision threshold per sub-task
(diagnoses, procedures) is tuned on dev for micro-F1.

Measured on CodiEsp dev and left out: skipping matches after a negation cue
(``no``, ``sin``, ``niega``) lowered D MAP by 0.01-0.03 (CodiEsp annotators
code many findings written after such words).

Reuse by the LLM candidate retriever::

    index = SurfaceFormIndex.build(train_docs, ontology=None)   # or DictionaryPredictor.load(dir).index
    for hit in index.code_hits(note_text):                      # best first
        hit.code, hit.system, hit.score, hit.evidence            # evidence: list[Evidence] into note_text
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from icdcoder.baselines.base import (
    CODE_GROUPS,
    code_group,
    code_key,
    fit_report_from_meta,
    gold_by_group,
    measured_fit,
    read_meta,
    split_key,
    tune_threshold,
    write_meta,
)
from pydantic import Field

from icdcoder.config import StrictModel
from icdcoder.data.schema import Document, Evidence
from icdcoder.errors import InputError
from icdcoder.io import atomic_write, read_text
from icdcoder.predictor import CodePrediction, DocumentPrediction, FitReport, Predictor

INDEX_FILE = "surface_forms.json"
_TOKEN = re.compile(r"\w+")
#: English qualifiers dropped from ontology descriptions to get the words a note would use
_ONTOLOGY_NOISE = re.compile(r",?\s*\b(unspecified|not elsewhere classified|NEC|NOS)\b", re.IGNORECASE)
_PARENTHESES = re.compile(r"\s*[\(\[][^\)\]]*[\)\]]")
_WITHOUT_CLAUSE = re.compile(r"\s+without\b.*$", re.IGNORECASE)


class DictionaryConfig(StrictModel):
    """Settings of the dictionary coder (see the module docstring for the scoring)."""

    use_training_evidence: bool = True
    #: add ontology descriptions + inclusion terms: "auto" = when the training notes are not Spanish
    ontology_terms: Literal["auto", "always", "never"] = "auto"
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
    #: a fixed decision threshold; ``None`` tunes one per sub-task on dev (0.5 without dev)
    threshold: float | None = None


def smoothed_reliability(right: int, matched: int, prior: float = 0.5, weight: float = 2.0) -> float:
    """How often a match was right, smoothed towards ``prior`` as if ``weight`` more matches had been seen:
    ``(right + prior * weight) / (matched + weight)``. With the defaults, (right + 1) / (matched + 2): a match never
    seen scores 0.5, one never wrong tends to 1, one often wrong to 0."""
    return (right + prior * weight) / (matched + weight)


def normalize_word(word: str, fold_plurals: bool = False) -> str:
    """Lower case without diacritics: ``"Tórax"`` -> ``"torax"``; ``fold_plurals``: ``"edemas"`` -> ``"edema"``."""
    decomposed = unicodedata.normalize("NFKD", word.lower())
    norm = "".join(char for char in decomposed if not unicodedata.combining(char))
    if fold_plurals and len(norm) > 4 and norm.endswith("es"):
        return norm[:-2]
    if fold_plurals and len(norm) > 3 and norm.endswith("s"):
        return norm[:-1]
    return norm


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

    def __init__(self, config: DictionaryConfig | None = None, entries: dict[tuple[str, ...], FormEntry] | None = None):
        self.config = config or DictionaryConfig()
        self.entries: dict[tuple[str, ...], FormEntry] = entries or {}
        self._refresh_lengths()

    # ----------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        documents: Sequence[Document],
        ontology: Any | None = None,
        config: DictionaryConfig | None = None,
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
            index._add_forms(_ontology_forms(ontology, config.ontology_systems, config.fold_plurals, config.ontology_variants))
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

    def _prune(self, phrases: set[tuple[tuple[str, ...], str]] = frozenset()) -> None:
        """Drop unreliable ``form -> code`` pairs, rare phrase pairs, and forms left without codes."""
        config = self.config
        for form in list(self.entries):
            entry = self.entries[form]
            entry.hits = {
                key: n
                for key, n in entry.hits.items()
                if (form, key) not in phrases and self.reliability(entry, key) >= config.min_reliability
                or n >= config.phrase_min_hits and self.reliability(entry, key) >= config.phrase_min_reliability
            }
            if not entry.hits:
                del self.entries[form]
        self._refresh_lengths()

    def _refresh_lengths(self) -> None:
        self._lengths = sorted({len(form) for form in self.entries}, reverse=True)

    # ----------------------------------------------------------------- lookup
    def reliability(self, entry: FormEntry, key: str) -> float:
        """Smoothed share of training notes matching the form that carry the code."""
        return smoothed_reliability(entry.hits.get(key, 0), entry.matched_docs, self.config.prior, self.config.prior_weight)

    def scan(self, text: str) -> list[FormMatch]:
        """Matches of known forms in ``text`` (see ``DictionaryConfig.matching``), in text order."""
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
        forms = [[" ".join(form), entry.matched_docs, entry.hits] for form, entry in sorted(self.entries.items())]
        return {"config": self.config.model_dump(mode="json"), "forms": forms}

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path | None = None) -> SurfaceFormIndex:
        try:
            config = DictionaryConfig.model_validate(data["config"])
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
    """An ontology term without qualifiers notes do not write (unspecified, NOS, parentheses)."""
    return _PARENTHESES.sub("", _ONTOLOGY_NOISE.sub("", term)).strip(" ,")


def description_variants(description: str) -> set[str]:
    """Shorter wordings of a description, as a note would write it.

    ``"Diverticulosis of large intestine without perforation or abscess"`` ->
    ``"Diverticulosis of large intestine"``; ``"Undescended testicle, unspecified, bilateral"``
    -> ``"Undescended testicle"`` (the text before the first comma).
    """
    bare = _bare(description)
    variants = {bare.split(",")[0].strip(), _WITHOUT_CLAUSE.sub("", bare).strip(" ,")}
    return {variant for variant in variants if variant and variant != bare}


def _ontology_forms(
    ontology: Any, systems: Sequence[str], fold_plurals: bool, variants: bool = False
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


class DictionaryPredictor(Predictor):
    """Codes a note by looking up known surface forms; evidence = the matched words."""

    name = "dictionary"
    config_model = DictionaryConfig

    def __init__(self, config: DictionaryConfig | None = None):
        self.config = config or DictionaryConfig()
        self.index = SurfaceFormIndex(self.config)
        fixed = 0.5 if self.config.threshold is None else self.config.threshold
        self.thresholds: dict[str, float] = dict.fromkeys(CODE_GROUPS, fixed)
        self.fit_report = FitReport()

    def fit(self, train: Sequence[Document], dev: Sequence[Document] | None = None) -> FitReport:
        if not train:
            raise InputError("no training documents")
        report = FitReport()
        with measured_fit(report):
            ontology = self._ontology_for(train)
            self.index = SurfaceFormIndex.build(train, ontology=ontology, config=self.config)
            report.extra["surface_forms"] = len(self.index)
            report.train_tokens = sum(len(tokenize(doc.text)) for doc in train)  # words read in training
            if dev and self.config.threshold is None:
                for group, (threshold, f1) in self._tune_thresholds(dev).items():
                    self.thresholds[group] = threshold
                    report.extra[f"{group}_threshold"] = threshold
                    report.extra[f"{group}_dev_micro_f1"] = round(f1, 4)
        self.fit_report = report
        return report

    def _ontology_for(self, train: Sequence[Document]) -> Any | None:
        wanted = self.config.ontology_terms
        languages = Counter(doc.language for doc in train)
        if wanted == "never" or (wanted == "auto" and languages.most_common(1)[0][0] == "es"):
            return None
        from icdcoder.ontology import load_ontology

        return load_ontology()

    def _tune_thresholds(self, dev: Sequence[Document]) -> dict[str, tuple[float, float]]:
        hits = [self.index.code_hits(doc.text) for doc in dev]
        tuned = {}
        for group, systems in CODE_GROUPS.items():
            scored = [{code_key(h.code, h.system): h.score for h in doc if h.system in systems} for doc in hits]
            tuned[group] = tune_threshold(scored, gold_by_group(dev, group))
        return tuned

    def predict(self, documents: Sequence[Document]) -> list[DocumentPrediction]:
        return [self._predict_one(doc) for doc in documents]

    def _predict_one(self, doc: Document) -> DocumentPrediction:
        asserted = [
            CodePrediction(hit.code, hit.system, hit.score, hit.evidence)
            for hit in self.index.code_hits(doc.text)
            if hit.score >= self.thresholds[code_group(hit.system)]
        ]
        return DocumentPrediction(doc_id=doc.id, codes=asserted)

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        with atomic_write(directory / INDEX_FILE) as handle:
            json.dump(self.index.to_json(), handle, ensure_ascii=False)
        write_meta(directory, self.name, self.config, self.fit_report, thresholds=self.thresholds)

    @classmethod
    def load(cls, directory: str | Path) -> DictionaryPredictor:
        directory = Path(directory)
        meta = read_meta(directory, cls.name)
        predictor = cls(DictionaryConfig.model_validate(meta["config"]))
        path = directory / INDEX_FILE
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as err:
            raise InputError(f"malformed JSON ({err.msg})", path=path, line=err.lineno) from None
        predictor.index = SurfaceFormIndex.from_json(data, path)
        predictor.thresholds.update({group: float(value) for group, value in meta.get("thresholds", {}).items()})
        predictor.fit_report = fit_report_from_meta(meta)
        return predictor

