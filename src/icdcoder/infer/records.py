"""Predictions as JSON lines: one record per note, its codes best first, each with its evidence.

The format of ``icdcoder predict jsonl`` (notes in canonical JSONL, any predictor) and of ``icdcoder evaluate jsonl``::

    {"id": "note-1", "codes": [{"code": "I10", "system": "icd10cm", "score": 0.61,
      "assertion": "affirmed",
      "evidence": [{"start": 37, "end": 58, "quote": "hipertensión arterial", "traits": []}], "sentence_evidence": []}],
     "candidates": [{"code": "E11.9", "system": "icd10cm", "score": 0.08}], "dropped": {}}

``codes`` are the coder's decisions; ``candidates`` the codes it scored below its decision threshold, best first (the
rest of its ranking, which MAP reads: :mod:`icdcoder.predictor`).

Each span carries its assertion ``traits`` and each code its ``assertion`` (see :mod:`icdcoder.infer.profiles` for
the rule); under the ``clinical`` profile the record also has ``excluded``: the codes whose findings are negated,
uncertain, hypothetical or a relative's, each with its ``reason``. Every code also carries its ``validity`` (billable,
code-set release, problem and replacements, Excludes1 partners: :mod:`icdcoder.ontology.validity`), and under
``clinical`` a symptom code integral to a coded diagnosis its ``integral_to``. Only ``codes`` and ``candidates`` are
read back as predictions.
``quote`` is there for people; reading a file back takes the offsets. Coding many notes streams them (a chunk in memory
at a time) and is resumable: finished notes go to ``OUT.partial`` a chunk at a time, a rerun skips them, and the output
appears whole, by rename, at the end. ``OUT.partial.json`` holds the run's fingerprint (input, model, settings): a rerun
that differs in any of them refuses to resume rather than mix two runs in one file, and every record it takes over is
checked as the final output is (schema, offsets inside the note, quotes equal to the note's text).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import (
    Callable,
    Collection,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator

from icdcoder.assertion import Trait
from icdcoder.config import StrictModel
from icdcoder.data.schema import Document, Evidence
from icdcoder.errors import InputError, first_invalid_field
from icdcoder.infer.profiles import (
    SPAN_KINDS,
    Assertion,
    ExcludedAssertion,
    add_traits,
    apply_profile,
)
from icdcoder.io import atomic_write, read_jsonl
from icdcoder.ontology.validity import CodeValidity
from icdcoder.predictor import CodePrediction, DocumentPrediction, Predictor

#: suffix of the file that holds the finished notes of an unfinished ``predict_to_jsonl``
PARTIAL_SUFFIX = ".partial"
#: suffix (after ``PARTIAL_SUFFIX``) of the file that holds the unfinished run's fingerprint
FINGERPRINT_SUFFIX = ".json"


class SpanRecord(StrictModel):
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    quote: str = ""
    #: assertion traits (absent in records written before traits)
    traits: list[Trait] | None = None

    @model_validator(mode="after")
    def _not_reversed(self) -> SpanRecord:
        if self.end < self.start:
            raise ValueError(f"span ends before it starts ({self.start}-{self.end})")
        return self


class CandidateRecord(StrictModel):
    """A code scored below the decision threshold: part of the note's ranking, not coded."""

    code: str = Field(min_length=1)
    system: str = Field(min_length=1)
    score: float

    @field_validator("score")
    @classmethod
    def _finite(cls, score: float) -> float:
        if not math.isfinite(score):
            raise ValueError(f"score must be a finite number (got {score})")
        return score


class CodeRecord(CandidateRecord):
    """A coded code (a decision), with its evidence."""

    #: the code's title, in the records ``icdcoder code --json`` prints
    description: str = ""
    evidence: list[SpanRecord] = []
    sentence_evidence: list[SpanRecord] = []
    #: the code-level assertion (see :mod:`icdcoder.infer.profiles`)
    assertion: Assertion | None = None
    #: billable or not, code-set release, problem and replacements (see :mod:`icdcoder.ontology.validity`)
    validity: CodeValidity | None = None
    #: ``clinical`` profile: the coded diagnoses this symptom code is integral to (:mod:`icdcoder.ontology.symptoms`)
    integral_to: list[str] | None = None


