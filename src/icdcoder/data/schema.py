"""The canonical document schema every loader produces and every coder consumes.

A :class:`Document` is one clinical note with its gold codes. Each code names
its code system and carries zero or more :class:`Evidence` spans; a span is one
or more character pieces ``[start, end)`` into ``Document.text`` (CodiEsp-X has
discontinuous references such as ``2787 2801;2810 2823``).

Codes are stored in the ontology's canonical form (see
``icdcoder.ontology.normalize_code``): upper case, dotted for ICD-10-CM and
ICD-9-CM (``N44.8``, ``250.00``, ``38.93``), undotted for ICD-10-PCS
(``BW03ZZZ``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from icdcoder.errors import InputError, first_invalid_field
from icdcoder.io import read_jsonl, write_jsonl

CodeSystem = Literal["icd10cm", "icd10pcs", "icd9cm", "icd9pcs"]
CODE_SYSTEMS: tuple[str, ...] = ("icd10cm", "icd10pcs", "icd9cm", "icd9pcs")
DIAGNOSIS_SYSTEMS = frozenset({"icd10cm", "icd9cm"})


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Evidence(_Frozen):
    """Text supporting a code: one or more ``(start, end)`` character pieces."""

    pieces: tuple[tuple[int, int], ...]

    @field_validator("pieces")
    @classmethod
    def _pieces_are_intervals(cls, pieces: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
        if not pieces:
            raise ValueError("evidence needs at least one piece")
        for start, end in pieces:
            if start < 0 or end < start:
                raise ValueError(f"bad piece ({start}, {end})")
        return pieces

    @property
    def start(self) -> int:
        return min(start for start, _ in self.pieces)

    @property
    def end(self) -> int:
        return max(end for _, end in self.pieces)

    def text_in(self, text: str) -> str:
        """The evidence as it reads in ``text``, pieces joined by a space."""
        return " ".join(text[start:end] for start, end in self.pieces)


class GoldCode(_Frozen):
    """One gold code of a document, with its system and evidence (possibly none)."""

    code: str
    system: CodeSystem
    evidence: tuple[Evidence, ...] = ()

    @property
    def is_diagnosis(self) -> bool:
        return self.system in DIAGNOSIS_SYSTEMS


class Document(_Frozen):
    """One clinical note with its gold codes."""

    id: str
    text: str
    language: str
    codes: tuple[GoldCode, ...] = ()
    source: str = ""
    split: str = ""
    meta: dict[str, str] = {}
    #: the note in English, when the dataset ships a translation (CodiEsp does); evidence offsets refer to ``text``
    translation: str = ""

    @model_validator(mode="after")
    def _evidence_inside_text(self) -> Document:
        for gold in self.codes:
            for evidence in gold.evidence:
                if evidence.end > len(self.text):
                    raise ValueError(
                        f"evidence {evidence.pieces} of {gold.code} ends past the text ({len(self.text)} chars)"
                    )
        return self

    def code_set(self, system: str | None = None) -> set[str]:
        """The document's gold codes, optionally of one system only."""
        return {gold.code for gold in self.codes if system is None or gold.system == system}

    def diagnoses(self) -> set[str]:
        return {gold.code for gold in self.codes if gold.is_diagnosis}

    def procedures(self) -> set[str]:
        return {gold.code for gold in self.codes if not gold.is_diagnosis}


def save_documents(path: str | Path, documents: Iterable[Document]) -> None:
    """Write documents as JSONL (atomically)."""
    write_jsonl(path, (doc.model_dump(mode="json") for doc in documents))


#: a use-specific check of a document: raises ``ValueError`` whose message names the field
DocumentCheck = Callable[[Document], None]


def iter_documents(
    path: str | Path, defaults: dict | None = None, check: DocumentCheck | None = None
) -> Iterator[Document]:
    """Read documents from JSONL; a bad record raises an error naming its line and field.

    ``defaults``: values for fields a record leaves out (``{"language": "en"}`` for notes that name none); ``check``:
    what the reader needs beyond the schema (coding needs a language the coder reads, say)."""
    for number, record in read_jsonl(path):
        try:
            document = Document.model_validate({**(defaults or {}), **record})
            if check is not None:
                check(document)
        except ValidationError as err:
            field, message = first_invalid_field(err, whole="(record)")
            raise InputError(f"field '{field}': {message}", path=path, line=number) from None
        except ValueError as err:
            raise InputError(str(err), path=path, line=number) from None
        yield document


def document_ids(path: str | Path, defaults: dict | None = None, check: DocumentCheck | None = None) -> list[str]:
    """The ids of a JSONL file's documents, every record validated on the way (one pass, one document in memory at a
    time); an id used twice is an error."""
    ids: list[str] = []
    seen: set[str] = set()
    for document in iter_documents(path, defaults, check):
        if document.id in seen:
            raise InputError(f"note id '{document.id}' occurs twice", path=path)
        seen.add(document.id)
        ids.append(document.id)
    return ids


def load_documents(path: str | Path, defaults: dict | None = None) -> list[Document]:
    return list(iter_documents(path, defaults))
