"""Records as CodiEsp TSV (D.tsv, P.tsv, X.tsv) and as canonical JSONL training notes.

Only a record's ``codes`` are exported here (not ``excluded``: the profile's exclusions and a reviewer's rejections
are not codes of the note). The canonical JSONL is :class:`icdcoder.data.schema.Document` per line, each kept code a
gold code with its evidence spans (the note's own words; sentence evidence, a translated sentence's support, is not
an evidence span), so ``train sft``, ``train lexicons --jsonl`` and ``predict tune --jsonl`` read reviewed notes as
training data.
"""

from __future__ import annotations

from collections.abc import Iterable

from icdcoder.data.schema import CODE_SYSTEMS, Document, Evidence, GoldCode
from icdcoder.errors import InputError
from icdcoder.predictor import CodePrediction, DocumentPrediction


def _evidence(spans: list[dict]) -> list[Evidence]:
    return [Evidence(pieces=((span["start"], span["end"]),)) for span in spans]


def as_prediction(record: dict) -> DocumentPrediction:
    """A record's kept codes as the prediction the CodiEsp writers read (a reviewer's added code scores 1)."""
    codes = [
        CodePrediction(
            code["code"], code["system"], float(code.get("score") or 1.0), evidence=_evidence(code.get("evidence", []))
        )
        for code in record.get("codes", [])
    ]
    return DocumentPrediction(str(record["id"]), codes)


def codiesp_rows(records: Iterable[dict]) -> dict[str, list[str]]:
    """The lines of D.tsv, P.tsv and X.tsv for ``records``."""
    from icdcoder.evaluate.codiesp import submission_rows

    return submission_rows([as_prediction(record) for record in records])


def as_document(record: dict) -> Document:
    """A record with its note's ``text`` and ``language`` as a canonical training note; an evidence span outside the
    text or a code of an unknown system is a one-line error naming the note."""
    if "text" not in record or "language" not in record:
        raise InputError(f"note '{record.get('id')}': its text and language are needed for canonical JSONL")
    codes: dict[tuple[str, str], list[Evidence]] = {}
    for code in record.get("codes", []):
        if code["system"] not in CODE_SYSTEMS:
            raise InputError(f"note '{record['id']}': code {code['code']} has an unknown system '{code['system']}'")
        _check_quotes(record, code)
        codes.setdefault((code["code"], code["system"]), []).extend(_evidence(code.get("evidence", [])))
    try:
        return Document(
            id=str(record["id"]),
            text=record["text"],
            language=record["language"],
            translation=record.get("translation", ""),
            codes=tuple(
                GoldCode(code=code, system=system, evidence=tuple(dict.fromkeys(spans)))
                for (code, system), spans in codes.items()
            ),
            source="icdcoder-review",
        )
    except ValueError as err:
        raise InputError(f"note '{record['id']}': {err}") from None


def _check_quotes(record: dict, code: dict) -> None:
    """Each evidence span must quote the note: a record paired with another note's text is refused."""
    for span in code.get("evidence", []):
        if "quote" in span and record["text"][span["start"] : span["end"]] != span["quote"]:
            raise InputError(
                f"note '{record['id']}': the evidence {span['start']}-{span['end']} of {code['code']} does not quote the note's text"
            )


def canonical_lines(records: Iterable[dict]) -> list[dict]:
    """The JSON objects of the canonical JSONL, one per record."""
    return [as_document(record).model_dump(mode="json") for record in records]