class ExcludedRecord(CodeRecord):
    """A code the ``clinical`` profile left out of the code list, and why."""

    reason: ExcludedAssertion


class PredictionRecord(StrictModel):
    id: str = Field(min_length=1)
    codes: list[CodeRecord]
    #: the rest of the ranking, best first (records written before candidates have none)
    candidates: list[CandidateRecord] = []
    dropped: dict[str, int] = {}
    #: codes the ``clinical`` profile excluded (not predictions: reading a record back leaves them out)
    excluded: list[ExcludedRecord] = []


def evidence_spans(evidence: Sequence[Evidence], text: str) -> list[dict]:
    """Evidence as ``{start, end, quote}`` objects, the quote read from the note's ``text``."""
    return [{"start": e.start, "end": e.end, "quote": e.text_in(text)} for e in evidence]


def prediction_record(
    prediction: DocumentPrediction,
    text: str,
    describe: Callable[[str, str], str] | None = None,
    lang: str | None = None,
    profile: str = "codiesp",
) -> dict:
    """One note's prediction as a JSON-ready record; quotes are read from the note's ``text``; with ``describe``
    (code, system -> title), each code carries its ``description``. With ``lang`` (the note's language), spans carry
    their assertion ``traits`` and codes their ``assertion``, and the record follows ``profile`` (``clinical``:
    negated, uncertain, hypothetical and family codes move to ``excluded``); without it, no assertion is run."""
    codes = []
    for p in prediction.ranked():
        described = {"description": describe(p.code, p.system)} if describe is not None else {}
        codes.append(
            {
                "code": p.code,
                "system": p.system,
                "score": round(p.score, 6),
                **described,
                "evidence": evidence_spans(p.evidence, text),
                "sentence_evidence": evidence_spans(p.sentence_evidence, text),
            }
        )
    candidates = [
        {"code": p.code, "system": p.system, "score": round(p.score, 6)}
        for p in sorted(prediction.candidates, key=lambda p: -p.score)
    ]
    record = {"id": prediction.doc_id, "codes": codes, "candidates": candidates, "dropped": dict(prediction.dropped)}
    if lang is None:
        return record
    add_traits(codes, text, lang)
    return apply_profile(record, profile)


def _evidence(spans: list[SpanRecord]) -> list[Evidence]:
    return [Evidence(pieces=((span.start, span.end),)) for span in spans]


def prediction_from_record(record: dict, path: str | Path, line: int) -> DocumentPrediction:
    """A record read back; a malformed one fails in one line naming the file, line and field."""
    try:
        parsed = PredictionRecord.model_validate(record)
        codes = [
            CodePrediction(
                c.code,
                c.system,
                c.score,
                evidence=_evidence(c.evidence),
                sentence_evidence=_evidence(c.sentence_evidence),
            )
            for c in parsed.codes
        ]
    except ValidationError as err:
        field, message = first_invalid_field(err, whole="(record)")
        raise InputError(f"field '{field}': {message}", path=path, line=line) from None
    candidates = [CodePrediction(c.code, c.system, c.score) for c in parsed.candidates]
    return DocumentPrediction(parsed.id, codes, dict(parsed.dropped), candidates=candidates)


def read_prediction_records(path: str | Path) -> list[tuple[dict, DocumentPrediction]]:
    """Every record of a predictions file with what it predicts, each validated; a second record for one note is an
    error."""
    records: list[tuple[dict, DocumentPrediction]] = []
    seen: set[str] = set()
    for line, record in read_jsonl(path):
        prediction = prediction_from_record(record, path, line)
        if prediction.doc_id in seen:
            raise InputError(
                f"note '{prediction.doc_id}' predicted twice (a record occurs twice)", path=path, line=line
            )
        seen.add(prediction.doc_id)
        records.append((record, prediction))
    return records


