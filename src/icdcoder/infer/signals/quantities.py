"""ICD-10-CM codes named by a measured value ("gestación de 27 semanas" -> Z3A.27) through the phrases learned on
training notes of the note's language (fused value ``quantity``; :class:`icdcoder.spans.quantities.QuantityTemplates`);
a match scores the phrase's reliability there, its evidence is the phrase around the value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from icdcoder.errors import InputError
from icdcoder.infer.signals.base import (
    NoteContext,
    NoteSignal,
    ScoredCode,
    SignalSpec,
    TrainingNotes,
)
from icdcoder.io import read_text, write_json_or_remove
from icdcoder.spans.quantities import QuantityTemplates, ontology_value_families

if TYPE_CHECKING:
    from icdcoder.infer.coder import SpanPredictor

#: the phrases around a measured value that name a code, per note language
QUANTITIES_FILE = "quantities.json"


class QuantitySignal(NoteSignal):
    """Value templates per note language: the training notes' own, and English ones from their English versions."""

    specs: ClassVar[tuple[SignalSpec, ...]] = (
        SignalSpec(
            "quantity",
            "quantity_weight",
            systems=("icd10cm",),
            grid=(0.0, 1.0, 2.0, 4.0),
            file=QUANTITIES_FILE,
            description="weight of the ICD-10-CM codes named by a measured value, through the learned phrases",
        ),
    )

    files: ClassVar[tuple[str, ...]] = (QUANTITIES_FILE,)

    def __init__(self) -> None:
        #: note language -> the phrases around a measured value that name a code, learned on training notes
        self.templates: dict[str, QuantityTemplates] = {}

    def fit(self, coder: SpanPredictor, training: TrainingNotes) -> None:
        families = ontology_value_families(coder.ontology)
        by_language = {training.language: training.documents, "en": training.english}
        self.templates = {
            language: QuantityTemplates.build(notes, families) for language, notes in by_language.items() if notes
        }

    def items(self, coder: SpanPredictor, note: NoteContext) -> list[ScoredCode]:
        templates = self.templates.get(note.document.language)
        if templates is None:
            return []
        return [
            ScoredCode(match.code, "icd10cm", {"quantity": match.reliability}, start=match.start, end=match.end)
            for match in templates.matches(note.document.text)
        ]

    def save(self, directory: Path) -> None:
        record = {language: templates.to_json() for language, templates in sorted(self.templates.items())}
        write_json_or_remove(directory / QUANTITIES_FILE, record)

    def load(self, directory: Path) -> None:
        self.templates = load_quantity_templates(directory / QUANTITIES_FILE)


def load_quantity_templates(path: Path) -> dict[str, QuantityTemplates]:
    """``quantities.json`` (note language -> :class:`QuantityTemplates` record); none when the file is absent."""
    if not path.is_file():
        return {}
    try:
        record = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(f"malformed value templates ({str(err).splitlines()[0]})", path=path) from None
    if not isinstance(record, dict):
        raise InputError("malformed value templates, expected language -> templates", path=path)
    return {str(language): QuantityTemplates.from_json(templates, str(path)) for language, templates in record.items()}
