"""ICD-10-CM codes whose title or inclusion term, as content words, one sentence of the note's English text holds
(fused value ``concept``; :class:`icdcoder.spans.concepts.ConceptIndex`); evidence is the sentence.

A match scores how often a match of that code was right on the training notes in English (``concepts.json``: code ->
[notes matched, notes that carry it]). Without those counts every concept scores 0.5, as for a coder whose training
notes had no English text: so the file is not required by the weight (a coder folder names it in ``files``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from icdcoder.data.schema import Document
from icdcoder.errors import InputError
from icdcoder.infer.signals.base import (
    NoteContext,
    NoteSignal,
    ScoredCode,
    SignalSpec,
    TrainingNotes,
)
from icdcoder.io import read_text, write_json_or_remove
from icdcoder.spans.concepts import ConceptIndex
from icdcoder.spans.lexicon import smoothed_reliability

if TYPE_CHECKING:
    from icdcoder.infer.coder import SpanPredictor

#: how often each matched concept was right on the training notes
CONCEPTS_FILE = "concepts.json"


class ConceptSignal(NoteSignal):
    """The concept index of the ICD-10-CM titles (from its cache, or built on first use) and the counts of its matches
    on the training notes."""

    specs: ClassVar[tuple[SignalSpec, ...]] = (
        SignalSpec(
            "concept",
            "concept_weight",
            systems=("icd10cm",),
            grid=(0.0, 0.5, 1.0, 2.0, 4.0),
            description="weight of the ICD-10-CM codes whose content words a sentence of the note's English text holds",
        ),
    )

    files: ClassVar[tuple[str, ...]] = (CONCEPTS_FILE,)

    def __init__(self) -> None:
        #: code the concept index names -> (training notes whose English text matches it, those among them that carry it)
        self.counts: dict[str, tuple[int, int]] = {}
        self._index: ConceptIndex | None = None

    def index(self, coder: SpanPredictor) -> ConceptIndex:
        if self._index is None:
            self._index = ConceptIndex.load_or_build(coder.ontology)
        return self._index

    def fit(self, coder: SpanPredictor, training: TrainingNotes) -> None:
        self.counts = self.count(coder, training.english)

    def count(self, coder: SpanPredictor, english_notes: Sequence[Document]) -> dict[str, tuple[int, int]]:
        """Per code the concept index names, the notes whose text matches it, and how many of those carry it as the
        coder writes it."""
        counts: dict[str, tuple[int, int]] = {}
        for note in english_notes:
            gold = note.code_set("icd10cm")
            for code in {match.code for match in self.index(coder).matches(note.text)}:
                matched, right = counts.get(code, (0, 0))
                counts[code] = (matched + 1, right + (coder.coded_as(code, "icd10cm") in gold))
        return counts

    def reliability(self, code: str) -> float:
        """How often a match of ``code`` was right on the training notes, smoothed: (right + 1) / (matched + 2).

        A concept the training notes never matched scores 0.5; one that keeps matching notes that do not carry it
        (the "Infectious Diseases Unit" of a hospital -> B99 Other infectious disease) sinks towards 0.
        """
        matched, right = self.counts.get(code, (0, 0))
        return smoothed_reliability(right, matched)

    def items(self, coder: SpanPredictor, note: NoteContext) -> list[ScoredCode]:
        index = self.index(coder)
        return note.on_english(
            lambda english: [
                ScoredCode(
                    match.code, "icd10cm", {"concept": self.reliability(match.code)}, start=match.start, end=match.end
                )
                for match in index.matches(english)
            ]
        )

    def save(self, directory: Path) -> None:
        write_json_or_remove(
            directory / CONCEPTS_FILE, {code: list(counts) for code, counts in sorted(self.counts.items())}
        )

    def load(self, directory: Path) -> None:
        self.counts = load_concept_counts(directory / CONCEPTS_FILE)


def load_concept_counts(path: Path) -> dict[str, tuple[int, int]]:
    """``concepts.json`` (code -> [notes matched, notes right]); none when the coder folder has no such file."""
    if not path.is_file():
        return {}
    try:
        record = json.loads(read_text(path))
        counts = {str(code): (int(matched), int(right)) for code, (matched, right) in record.items()}
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as err:
        reason = str(err).splitlines()[0]
        raise InputError(f"malformed concept counts, expected code -> [matched, right] ({reason})", path=path) from None
    if any(not 0 <= right <= matched for matched, right in counts.values()):
        raise InputError("malformed concept counts: each needs 0 <= right <= matched", path=path)
    return counts
