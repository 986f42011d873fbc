"""MDACE (Cheng et al. 2023, "MIMIC Documents Annotated with Code Evidence") -> documents with evidence.

MDACE ships one JSON file per admission and version (``data/<Inpatient|Profee>/
<ICD-9|ICD-10>/1.0/<hadm_id>-<version>.json``)::

    {"hadm_id": 100197, "comment": "", "notes": [{"note_id": 25762, "category": "Discharge summary",
      "description": "Report", "annotations": [{"begin": 374, "end": 377, "code": "I61.8",
      "code_system": "ICD-10-CM", "description": "...", "type": "Human"}, ...]}]}

``begin``/``end`` are character offsets into ``NOTEEVENTS.TEXT`` of the note whose
``ROW_ID`` is ``note_id``; the text is not distributed, so :func:`load_mdace` joins
the annotations to the user's NOTEEVENTS (streamed; only the annotated notes are
kept). NOTEEVENTS is read with universal newlines, as MDACE's own
``inject-note-text.py`` does, so the offsets line up.

Documents: one per NOTE by default (``unit="note"``): the offsets need no
shifting and a note is what a coder reads; id ``<file path under mdace_dir
without .json>#<note_id>`` (unique even when ICD-9 and ICD-10 or Inpatient and
Profee trees are loaded together). ``unit="admission"`` joins an admission's
notes with a blank line and shifts the evidence accordingly. Several
annotations of one code become one :class:`GoldCode` with several evidences.
Codes are canonicalised; code systems map ``ICD-9-CM``/``ICD-9-PCS``/
``ICD-10-CM``/``ICD-10-PCS``; any other system is an input error naming the file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from icdcoder.data.mimic import SPLITS, iter_csv_rows, parse_int, read_split_files
from icdcoder.data.schema import Document, Evidence, GoldCode
from icdcoder.errors import InputError
from icdcoder.io import read_text
from icdcoder.ontology.codes import normalize_code

log = logging.getLogger(__name__)

MDACE_SYSTEMS: dict[str, str] = {
    "ICD-9-CM": "icd9cm",
    "ICD-9-PCS": "icd9pcs",
    "ICD-10-CM": "icd10cm",
    "ICD-10-PCS": "icd10pcs",
}
ADMISSION_SEPARATOR = "\n\n"
Unit = Literal["note", "admission"]


@dataclass(frozen=True)
class Annotation:
    begin: int
    end: int
    code: str
    system: str
    type: str


@dataclass(frozen=True)
class AnnotatedNote:
    note_id: int
    category: str
    description: str
    annotations: tuple[Annotation, ...]


@dataclass(frozen=True)
class AnnotatedAdmission:
    """One MDACE JSON file."""

    hadm_id: int
    notes: tuple[AnnotatedNote, ...]
    path: Path
    doc_id: str


def _field(record: dict, name: str, kind: type, path: Path, where: str) -> Any:
    value = record.get(name) if isinstance(record, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"field '{where}{name}': expected {kind.__name__}, got {type(value).__name__}", path=path)
    return value


def _parse_annotation(record: dict, path: Path, where: str) -> Annotation:
    begin = _field(record, "begin", int, path, where)
    end = _field(record, "end", int, path, where)
    code = _field(record, "code", str, path, where)
    code_system = _field(record, "code_system", str, path, where)
    system = MDACE_SYSTEMS.get(code_system.strip().upper())
    if system is None:
        raise InputError(
            f"field '{where}code_system': unknown code system {code_system!r} "
            f"(expected one of {', '.join(MDACE_SYSTEMS)})",
            path=path,
        )
    kind = record.get("type")
    return Annotation(begin, end, normalize_code(code, system), system, kind if isinstance(kind, str) else "")


def parse_mdace_file(path: Path, root: Path) -> AnnotatedAdmission:
    """Read and check one MDACE JSON file; every problem names the file and field."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(f"malformed JSON ({err.msg})", path=path, line=err.lineno) from None
    hadm_id = _field(data, "hadm_id", int, path, "")
    notes = []
    for n, note in enumerate(_field(data, "notes", list, path, "")):
        where = f"notes[{n}]."
        annotations = _field(note, "annotations", list, path, where)
        notes.append(
            AnnotatedNote(
                note_id=_field(note, "note_id", int, path, where),
                category=note.get("category") or "",
                description=note.get("description") or "",
                annotations=tuple(
                    _parse_annotation(a, path, f"{where}annotations[{i}].") for i, a in enumerate(annotations)
                ),
            )
        )
    doc_id = path.relative_to(root).with_suffix("").as_posix()
    return AnnotatedAdmission(hadm_id, tuple(notes), path, doc_id)


def read_mdace_dir(mdace_dir: str | Path) -> list[AnnotatedAdmission]:
    """Every ``*.json`` under ``mdace_dir`` (recursively), in path order."""
    root = Path(mdace_dir)
    if not root.is_dir():
        raise InputError("MDACE folder not found", path=root)
    files = sorted(root.rglob("*.json"))
    if not files:
        raise InputError("no MDACE *.json files found", path=root)
    return [parse_mdace_file(path, root) for path in files]


