"""What a signal is: the :class:`Signal` protocol, the scored codes it writes, and the note it reads.

A *signal* is a source of evidence for codes (retrieval, a lexicon, the LLM, ...). It learns from the training notes
(``fit``), reads notes (``score``: a value in [0, 1] per code it finds, with the note span it found it in), and keeps
what it learned in the coder folder (``save``/``load``). It writes one or more *fused values* (:class:`SignalSpec`),
each a column of the fusion with its own weight in :class:`~icdcoder.infer.settings.CoderSettings`.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from icdcoder.data.align import AlignedDocument, align_document
from icdcoder.data.schema import Document
from icdcoder.ontology.labels import CODER_SYSTEMS

if TYPE_CHECKING:
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.spans.phrases import PhraseCompleter
    from icdcoder.spans.translate import WordTranslator


@dataclass(frozen=True)
class SignalSpec:
    """One fused value: its name (a key of :attr:`ScoredCode.signals`), its weight field in ``CoderSettings``, the
    weights ``predict tune`` tries for it (none: tuning holds it at ``held_weight``), and the coder-folder file it needs when
    weighed (a folder that weighs it and lacks the file is incomplete: it would code with fewer signals, silently)."""

    name: str
    weight_field: str
    default_weight: float = 0.0
    #: the systems it scores: its weight counts only in those systems' fused scores
    systems: tuple[str, ...] = CODER_SYSTEMS
    grid: tuple[float, ...] = ()
    #: the weight ``predict tune`` holds it at when it has no ``grid``
    held_weight: float = 0.0
    file: str | None = None
    description: str = ""


#: the systems whose codes found in a translation are narrowed to the words of the sentence that translate the match;
#: procedures keep the sentence: on CodiEsp dev their narrowed words seldom met the references (a procedure's reference
#: runs from the act to its site, words apart) and lowered X F1, while narrowed diagnoses raised it
NARROWED_SYSTEMS = ("icd10cm",)


@dataclass
class ScoredCode:
    """One code as one signal saw it in one place of a note: its values and evidence span."""

    code: str
    system: str
    #: fused value name (``SignalSpec.name``) -> value in [0, 1]
    signals: dict[str, float] = field(default_factory=dict)
    start: int = -1
    end: int = -1
    #: the span is the note's sentence(s) whose translation the code was found in, not the matched words
    projected: bool = False
    #: of a projected item, the words of its sentence that translate the match (-1: none found; see
    #: :meth:`~icdcoder.spans.translate.WordTranslator.localize`)
    word_start: int = -1
    word_end: int = -1
    #: no training note carries the code (set when a note's outputs are finished: ``SpanPredictor.finished``)
    untrained: bool = False


def complete_phrases(items: Sequence[ScoredCode], text: str, phrases: PhraseCompleter, max_chars: int) -> None:
    """Grow each item's span of the note's words (its translated words, for a projected item) to its phrase, in place
    (:meth:`~icdcoder.spans.phrases.PhraseCompleter.complete`); a projected item's sentence stays as it is."""
    if max_chars <= 0:
        return
    for item in items:
        if item.projected and item.word_end > item.word_start >= 0:
            item.word_start, item.word_end = phrases.complete(text, item.word_start, item.word_end, max_chars)
        elif not item.projected and item.end > item.start >= 0:
            item.start, item.end = phrases.complete(text, item.start, item.end, max_chars)


@dataclass
class NoteOutputs:
    """Stage-1 output for one note: every scored (segment, code) and dropped answer lines."""

    doc_id: str
    scored: list[ScoredCode] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    segments: int = 0
    llm_segments: int = 0


