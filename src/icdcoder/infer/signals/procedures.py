"""ICD-10-PCS codes composed from an operation word and a body part in one sentence of the note's English text
(fused value ``procedure``; :class:`icdcoder.spans.procedures.ProcedureComposer`); evidence is the sentence."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from icdcoder.infer.signals.base import NoteContext, NoteSignal, ScoredCode, SignalSpec
from icdcoder.spans.procedures import ProcedureComposer

if TYPE_CHECKING:
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.spans.retrieval import CandidateRetriever


class ProcedureSignal(NoteSignal):
    """Writes each operation at the level the retriever's training notes code it; learns nothing else."""

    specs: ClassVar[tuple[SignalSpec, ...]] = (
        SignalSpec(
            "procedure",
            "procedure_weight",
            systems=("icd10pcs",),
            grid=(0.0, 0.5, 1.0, 2.0, 4.0),
            description="weight of the ICD-10-PCS codes composed on the note's English text",
        ),
    )

    def __init__(self) -> None:
        self._composer: ProcedureComposer | None = None
        self._retriever: CandidateRetriever | None = None

    def composer(self, coder: SpanPredictor) -> ProcedureComposer:
        """The composer for the coder's retriever (rebuilt when another retriever is attached)."""
        if self._composer is None or self._retriever is not coder.fitted_retriever:
            counts = {
                code: n
                for (code, system), n in coder.fitted_retriever.trained_note_counts.items()
                if system == "icd10pcs"
            }
            self._composer, self._retriever = ProcedureComposer(coder.ontology, counts), coder.fitted_retriever
        return self._composer

    def items(self, coder: SpanPredictor, note: NoteContext) -> list[ScoredCode]:
        composer = self.composer(coder)
        return note.on_english(
            lambda english: [
                ScoredCode(composed.code, "icd10pcs", {"procedure": 1.0}, start=composed.start, end=composed.end)
                for composed in composer.compose(english)
            ]
        )
