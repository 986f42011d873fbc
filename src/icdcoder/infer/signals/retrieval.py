"""Candidate retrieval per segment of the note (fused values ``retrieval`` and ``surface``).

Each segment's candidates (:class:`icdcoder.spans.retrieval.CandidateRetriever`) score their fused retrieval score,
mapped into [0, 1]; ``surface`` marks a candidate found by a training surface form, whose evidence is that form in the
segment. For a note with an English translation the translation's segments are searched too: the ontology
descriptions the retriever searches are English, so codes training never showed are found there more often (no
evidence offsets: the words are not in the note). The retriever itself belongs to the coder (the LLM's candidates and
the codes the training notes carry come from it): it is fitted and saved with the coder, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from icdcoder.infer.signals.base import NoteContext, NoteSignal, ScoredCode, SignalSpec
from icdcoder.ontology.labels import CODER_SYSTEMS
from icdcoder.prompt import find_words
from icdcoder.spans.segment import segment_note

if TYPE_CHECKING:
    from icdcoder.infer.coder import SpanPredictor


def retrieve_segments(retriever, text: str, max_words: int, k: int) -> list[tuple[Any, str, list[Any]]]:
    """``(segment, segment text, candidates of the coded systems)`` for each segment of ``text``."""
    segments = segment_note(text, max_words=max_words)
    texts = [segment.text(text) for segment in segments]
    retrieved = retriever.retrieve_many(texts, k=k) if texts else []
    return [
        (segment, segment_text, [c for c in found if c.system in CODER_SYSTEMS])
        for segment, segment_text, found in zip(segments, texts, retrieved)
    ]


def retrieval_scale(retriever) -> float:
    """The highest fused retrieval score possible, to map scores into [0, 1]."""
    config = retriever.config
    weights = (
        config.surface_weight
        + config.tfidf_weight
        + (config.embedding_weight if retriever.embeddings is not None else 0.0)
    )
    return weights / (config.rrf_k + 1)


def surface_span(retriever, code: str, system: str, text: str) -> tuple[int, int] | None:
    """The longest training surface form (or short description) of ``code`` found in ``text`` as whole words."""
    code_index = retriever.code_index.get((code, system))
    if code_index is None:
        return None
    forms = [
        retriever.display[form] for form in retriever.forms_by_code.get(code_index, ()) if form in retriever.display
    ]
    for form in sorted(forms, key=len, reverse=True):
        span = find_words(form, text)
        if span is not None:
            return span
    return None


class RetrievalSignal(NoteSignal):
    specs: ClassVar[tuple[SignalSpec, ...]] = (
        SignalSpec(
            "retrieval",
            "retrieval_weight",
            default_weight=0.5,
            held_weight=1.0,
            description="weight of the retrieval score (tuning holds it at 1: the other weights are relative to it)",
        ),
        # tuning holds it at 0: retrieval already counts the training surface forms
        SignalSpec("surface", "surface_bonus", description="weight of a candidate found by a training surface form"),
    )

    def items(self, coder: SpanPredictor, note: NoteContext) -> list[ScoredCode]:
        retriever, scale = coder.fitted_retriever, retrieval_scale(coder.fitted_retriever)
        items = [
            self._segment_item(retriever, candidate, text, segment.start, scale)
            for segment, text, found in note.retrieved
            for candidate in found
        ]
        document, settings = note.document, coder.settings
        if settings.retrieve_on_translation and document.translation and document.language != "en":
            items.extend(self._translation_items(coder, document.translation, scale))
        return items

    @staticmethod
    def _segment_item(retriever, candidate, text: str, offset: int, scale: float) -> ScoredCode:
        """A candidate of one segment, with the training surface form located in the segment if present."""
        values = {"retrieval": min(candidate.score / scale, 1.0), "surface": float("surface" in candidate.source)}
        item = ScoredCode(candidate.code, candidate.system, values)
        span = surface_span(retriever, candidate.code, candidate.system, text)
        if span is not None:
            item.start, item.end = offset + span[0], offset + span[1]
        return item

    @staticmethod
    def _translation_items(coder: SpanPredictor, translation: str, scale: float) -> Sequence[ScoredCode]:
        settings = coder.settings
        return [
            ScoredCode(c.code, c.system, {"retrieval": min(c.score / scale, 1.0)})
            for _, _, found in retrieve_segments(
                coder.fitted_retriever, translation, settings.segment_max_words, settings.retrieval_k
            )
            for c in found
        ]
