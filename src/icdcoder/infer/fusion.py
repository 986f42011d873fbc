"""Stage 2 of the coder: per code, each signal's best value over the note, combined as a weighted mean in [0, 1] (or
scored by gradient-boosted trees, :mod:`icdcoder.infer.trees`) and thresholded per system (codes no training note
carries by their own threshold, where one is set).

Evidence is every span where a counted signal found the code: the LLM's quote, the lexicons' matched words, the
training surface form found in a segment, a value's phrase; the span of the first signal's best value (in registry
order) leads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from icdcoder.data.schema import Evidence
from icdcoder.errors import InputError
from icdcoder.infer.settings import CoderSettings
from icdcoder.infer.signals import SIGNAL_SYSTEMS, SIGNAL_WEIGHTS, SIGNALS, NoteOutputs, ScoredCode
from icdcoder.ontology.labels import CODER_SYSTEMS
from icdcoder.predictor import CodePrediction, DocumentPrediction

if TYPE_CHECKING:
    from icdcoder.infer.trees import TreeFusion

#: decimals of a fused score (predictions carry it rounded; thresholds compare the rounded score)
SCORE_DIGITS = 6


def signal_weights(settings: CoderSettings, system: str) -> dict[str, float]:
    """Each signal's weight in the fused scores of ``system``'s codes (0 for a signal that never scores them)."""
    return {
        signal: getattr(settings, name) if system in SIGNAL_SYSTEMS.get(signal, CODER_SYSTEMS) else 0.0
        for signal, name in SIGNAL_WEIGHTS.items()
    }


def fuse(signals: dict[str, float], weights: dict[str, float]) -> float:
    """The weighted mean of a code's signals, in [0, 1]."""
    total = sum(weights.values())
    if total <= 0:
        return 0.0
    return sum(weights[name] * signals.get(name, 0.0) for name in SIGNALS) / total


@dataclass
class CodeSignals:
    """A code's best value of each signal over a note, and the note spans where each signal found it."""

    best: dict[str, float] = field(default_factory=dict)
    spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    #: sentences of the note whose translation a signal found the code in (``ScoredCode.projected``)
    sentences: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    #: the words of those sentences that translate the matches, where the glossary found them (``ScoredCode.word_start``)
    translated_words: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    untrained: bool = False

    def add(self, item: ScoredCode) -> None:
        self.untrained = self.untrained or item.untrained
        span = (item.start, item.end) if item.end > item.start >= 0 else None
        words = (item.word_start, item.word_end) if item.projected and item.word_end > item.word_start >= 0 else None
        for name in SIGNALS:
            value = float(item.signals.get(name, 0.0))
            if value <= 0:
                continue
            leads = value > self.best.get(name, 0.0)
            if leads:
                self.best[name] = value
            _note_span((self.sentences if item.projected else self.spans).setdefault(name, []), span, leads)
            if words is not None:
                _note_span(self.translated_words.setdefault(name, []), words, leads)

    def evidence(self, weights: dict[str, float]) -> list[Evidence]:
        """Every span of the note's words where a signal that counts found the code (any signal's, when none
        that counts has one); the span of the first signal's best value (in ``SIGNALS`` order) leads."""
        return _signal_evidence(self.spans, weights)

    def translated_evidence(self, weights: dict[str, float]) -> list[Evidence]:
        """The words of the note that translate the matches the signals found in its translation (as :meth:`evidence`
        chooses)."""
        return _signal_evidence(self.translated_words, weights)

    def sentence_evidence(self, weights: dict[str, float]) -> list[Evidence]:
        """The note's sentences whose translation the signals found the code in (as :meth:`evidence` chooses)."""
        return _signal_evidence(self.sentences, weights)


def _note_span(spans: list[tuple[int, int]], span: tuple[int, int] | None, leads: bool) -> None:
    """Add ``span`` to a signal's spans: first when it holds the signal's best value so far (the evidence leads with
    it), else last."""
    if span is None:
        return
    if leads:
        spans[:] = [span] + [s for s in spans if s != span]
    elif span not in spans:
        spans.append(span)


