"""Review: a coded note's codes as rows a coder accepts, rejects, changes or adds to, each change an audit row.

Every function takes an open session and leaves committing to the caller, so that a change and its audit row are
one transaction. A note's *export record* (:func:`export_record`) is its coder record with the review applied:
``codes`` holds what the coder kept (accepted, changed, added and not-yet-decided coded ones), each code with its
``review`` (``accepted``, ``rejected``, ``added`` or null); rejected codes and the profile's exclusions stay listed
under ``excluded`` with their ``reason`` (``rejected`` for a reviewer's rejection).

A code as the API shows it (:func:`code_view`) carries its ``validity`` as the review stands (:func:`code_validity`);
what an audit row records of it (:func:`code_state`) is a part of that view.

A note's *candidates* (the codes its coder scored below the threshold) are shown beside its codes
(:func:`candidate_views`) but are not codes of it: a reviewer takes one by adding it (:func:`add_code`), and an export
holds only what is in ``codes``.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from icdcoder.errors import InputError
from icdcoder.serve.db import AuditRow, Candidate, Note, NoteCode, as_utc

REVIEW_ACTIONS = ("accept", "reject", "change", "undo")
#: the columns of a code row the API shows, in order
VIEW_FIELDS = (
    "id",
    "code",
    "system",
    "description",
    "score",
    "origin",
    "decision",
    "original_code",
    "assertion",
    "reason",
    "evidence",
    "sentence_evidence",
)
#: the fields of the view an audit row records: everything a decision can change (and the evidence, as offsets)
AUDITED_FIELDS = ("code", "system", "origin", "decision", "original_code")
#: the system a retired ICD-9 code's replacements (its GEM targets) belong to
_REPLACEMENT_SYSTEM = {"icd9cm": "icd10cm"}


def code_view(row: NoteCode, validity: dict | None = None) -> dict:
    """A code as the API shows it; with its ``validity`` (see :func:`code_validity`) when given."""
    view = {name: getattr(row, name) for name in VIEW_FIELDS}
    return view if validity is None else {**view, "validity": validity}


def code_state(row: NoteCode) -> dict:
    """What an audit row records of a code: the audited fields of its view, its evidence as ``[start, end]`` pairs."""
    view = code_view(row)
    return {
        **{name: view[name] for name in AUDITED_FIELDS},
        "evidence": [[span["start"], span["end"]] for span in view["evidence"]],
    }


def code_validity(note: Note) -> dict[int, dict]:
    """Each code's ``validity`` (code row id -> :class:`~icdcoder.ontology.validity.CodeValidity` as a dict), as the
    review stands now: a changed or added code is checked as it is, and the Excludes1 partners are looked for among
    the codes kept (:func:`kept`), so that rejecting one of a pair clears the other's conflict. Besides the fields of
    ``code --json``, each names the system of its ``replacements`` (``replacement_system``) and their titles
    (``replacement_descriptions``), so that the page can offer them."""
    from icdcoder.infer.profiles import add_validity
    from icdcoder.serve.coding import describe

    kept_rows = [row for row in note.codes if kept(row)]
    other_rows = [row for row in note.codes if not kept(row)]
    kept_codes: list[dict] = [{"code": row.code, "system": row.system} for row in kept_rows]
    other_codes: list[dict] = [{"code": row.code, "system": row.system} for row in other_rows]
    add_validity(kept_codes, other_codes)
    validities: dict[int, dict] = {}
    for row, checked in zip([*kept_rows, *other_rows], [*kept_codes, *other_codes], strict=True):
        validity: dict = checked["validity"]
        system = _REPLACEMENT_SYSTEM.get(row.system, row.system)
        validity["replacement_system"] = system
        validity["replacement_descriptions"] = [describe(code, system) for code in validity["replacements"]]
        validities[row.id] = validity
    return validities


def audit(
    session: Session,
    note: Note,
    user: str,
    action: str,
    before: dict | None,
    after: dict | None,
    code_id: int | None = None,
) -> None:
    session.add(
        AuditRow(
            note_id=note.id,
            code_id=code_id,
            user=user,
            action=action,
            before=before,
            after=after,
            model_version=note.model_version,
        )
    )


def store_record(session: Session, note: Note, record: dict, model_version: str) -> None:
    """Save the coder's ``record`` on ``note``, its codes (kept and excluded) as review rows and its candidates (best
    first) as candidate rows; audited."""
    note.record = record
    note.model_version = model_version
    note.status = "coded"
    for origin, codes in (("coded", record["codes"]), ("excluded", record.get("excluded", []))):
        for code in codes:
            note.codes.append(
                NoteCode(
                    code=code["code"],
                    system=code["system"],
                    description=code.get("description", ""),
                    score=code["score"],
                    origin=origin,
                    assertion=code.get("assertion"),
                    reason=code.get("reason"),
                    evidence=code.get("evidence", []),
                    sentence_evidence=code.get("sentence_evidence", []),
                )
            )
    note.candidates.extend(
        Candidate(rank=rank, code=c["code"], system=c["system"], score=c["score"])
        for rank, c in enumerate(record.get("candidates", []))
    )
    audit(
        session,
        note,
        "icdcoder",
        "code",
        None,
        {"codes": [c["code"] for c in record["codes"]], "excluded": [c["code"] for c in record.get("excluded", [])]},
    )


class UnknownCode(LookupError):
    """A code id that is not one of the note's (the API answers 404)."""