def read_predictions(path: str | Path) -> list[DocumentPrediction]:
    """What every record of a predictions file predicts (see :func:`read_prediction_records`)."""
    return [prediction for _, prediction in read_prediction_records(path)]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_digest(folder: str | Path) -> str:
    """SHA-256 over a folder's files (relative path and bytes, in sorted order; hidden files left out): changes when
    any file the coder reads changes, re-tuning included."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ):
        digest.update(str(path.relative_to(folder)).encode("utf-8") + b"\0" + file_digest(path).encode("ascii"))
    return digest.hexdigest()


def documents_digest(documents: Iterable[Document]) -> str:
    """SHA-256 over notes' ids, languages, texts and translations (for inputs that are not one file)."""
    digest = hashlib.sha256()
    for document in documents:
        for part in (document.id, document.language, document.text, document.translation):
            digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()


class _Resumed:
    """What an interrupted run finished: each note's evidence spans, checked against the note when it streams by."""

    def __init__(self, partial: Path):
        self.partial = partial
        #: note id -> (line in the partial file, [(start, end, quote), ...])
        self.spans: dict[str, tuple[int, list[tuple[int, int, str]]]] = {}

    @classmethod
    def read(cls, partial: Path) -> _Resumed:
        """The whole records of ``partial``, each validated as final output is; a last line cut short by the
        interruption is dropped (the file is truncated before it)."""
        resumed = cls(partial)
        if not partial.is_file():
            return resumed
        kept = 0
        with partial.open("rb") as handle:
            for line, raw in enumerate(handle, start=1):
                if not raw.endswith(b"\n"):  # cut before its line end: the next record would be glued to it
                    break
                try:
                    record = json.loads(raw)
                except ValueError:
                    raise InputError("malformed JSON: delete it to start over", path=partial, line=line) from None
                if not isinstance(record, dict):
                    raise InputError("expected a JSON object: delete it to start over", path=partial, line=line)
                resumed._add(prediction_from_record(record, partial, line), record, line)
                kept += len(raw)
        os.truncate(partial, kept)
        return resumed

    def _add(self, prediction: DocumentPrediction, record: dict, line: int) -> None:
        if prediction.doc_id in self.spans:
            raise InputError(
                f"note '{prediction.doc_id}' occurs twice: delete it to start over", path=self.partial, line=line
            )
        spans = [
            (span["start"], span["end"], span.get("quote", ""))
            for code in [*record["codes"], *record.get("excluded", [])]
            for kind in SPAN_KINDS
            for span in code.get(kind, [])
        ]
        self.spans[prediction.doc_id] = (line, spans)

    def check(self, document: Document) -> None:
        """A finished note's spans must lie inside its text and quote it exactly (a hand-edited file is refused)."""
        line, spans = self.spans[document.id]
        for start, end, quote in spans:
            if end > len(document.text) or document.text[start:end] != quote:
                raise InputError(
                    f"note '{document.id}': the span {start}-{end} does not quote the note; delete the file to start over",
                    path=self.partial,
                    line=line,
                )


def _fingerprint_path(partial: Path) -> Path:
    return partial.with_name(partial.name + FINGERPRINT_SUFFIX)


def _check_or_start_fingerprint(partial: Path, fingerprint: dict) -> None:
    """Resume only a run with the same fingerprint; a new run records its own before it writes anything."""
    path = _fingerprint_path(partial)
    if not partial.is_file():
        with atomic_write(path) as handle:
            json.dump(fingerprint, handle, sort_keys=True)
        return
    if not path.is_file():
        raise InputError(
            f"has no fingerprint ({path.name}), so what wrote it is unknown; delete it to start over", path=partial
        )
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(
            "unreadable run fingerprint; delete it and the .partial file to start over", path=path
        ) from None
    differing = sorted(key for key in set(recorded) | set(fingerprint) if recorded.get(key) != fingerprint.get(key))
    if differing:
        raise InputError(
            f"was written by a run with another {', '.join(differing)}; rerun with the same input, model and settings "
            "to resume, or delete it to start over",
            path=partial,
        )


