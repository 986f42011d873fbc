"""Predictions as JSON lines: one record per note, its codes best first, each with its evidence.

The format of ``icdcoder predict jsonl`` (notes in canonical JSONL, any predictor) and of ``icdcoder evaluate jsonl``::

    {"id": "note-1", "codes": [{"code": "I10", "system": "icd10cm", "score": 0.61,
      "evidence": [{"start": 37, "end": 58, "quote": "hipertensión arterial"}], "sentence_evidence": []}],
     "dropped": {}}

``quote`` is there for people; reading a file back takes the offsets. Coding many notes streams them (a chunk in memory
at a time) and is resumable: finished notes go to ``OUT.partial`` a chunk at a time, a rerun skips them, and the output
appears whole, by rename, at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path

from pydantic import Field, ValidationError

from icdcoder.config import StrictModel
from icdcoder.data.schema import Document, Evidence
from icdcoder.errors import InputError, first_invalid_field
from icdcoder.io import read_jsonl
from icdcoder.predictor import CodePrediction, DocumentPrediction, Predictor

#: suffix of the file that holds the finished notes of an unfinished ``predict_to_jsonl``
PARTIAL_SUFFIX = ".partial"


class SpanRecord(StrictModel):
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    quote: str = ""


class CodeRecord(StrictModel):
    code: str = Field(min_length=1)
    system: str = Field(min_length=1)
    score: float
    #: the code's title, in the records ``icdcoder code --json`` prints
    description: str = ""
    evidence: list[SpanRecord] = []
    sentence_evidence: list[SpanRecord] = []


class PredictionRecord(StrictModel):
    id: str = Field(min_length=1)
    codes: list[CodeRecord] = []
    dropped: dict[str, int] = {}


def evidence_spans(evidence: Sequence[Evidence], text: str) -> list[dict]:
    """Evidence as ``{start, end, quote}`` objects, the quote read from the note's ``text``."""
    return [{"start": e.start, "end": e.end, "quote": e.text_in(text)} for e in evidence]


def prediction_record(prediction: DocumentPrediction, text: str, describe: Callable[[str, str], str] | None = None) -> dict:
    """One note's prediction as a JSON-ready record; quotes are read from the note's ``text``; with ``describe``
    (code, system -> title), each code carries its ``description``."""
    codes = []
    for p in prediction.ranked():
        described = {"description": describe(p.code, p.system)} if describe is not None else {}
        codes.append({
            "code": p.code,
            "system": p.system,
            "score": round(p.score, 6),
            **described,
            "evidence": evidence_spans(p.evidence, text),
            "sentence_evidence": evidence_spans(p.sentence_evidence, text),
        })
    return {"id": prediction.doc_id, "codes": codes, "dropped": dict(prediction.dropped)}


def _evidence(spans: list[SpanRecord]) -> list[Evidence]:
    return [Evidence(pieces=((span.start, span.end),)) for span in spans]


def prediction_from_record(record: dict, path: str | Path, line: int) -> DocumentPrediction:
    """A record read back; a malformed one fails in one line naming the file, line and field."""
    try:
        parsed = PredictionRecord.model_validate(record)
        codes = [
            CodePrediction(c.code, c.system, c.score, evidence=_evidence(c.evidence), sentence_evidence=_evidence(c.sentence_evidence))
            for c in parsed.codes
        ]
    except ValidationError as err:
        field, message = first_invalid_field(err, whole="(record)")
        raise InputError(f"field '{field}': {message}", path=path, line=line) from None
    return DocumentPrediction(parsed.id, codes, dict(parsed.dropped))


def read_predictions(path: str | Path) -> list[DocumentPrediction]:
    """Every record of a predictions file; a second record for one note is an error."""
    predictions, seen = [], set()
    for line, record in read_jsonl(path):
        prediction = prediction_from_record(record, path, line)
        if prediction.doc_id in seen:
            raise InputError(f"note '{prediction.doc_id}' predicted twice", path=path, line=line)
        seen.add(prediction.doc_id)
        predictions.append(prediction)
    return predictions


def _finished_ids(partial: Path) -> set[str]:
    """The notes an interrupted run wrote whole; a last line cut short by the interruption is dropped."""
    if not partial.is_file():
        return set()
    finished, kept = set(), 0
    with partial.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):  # cut before its line end: the next record would be glued to it
                break
            try:
                record = json.loads(raw)
                finished.add(record["id"])
            except (ValueError, KeyError, TypeError):
                break
            kept += len(raw)
    os.truncate(partial, kept)
    return finished


def _batches(documents: Iterable[Document], skip: set[str], size: int) -> Iterator[list[Document]]:
    """Runs of ``size`` documents, leaving out those in ``skip``."""
    batch: list[Document] = []
    for doc in documents:
        if doc.id in skip:
            continue
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_to_jsonl(
    predictor: Predictor,
    documents: Iterable[Document],
    ids: Collection[str],
    out: str | Path,
    chunk: int = 64,
    report: Callable[[int, int], None] | None = None,
) -> dict:
    """Code ``documents`` (streamed; ``ids``: theirs, known up front) into the predictions file ``out``, resuming an
    interrupted run.

    ``report(done, total)`` is called after each chunk. Returns how many notes were coded now, and how many an
    earlier run had coded already.
    """
    out = Path(out)
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    finished = _finished_ids(partial)
    if finished - set(ids):
        raise InputError("holds notes that are not in the input; delete it to start over", path=partial)
    resumed, done = len(finished), len(finished)
    out.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("a", encoding="utf-8") as handle:
        for batch in _batches(documents, finished, chunk):
            predictions = predictor.predict(batch)
            handle.write("".join(json.dumps(prediction_record(p, d.text), ensure_ascii=False) + "\n" for p, d in zip(predictions, batch)))
            handle.flush()
            os.fsync(handle.fileno())
            done += len(batch)
            if report:
                report(done, len(ids))
    os.replace(partial, out)
    return {"coded": done - resumed, "resumed": resumed}