def find_code(note: Note, code_id: int) -> NoteCode:
    for row in note.codes:
        if row.id == code_id:
            return row
    raise UnknownCode(f"note {note.id} has no code {code_id}")


def decide(
    session: Session,
    note: Note,
    code_id: int,
    action: str,
    user: str,
    new_code: str | None = None,
    system: str | None = None,
) -> NoteCode:
    """Accept, reject or change (to ``new_code`` of ``system``) one code, or undo the decision; audited."""
    from icdcoder.serve.coding import describe

    if action not in REVIEW_ACTIONS:
        raise InputError(f"field 'action': must be one of {', '.join(REVIEW_ACTIONS)} (got '{action}')")
    row = find_code(note, code_id)
    before = code_state(row)
    if action == "accept":
        row.decision = "accepted"
    elif action == "reject":
        row.decision = "rejected"
    elif action == "undo":
        row.decision = None
        if row.original_code is not None:
            row.code, row.original_code = row.original_code, None
            row.description = describe(row.code, row.system)
    else:
        canonical, system = checked_code(new_code, system or row.system)
        if row.original_code is None and canonical != row.code:
            row.original_code = row.code
        row.code, row.system, row.decision = canonical, system, "accepted"
        row.description = describe(canonical, system)
    audit(session, note, user, action, before, code_state(row), code_id=row.id)
    return row


def checked_code(code: str | None, system: str) -> tuple[str, str]:
    """``code`` in its canonical spelling; a code the ontology does not know in ``system`` is a one-line error."""
    from icdcoder.ontology import load_ontology
    from icdcoder.ontology.codes import check_system

    if not code:
        raise InputError("field 'code': a code is needed")
    check_system(system)
    found = load_ontology().resolve(code, (system,))
    if found is None:
        raise InputError(f"field 'code': unknown {system} code '{code}'")
    return found[0], system


def evidence_of(note: Note, start: int | None, end: int | None) -> list[dict]:
    """The selected text ``start``-``end`` as a code's evidence; none when neither is given."""
    if start is None and end is None:
        return []
    if start is None or end is None:
        raise InputError("field 'start'/'end': give both (the selected text) or neither (no evidence)")
    if not 0 <= start < end <= len(note.text):
        raise InputError(f"field 'start'/'end': {start}-{end} is not a span of the note ({len(note.text)} characters)")
    return [{"start": start, "end": end, "quote": note.text[start:end], "traits": []}]