def _signal_evidence(spans_by_signal: dict[str, list[tuple[int, int]]], weights: dict[str, float]) -> list[Evidence]:
    counted = [name for name in SIGNALS if weights[name] > 0 and spans_by_signal.get(name)]
    names = counted or [name for name in SIGNALS if spans_by_signal.get(name)]
    if not names:
        return []
    return _evidence_list(spans_by_signal[names[0]][0], {span for name in names for span in spans_by_signal[name]})


def _evidence_list(lead: tuple[int, int], spans: set[tuple[int, int]]) -> list[Evidence]:
    """``lead``, then the other spans in text order, leaving out those inside another."""
    kept = [lead]
    for span in sorted(spans - {lead}, key=lambda s: s[0] - s[1]):  # longest first: one inside a kept span comes later
        if not any(k[0] <= span[0] and span[1] <= k[1] for k in kept):
            kept.append(span)
    return [Evidence(pieces=(span,)) for span in [lead, *sorted(kept[1:])]]


def collect_signals(outputs: NoteOutputs) -> dict[tuple[str, str], CodeSignals]:
    """Each ``(code, system)`` of a note with its best value of every signal (independent of the weights)."""
    signals: dict[tuple[str, str], CodeSignals] = {}
    for item in outputs.scored:
        signals.setdefault((item.code, item.system), CodeSignals()).add(item)
    return signals


def fused_scores(
    signals: dict[tuple[str, str], CodeSignals], settings: CoderSettings, system: str, trees: TreeFusion | None
) -> dict[str, float]:
    """Each code of ``system`` in a note (its :func:`collect_signals`) with its score under ``settings.fusion``."""
    if settings.fusion == "trees":
        if trees is None:
            raise InputError("the coder's settings say fusion 'trees' but it has no fusion trees for these notes")
        return trees.scores(signals, system)
    weights = signal_weights(settings, system)
    return {code: fuse(found.best, weights) for (code, sys_), found in signals.items() if sys_ == system}


def aggregate(
    outputs: NoteOutputs,
    settings: CoderSettings,
    signals: dict[tuple[str, str], CodeSignals] | None = None,
    trees: TreeFusion | None = None,
) -> DocumentPrediction:
    """Rank a note's codes by their fused signals: those at or above their system's threshold are its decisions (with
    evidence), the others, down to ``max_codes_per_system`` codes per system, its candidates.

    ``signals``: the note's :func:`collect_signals`, when the caller aggregates it under many settings; ``trees``: the
    coder's fusion trees, needed when ``settings.fusion`` is "trees".
    """
    signals = collect_signals(outputs) if signals is None else signals
    codes, candidates = [], []
    for system in CODER_SYSTEMS:
        weights = signal_weights(settings, system)
        scores = fused_scores(signals, settings, system, trees)
        ranked = sorted(
            ((round(score, SCORE_DIGITS), code, signals[(code, system)]) for code, score in scores.items()),
            key=lambda x: (-x[0], x[1]),
        )
        for score, code, found in ranked[: settings.max_codes_per_system]:
            if score <= 0:
                break
            if score < code_threshold(settings, system, found.untrained):
                candidates.append(CodePrediction(code, system, score))
                continue
            evidence = found.evidence(weights) or found.translated_evidence(weights)
            sentences = [] if evidence else found.sentence_evidence(weights)
            codes.append(CodePrediction(code, system, score, evidence=evidence, sentence_evidence=sentences))
    return DocumentPrediction(doc_id=outputs.doc_id, codes=codes, dropped=dict(outputs.dropped), candidates=candidates)


def code_threshold(settings: CoderSettings, system: str, untrained: bool) -> float:
    """The score a code of ``system`` needs to be predicted: the untrained codes' own threshold where set."""
    threshold = settings.threshold.get(system, 0.5)
    return settings.untrained_threshold.get(system, threshold) if untrained else threshold