@dataclass
class NoteContext:
    """What the signals read of one note: the note, and its segments with their retrieved candidates."""

    document: Document
    #: ``(segment, segment text, candidates of the coded systems)`` per segment (``signals.retrieval``)
    retrieved: list[tuple[Any, str, list[Any]]]
    #: the coder's Spanish -> English glossary: narrows a projected item's sentence to the words that translate it
    translator: WordTranslator | None = None

    @property
    def english(self) -> str | None:
        """The note's English text: the note itself, or its translation (None when it has neither)."""
        return self.document.text if self.document.language == "en" else self.document.translation

    @functools.cached_property
    def alignment(self) -> AlignedDocument:
        """The note's sentences aligned with the lines of its translation (:mod:`icdcoder.data.align`)."""
        return align_document(self.document.text, self.document.translation.split("\n"))

    def on_english(self, find: Callable[[str], list[ScoredCode]]) -> list[ScoredCode]:
        """``find`` on the note's English text, spans carried to the note's own sentences when it is a translation."""
        english = self.english
        if not english:
            return []
        items = find(english)
        return items if english is self.document.text else self.projected(items)

    def projected(self, items: list[ScoredCode]) -> list[ScoredCode]:
        """Items found in the translation, their spans carried over to the note's sentences they translate (and, with
        a ``translator``, to the words there that translate the match); an item on an unaligned line keeps no span."""
        result = []
        for item in items:
            span = self.alignment.source_span_of_target(item.start, item.end) if item.end > item.start >= 0 else None
            start, end = span if span is not None else (-1, -1)
            words = self._words(item, span) if span is not None else None
            word_start, word_end = words if words is not None else (-1, -1)
            result.append(
                replace(
                    item, start=start, end=end, projected=span is not None, word_start=word_start, word_end=word_end
                )
            )
        return result

    def _words(self, item: ScoredCode, sentence: tuple[int, int]) -> tuple[int, int] | None:
        if self.translator is None or self.document.translation is None or item.system not in NARROWED_SYSTEMS:
            return None
        return self.translator.localize(self.document.translation[item.start : item.end], self.document.text, *sentence)


@dataclass
class TrainingNotes:
    """What signals learn from: the training notes, their English versions (the notes themselves, or CodiEsp's
    translations; may be empty), the notes' language, and whether lexicons are wanted."""

    documents: Sequence[Document]
    english: Sequence[Document]
    language: str
    lexicons: bool = True


class Signal(Protocol):
    """A source of fused values; one module of :mod:`icdcoder.infer.signals` each, listed in its registry."""

    specs: ClassVar[tuple[SignalSpec, ...]]
    #: the files and folders ``save`` writes, relative to the coder folder
    files: ClassVar[tuple[str, ...]]

    def fit(self, coder: SpanPredictor, training: TrainingNotes) -> None:
        """Learn from the training notes (the coder's retriever and ontology are set)."""

    def score(self, coder: SpanPredictor, notes: Sequence[NoteContext], outputs: Sequence[NoteOutputs]) -> None:
        """Add this signal's scored codes for each note to its outputs."""

    def save(self, directory: Path) -> None:
        """Write what ``fit`` learned into the coder folder; remove it from there when there is nothing."""

    def load(self, directory: Path) -> None:
        """Read what ``save`` wrote (nothing there: the signal stays empty)."""


class NoteSignal:
    """A signal that reads one note at a time and learns nothing (override what it does learn)."""

    specs: ClassVar[tuple[SignalSpec, ...]] = ()
    files: ClassVar[tuple[str, ...]] = ()

    def fit(self, coder: SpanPredictor, training: TrainingNotes) -> None:
        return None

    def items(self, coder: SpanPredictor, note: NoteContext) -> list[ScoredCode]:
        raise NotImplementedError

    def score(self, coder: SpanPredictor, notes: Sequence[NoteContext], outputs: Sequence[NoteOutputs]) -> None:
        for note, output in zip(notes, outputs):
            output.scored.extend(item for item in self.items(coder, note) if item.system in CODER_SYSTEMS)

    def save(self, directory: Path) -> None:
        return None

    def load(self, directory: Path) -> None:
        return None
