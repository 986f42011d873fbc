"""The English lexicon, read on the note's English text (the note, or its translation): its forms confirmed on
training notes (fused value ``english``) and the ontology terms no training note confirmed (``ontology``, the one way to
codes the training notes never carry)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from icdcoder.infer.signals.base import (
    NoteContext,
    NoteSignal,
    ScoredCode,
    SignalSpec,
    TrainingNotes,
)
from icdcoder.infer.signals.lexicon import (
    LEXICON_FILE,
    build_lexicon,
    hit_items,
    load_lexicon,
    save_lexicon,
)
from icdcoder.spans.lexicon import SurfaceFormIndex

if TYPE_CHECKING:
    from icdcoder.infer.coder import SpanPredictor

ENGLISH_LEXICON_DIR = "lexicon_en"
_FILE = f"{ENGLISH_LEXICON_DIR}/{LEXICON_FILE}"
_GRID = (0.0, 1.0, 2.0, 4.0, 8.0)


class EnglishLexiconSignal(NoteSignal):
    """Ontology terms and phrases of the projected training evidence, reliabilities counted on the English notes."""

    specs: ClassVar[tuple[SignalSpec, ...]] = (
        SignalSpec(
            "english",
            "english_weight",
            grid=_GRID,
            file=_FILE,
            description="weight of the English lexicon's trained forms",
        ),
        SignalSpec(
            "ontology",
            "ontology_weight",
            grid=_GRID,
            file=_FILE,
            description="weight of the ontology terms no training note confirmed, read by the English lexicon",
        ),
    )

    files: ClassVar[tuple[str, ...]] = (ENGLISH_LEXICON_DIR,)

    def __init__(self) -> None:
        self.index: SurfaceFormIndex | None = None

    def fit(self, coder: SpanPredictor, training: TrainingNotes) -> None:
        self.index = build_lexicon(training.english, coder.ontology) if training.lexicons and training.english else None

    def items(self, coder: SpanPredictor, note: NoteContext) -> list[ScoredCode]:
        index = self.index
        return note.on_english(lambda english: self._find(index, english)) if index is not None else []

    @staticmethod
    def _find(index: SurfaceFormIndex, english: str) -> list[ScoredCode]:
        return [
            item
            for signal, trained in (("english", True), ("ontology", False))
            for hit in index.code_hits(english, trained=trained)
            for item in hit_items(hit, signal)
        ]

    def save(self, directory: Path) -> None:
        save_lexicon(self.index, directory / ENGLISH_LEXICON_DIR)

    def load(self, directory: Path) -> None:
        self.index = load_lexicon(directory / ENGLISH_LEXICON_DIR)