#: codes runs of notes elsewhere (a process pool, :mod:`icdcoder.infer.parallel`): ``(batches, profile)`` -> each
#: batch's size and the JSON lines of its records (:func:`batch_lines`), in the order of the batches
BatchEngine = Callable[[Iterator[list[Document]], str], Iterator[tuple[int, str]]]


def batch_lines(predictor: Predictor, batch: Sequence[Document], profile: str) -> str:
    """The JSON lines of the records of ``batch``, coded by ``predictor``: what every engine writes for it."""
    predictions = predictor.predict(batch)
    records = (prediction_record(p, d.text, lang=d.language, profile=profile) for p, d in zip(predictions, batch))
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def _closable(coded: Iterator[tuple[int, str]]) -> Generator[tuple[int, str], None, None]:
    """``coded`` as a generator: closing it (an interrupted run) closes ``coded`` too (PEP 380), whatever made it."""
    yield from coded


def _in_process(
    predictor: Predictor | Callable[[], Predictor], batches: Iterator[list[Document]], profile: str
) -> Iterator[tuple[int, str]]:
    if not isinstance(predictor, Predictor):
        predictor = predictor()
    for batch in batches:
        yield len(batch), batch_lines(predictor, batch, profile)


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
    predictor: Predictor | Callable[[], Predictor],
    documents: Iterable[Document],
    ids: Collection[str],
    out: str | Path,
    chunk: int = 64,
    report: Callable[[int, int], None] | None = None,
    fingerprint: dict | None = None,
    profile: str = "codiesp",
    engine: BatchEngine | None = None,
) -> dict:
    """Code ``documents`` (streamed; ``ids``: theirs, known up front) into the predictions file ``out``, resuming an
        interrupted run with the same ``fingerprint`` (what identifies the run: input, model, settings, ``profile``).
    Records carry assertion traits, read in each note's language, and follow ``profile``.

        ``predictor`` may be a function that loads it: it is called once the output and the earlier run are checked, so
        that a run that cannot resume fails before the model loads. ``report(done, total)`` is called after each chunk.
        Returns how many notes were coded now, and how many an earlier run had coded already. If coding fails, the notes
        finished so far stay in ``OUT.partial``. With ``engine``, the batches are coded there (``predictor`` unused), and
        the output is the same file.
    """
    out = Path(out)
    partial = out.with_name(out.name + PARTIAL_SUFFIX)
    out.parent.mkdir(parents=True, exist_ok=True)
    _check_or_start_fingerprint(partial, fingerprint or {})
    try:
        return _code_into(predictor, documents, ids, out, partial, chunk, report, profile, engine)
    except BaseException:
        if not partial.is_file() or partial.stat().st_size == 0:  # nothing finished: leave nothing behind
            partial.unlink(missing_ok=True)
            _fingerprint_path(partial).unlink(missing_ok=True)
        raise


def _code_into(
    predictor: Predictor | Callable[[], Predictor],
    documents: Iterable[Document],
    ids: Collection[str],
    out: Path,
    partial: Path,
    chunk: int,
    report: Callable[[int, int], None] | None,
    profile: str,
    engine: BatchEngine | None,
) -> dict:
    finished = _Resumed.read(partial)
    strangers = set(finished.spans) - set(ids)
    if strangers:
        raise InputError(
            f"holds notes that are not in the input (e.g. '{min(strangers)}'); delete it to start over", path=partial
        )
    resumed, done = len(finished.spans), len(finished.spans)
    batches = _batches(_checked_against(documents, finished), set(finished.spans), chunk)
    coded = _closable(engine(batches, profile) if engine is not None else _in_process(predictor, batches, profile))
    with partial.open("a", encoding="utf-8") as handle, contextlib.closing(coded):
        for size, lines in coded:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())
            done += size
            if report:
                report(done, len(ids))
    os.replace(partial, out)
    _fingerprint_path(partial).unlink(missing_ok=True)
    return {"coded": done - resumed, "resumed": resumed}


def _checked_against(documents: Iterable[Document], finished: _Resumed) -> Iterator[Document]:
    """The documents, each that an earlier run finished checked against its record on the way."""
    for document in documents:
        if document.id in finished.spans:
            finished.check(document)
        yield document