def read_note_texts(noteevents: str | Path, wanted: dict[int, int]) -> dict[int, str]:
    """Stream NOTEEVENTS keeping the text of the ``{note_id: hadm_id}`` notes asked for.

    A note filed under another admission than MDACE says is an input error (the
    wrong NOTEEVENTS file, or a different MIMIC release).
    """
    path = Path(noteevents)
    texts: dict[int, str] = {}
    rows = iter_csv_rows(path, ("ROW_ID", "HADM_ID", "TEXT"), universal_newlines=True)
    for line, (raw_row_id, raw_hadm, text) in rows:
        row_id = parse_int(raw_row_id, "ROW_ID", path, line)
        if row_id not in wanted:
            continue
        hadm_id = parse_int(raw_hadm, "HADM_ID", path, line)
        if hadm_id != wanted[row_id]:
            message = f"note {row_id} belongs to admission {hadm_id}, MDACE says {wanted[row_id]}"
            raise InputError(message, path=path, line=line)
        texts[row_id] = text
    return texts


def _note_gold(note: AnnotatedNote, text: str, offset: int, path: Path) -> dict[tuple[str, str], list[Evidence]]:
    """Evidence per ``(code, system)``; an offset outside the note is an input error."""
    gold: dict[tuple[str, str], list[Evidence]] = {}
    for i, annotation in enumerate(note.annotations):
        if not 0 <= annotation.begin <= annotation.end <= len(text):
            raise InputError(
                f"note {note.note_id} annotation {i} ({annotation.code}): offsets "
                f"[{annotation.begin}, {annotation.end}) fall outside the note text ({len(text)} chars)",
                path=path,
            )
        evidence = Evidence(pieces=((annotation.begin + offset, annotation.end + offset),))
        gold.setdefault((annotation.code, annotation.system), []).append(evidence)
    return gold


def _gold_codes(gold: dict[tuple[str, str], list[Evidence]]) -> tuple[GoldCode, ...]:
    return tuple(GoldCode(code=code, system=system, evidence=tuple(ev)) for (code, system), ev in gold.items())


def _note_documents(admission: AnnotatedAdmission, texts: dict[int, str], split: str) -> list[Document]:
    documents = []
    for note in admission.notes:
        text = texts[note.note_id]
        documents.append(
            Document(
                id=f"{admission.doc_id}#{note.note_id}",
                text=text,
                language="en",
                codes=_gold_codes(_note_gold(note, text, 0, admission.path)),
                source="mdace",
                split=split,
                meta={
                    "hadm_id": str(admission.hadm_id),
                    "note_id": str(note.note_id),
                    "category": note.category,
                    "description": note.description,
                },
            )
        )
    return documents


def _admission_document(admission: AnnotatedAdmission, texts: dict[int, str], split: str) -> Document:
    gold: dict[tuple[str, str], list[Evidence]] = {}
    pieces, offset = [], 0
    for note in admission.notes:
        text = texts[note.note_id]
        for key, evidences in _note_gold(note, text, offset, admission.path).items():
            gold.setdefault(key, []).extend(evidences)
        pieces.append(text)
        offset += len(text) + len(ADMISSION_SEPARATOR)
    return Document(
        id=admission.doc_id,
        text=ADMISSION_SEPARATOR.join(pieces),
        language="en",
        codes=_gold_codes(gold),
        source="mdace",
        split=split,
        meta={"hadm_id": str(admission.hadm_id), "note_ids": ",".join(str(n.note_id) for n in admission.notes)},
    )


def load_mdace(
    mdace_dir: str | Path,
    noteevents_path: str | Path,
    *,
    unit: Unit = "note",
    splits: dict[int, str] | None = None,
) -> list[Document]:
    """MDACE annotations joined to the user's NOTEEVENTS -> documents with evidence.

    ``splits`` (``{hadm_id: split}``, see :func:`read_mdace_splits`) sets each
    document's ``split`` and leaves out admissions it does not list.
    """
    if unit not in ("note", "admission"):
        raise InputError(f"unit must be 'note' or 'admission', got {unit!r}")
    admissions = read_mdace_dir(mdace_dir)
    if splits is not None:
        admissions = [a for a in admissions if a.hadm_id in splits]
    wanted = {note.note_id: a.hadm_id for a in admissions for note in a.notes}
    texts = read_note_texts(noteevents_path, wanted)
    missing = sorted(set(wanted) - set(texts))
    if missing:
        shown = ", ".join(map(str, missing[:5]))
        raise InputError(f"{len(missing)} MDACE notes are not in NOTEEVENTS (ROW_ID {shown}...)", path=noteevents_path)
    documents: list[Document] = []
    for admission in admissions:
        split = splits.get(admission.hadm_id, "") if splits is not None else ""
        if unit == "note":
            documents.extend(_note_documents(admission, texts, split))
        else:
            documents.append(_admission_document(admission, texts, split))
    log.info("MDACE: %d admissions -> %d documents", len(admissions), len(documents))
    return documents


def read_mdace_splits(splits_dir: str | Path, prefix: str = "MDace-ev") -> dict[int, str]:
    """MDACE split files ``<prefix>-{train,val,test}.csv`` (one hadm_id a line) -> ``{hadm_id: split}``."""
    folder = Path(splits_dir)
    names = {"train": "train", "dev": "val", "test": "test"}
    return read_split_files({split: folder / f"{prefix}-{names[split]}.csv" for split in SPLITS})


def documents_by_split(documents: Iterable[Document]) -> dict[str, list[Document]]:
    grouped: dict[str, list[Document]] = {}
    for document in documents:
        grouped.setdefault(document.split or "all", []).append(document)
    return grouped
