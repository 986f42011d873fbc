"""Records as a FHIR R4 ``Bundle`` (type ``collection``) of ``Condition`` and ``Procedure`` resources.

- ICD-10-CM codes become ``Condition`` (code system ``http://hl7.org/fhir/sid/icd-10-cm``, category
  ``encounter-diagnosis``) with a ``verificationStatus``; ICD-10-PCS codes become ``Procedure`` (code system
  ``http://www.cms.gov/Medicare/Coding/ICD10``) whose ``status`` follows the same verdict.
- The verdict (:func:`verification`): a reviewer's decision first (accepted or added -> ``confirmed``, rejected ->
  ``refuted``), else the code's assertion traits (negated -> ``refuted``, uncertain or hypothetical ->
  ``provisional``, affirmed or historical -> ``confirmed``). Procedures: confirmed -> ``completed``, refuted ->
  ``not-done``, provisional -> ``unknown``.
- Codes about a relative (assertion ``family``) are not the patient's conditions and are left out, as are codes of
  other systems (ICD-9); :func:`bundle` counts what it left out.
- Each resource names its note (``identifier`` ``urn:icdcoder:note`` / ``note-id#code``) and quotes its evidence
  spans (``note``). Resource ids are UUIDs derived from the note id and code, so a re-export is identical.

The bundle is validated with ``fhir.resources`` (its R4B models: R4's Bundle, Condition and Procedure, unchanged in
the elements written here) before it is returned.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable

from icdcoder.errors import InputError

ICD10CM_URI = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10PCS_URI = "http://www.cms.gov/Medicare/Coding/ICD10"
VERIFICATION_URI = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CATEGORY_URI = "http://terminology.hl7.org/CodeSystem/condition-category"
NOTE_ID_URI = "urn:icdcoder:note"
#: the namespace of the resources' UUIDs
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/icdcoder/icdcoder/fhir")
PROCEDURE_STATUS = {"confirmed": "completed", "refuted": "not-done", "provisional": "unknown"}


def verification(code: dict, reason: str | None = None) -> str:
    """``confirmed``, ``refuted`` or ``provisional`` for a code record (``reason``: why it was excluded, if it was)."""
    if reason == "rejected":
        return "refuted"
    if code.get("review") in ("accepted", "added"):
        return "confirmed"
    assertion = code.get("assertion") or "affirmed"
    if assertion == "negated":
        return "refuted"
    if assertion in ("uncertain", "hypothetical"):
        return "provisional"
    return "confirmed"


def _evidence_notes(code: dict) -> list[dict]:
    spans = code.get("evidence") or code.get("sentence_evidence") or []
    return [{"text": f'evidence {span["start"]}-{span["end"]}: "{span.get("quote", "")}"'} for span in spans]


def _common(note_id: str, code: dict) -> dict:
    return {
        "id": str(uuid.uuid5(_NAMESPACE, f"{note_id}#{code['system']}#{code['code']}")),
        "identifier": [{"system": NOTE_ID_URI, "value": f"{note_id}#{code['code']}"}],
        "subject": {
            "identifier": {"system": NOTE_ID_URI, "value": note_id},
            "display": f"the patient of note {note_id}",
        },
        **({"note": notes} if (notes := _evidence_notes(code)) else {}),
    }


def _coding(code: dict, system_uri: str) -> dict:
    coding = {"system": system_uri, "code": code["code"]}
    if code.get("description"):
        coding["display"] = code["description"]
    return {"coding": [coding], "text": code.get("description") or code["code"]}


def condition(note_id: str, code: dict, verdict: str) -> dict:
    return {
        "resourceType": "Condition",
        **_common(note_id, code),
        "verificationStatus": {"coding": [{"system": VERIFICATION_URI, "code": verdict}]},
        "category": [{"coding": [{"system": CATEGORY_URI, "code": "encounter-diagnosis"}]}],
        "code": _coding(code, ICD10CM_URI),
    }


def procedure(note_id: str, code: dict, verdict: str) -> dict:
    return {
        "resourceType": "Procedure",
        **_common(note_id, code),
        "status": PROCEDURE_STATUS[verdict],
        "code": _coding(code, ICD10PCS_URI),
    }


def note_resources(record: dict, left_out: Counter) -> list[dict]:
    """The resources of one record; what cannot be one is counted in ``left_out`` by reason."""
    note_id = str(record["id"])
    resources = []
    for code, reason in [
        *((c, None) for c in record.get("codes", [])),
        *((c, c.get("reason")) for c in record.get("excluded", [])),
    ]:
        if reason == "family" or code.get("assertion") == "family":
            left_out["family"] += 1
        elif code["system"] == "icd10cm":
            resources.append(condition(note_id, code, verification(code, reason)))
        elif code["system"] == "icd10pcs":
            resources.append(procedure(note_id, code, verification(code, reason)))
        else:
            left_out[f"system {code['system']}"] += 1
    return resources


def bundle(records: Iterable[dict]) -> tuple[dict, dict[str, int]]:
    """The validated bundle of every record's codes, and the counts of codes left out by reason."""
    left_out: Counter = Counter()
    entries = [
        {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}
        for record in records
        for resource in note_resources(record, left_out)
    ]
    document = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    validate(document)
    return document, dict(left_out)


def validate(document: dict) -> None:
    """Check a bundle against the FHIR models; a failure names the first invalid element."""
    from fhir.resources.R4B.bundle import Bundle
    from pydantic import ValidationError

    from icdcoder.errors import first_invalid_field

    try:
        Bundle.model_validate(document)
    except ValidationError as err:
        field, message = first_invalid_field(err, whole="(bundle)")
        raise InputError(f"the FHIR bundle is not valid at {field}: {message}") from None