def add_code(
    session: Session, note: Note, code: str, system: str, start: int | None, end: int | None, user: str
) -> NoteCode:
    """A code the coder missed (one of its candidates, or any other), with the selected text ``start``-``end`` as its
    evidence, or none; audited."""
    from icdcoder.serve.coding import describe

    canonical, system = checked_code(code, system)
    evidence = evidence_of(note, start, end)
    row = NoteCode(
        code=canonical,
        system=system,
        description=describe(canonical, system),
        origin="added",
        decision="accepted",
        evidence=evidence,
        sentence_evidence=[],
    )
    note.codes.append(row)
    session.flush()
    audit(session, note, user, "add", None, code_state(row), code_id=row.id)
    return row


def set_reviewed(session: Session, note: Note, reviewed: bool, user: str) -> None:
    """Sign a coded note off (or reopen it); audited."""
    if note.status not in ("coded", "reviewed"):
        raise InputError(f"note {note.id} is {note.status}, not coded: nothing to review")
    before = note.status
    note.status = "reviewed" if reviewed else "coded"
    audit(session, note, user, "reviewed" if reviewed else "reopen", {"status": before}, {"status": note.status})


def note_code_view(note: Note, row: NoteCode) -> dict:
    """One code of ``note`` as the API shows it, its validity among the note's codes included."""
    return code_view(row, code_validity(note)[row.id])


def note_summary(note: Note) -> dict:
    return {
        "id": note.id,
        "external_id": note.external_id,
        "language": note.language,
        "profile": note.profile,
        "status": note.status,
        "job_id": note.job_id,
        "created_at": as_utc(note.created_at).isoformat(),
        "n_codes": sum(1 for row in note.codes if row.origin != "excluded"),
    }


def candidate_views(note: Note) -> list[dict]:
    """The note's candidates that are not among its codes (a taken one is a code now), best first, each with its
    title."""
    from icdcoder.serve.coding import describe

    taken = {(row.code, row.system) for row in note.codes}
    return [
        {
            "rank": c.rank,
            "code": c.code,
            "system": c.system,
            "score": c.score,
            "description": describe(c.code, c.system),
        }
        for c in note.candidates
        if (c.code, c.system) not in taken
    ]


def note_view(note: Note) -> dict:
    """Everything the review page shows of a note."""
    validities = code_validity(note)
    return {
        **note_summary(note),
        "text": note.text,
        "model_version": note.model_version,
        "error": note.error,
        "codes": [code_view(row, validities[row.id]) for row in note.codes],
        "candidates": candidate_views(note),
    }


def kept(row: NoteCode) -> bool:
    """Whether a code is in the reviewed code list: not rejected, and either decided or coded (not excluded)."""
    if row.decision == "rejected":
        return False
    return row.decision == "accepted" or row.origin == "coded"


def _record_code(row: NoteCode) -> dict:
    review = "added" if row.origin == "added" else row.decision
    extra = {"original_code": row.original_code} if row.original_code else {}
    return {
        "code": row.code,
        "system": row.system,
        "score": row.score if row.score is not None else 1.0,
        "description": row.description,
        "evidence": row.evidence,
        "sentence_evidence": row.sentence_evidence,
        "assertion": row.assertion or "affirmed",
        "review": review,
        **extra,
    }


def export_record(note: Note) -> dict:
    """The note's record with the review applied (see the module docstring), plus its text and language."""
    codes, excluded = [], []
    for row in note.codes:
        if kept(row):
            codes.append(_record_code(row))
        else:
            excluded.append({**_record_code(row), "reason": "rejected" if row.decision == "rejected" else row.reason})
    return {
        "id": note.external_id,
        "text": note.text,
        "language": note.language,
        "codes": codes,
        "excluded": excluded,
        "dropped": (note.record or {}).get("dropped", {}),
        "reviewed": note.status == "reviewed",
    }


def reviewed_notes(session: Session) -> list[Note]:
    return list(session.scalars(select(Note).where(Note.status == "reviewed").order_by(Note.created_at, Note.id)))
