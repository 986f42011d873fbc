"""Dictionary coder: lookup of known surface forms in the note, with evidence offsets.

A baseline around the surface-form index of :mod:`icdcoder.spans.lexicon` (how forms are collected, matched and
scored lives there): a code is predicted when its score reaches the decision threshold of its sub-task (diagnoses,
procedures), tuned on dev for micro-F1. By default every known form is matched, nested ones included;
leftmost-longest matching (``matching: longest``) was 0.02 lower in D MAP on CodiEsp dev.

Measured on CodiEsp dev and left out: skipping matches after a negation cue (``no``, ``sin``, ``niega``) lowered D MAP
by 0.01-0.03 (CodiEsp annotators code many findings written after such words).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from icdcoder.baselines.base import (
    CODE_GROUPS,
    code_group,
    code_key,
    fit_report_from_meta,
    gold_by_group,
    measured_fit,
    read_meta,
    tune_threshold,
    write_meta,
)
from icdcoder.data.schema import Document, Evidence
from icdcoder.errors import InputError
from icdcoder.io import atomic_write, read_text
from icdcoder.predictor import CodePrediction, DocumentPrediction, FitReport, Predictor, ranking_candidates
from icdcoder.spans.lexicon import LexiconConfig, SurfaceFormIndex, tokenize
from icdcoder.spans.phrases import PHRASES_FILE, PhraseCompleter

INDEX_FILE = "surface_forms.json"


class DictionaryConfig(LexiconConfig):
    """Settings of the dictionary coder: its index's, plus where ontology terms come in and the threshold."""

    #: add ontology descriptions + inclusion terms: "auto" = when the training notes are not Spanish
    ontology_terms: Literal["auto", "always", "never"] = "auto"
    #: a fixed decision threshold; ``None`` tunes one per sub-task on dev (0.5 without dev)
    threshold: float | None = None
    #: grow each evidence span by the words annotators keep with a mention, learned from the training evidence, at most
    #: this many characters on each side (:mod:`icdcoder.spans.phrases`, as the span coder does); 0: the matched words
    phrase_context_chars: int = Field(0, ge=0, le=40)


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
        self.phrases: PhraseCompleter | None = None

    def fit(self, train: Sequence[Document], dev: Sequence[Document] | None = None) -> FitReport:
        if not train:
            raise InputError("no training documents")
        report = FitReport()
        with measured_fit(report):
            ontology = self._ontology_for(train)
            self.index = SurfaceFormIndex.build(train, ontology=ontology, config=self.config)
            report.extra["surface_forms"] = len(self.index)
            self.phrases = PhraseCompleter.fit(train) if self.config.phrase_context_chars else None
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
        hits = self.index.code_hits(doc.text)
        asserted = [
            CodePrediction(hit.code, hit.system, hit.score, self._completed(hit.evidence, doc.text))
            for hit in hits
            if hit.score >= self.thresholds[code_group(hit.system)]
        ]
        candidates = ranking_candidates(asserted, [(hit.code, hit.system, hit.score) for hit in hits])
        return DocumentPrediction(doc_id=doc.id, codes=asserted, candidates=candidates)

    def _completed(self, evidence: list[Evidence], text: str) -> list[Evidence]:
        """The matched words, each grown to its phrase when the config asks for it."""
        if self.phrases is None:  # fitted and loaded only when phrase_context_chars asks for it
            return evidence
        grown = (self.phrases.complete(text, e.start, e.end, self.config.phrase_context_chars) for e in evidence)
        return [Evidence(pieces=(span,)) for span in dict.fromkeys(grown)]

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        with atomic_write(directory / INDEX_FILE) as handle:
            json.dump(self.index.to_json(), handle, ensure_ascii=False)
        if self.phrases is not None:
            self.phrases.save(directory / PHRASES_FILE)
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
        if predictor.config.phrase_context_chars:
            if not (directory / PHRASES_FILE).is_file():
                raise InputError(
                    "its config grows evidence to phrases but the folder has no phrase words",
                    path=directory / PHRASES_FILE,
                )
            predictor.phrases = PhraseCompleter.load(directory / PHRASES_FILE)
        predictor.thresholds.update({group: float(value) for group, value in meta.get("thresholds", {}).items()})
        predictor.fit_report = fit_report_from_meta(meta)
        return predictor
