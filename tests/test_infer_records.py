"""Predictions as JSON lines: records round-trip, malformed ones fail in one line, and coding a file resumes."""

from __future__ import annotations

import json

import pytest

from icdcoder.data.schema import Document, Evidence
from icdcoder.errors import InputError
from icdcoder.infer.records import (
    FINGERPRINT_SUFFIX,
    PARTIAL_SUFFIX,
    predict_to_jsonl,
    prediction_record,
    read_predictions,
)
from icdcoder.predictor import CodePrediction, DocumentPrediction, FitReport, Predictor

TEXT = "Dolor torácico e hipertensión arterial."


class _Interrupted(Exception):
    pass


class _CountingCoder(Predictor):
    """Codes I10 wherever "hipertensión" is; remembers what it was asked; can stop after some calls."""

    def __init__(self, calls_before_stop: int | None = None):
        self.asked: list[str] = []
        self.calls_left = calls_before_stop

    def fit(self, train, dev=None) -> FitReport:
        return FitReport()

    def predict(self, documents):
        if self.calls_left == 0:
            raise _Interrupted
        if self.calls_left is not None:
            self.calls_left -= 1
        self.asked.extend(doc.id for doc in documents)
        predictions = []
        for doc in documents:
            start = doc.text.find("hipertensión")
            codes = (
                [CodePrediction("I10", "icd10cm", 0.8, evidence=[Evidence(pieces=((start, start + 12),))])]
                if start >= 0
                else []
            )
            predictions.append(DocumentPrediction(doc.id, codes))
        return predictions

    def save(self, directory) -> None:
        pass

    @classmethod
    def load(cls, directory):
        return cls()


def _notes(count: int) -> list[Document]:
    return [Document(id=f"n{i}", text=TEXT if i % 2 else "Sin hallazgos.", language="es") for i in range(count)]


def _ids(notes: list[Document]) -> list[str]:
    return [note.id for note in notes]


def _partial(tmp_path, content: str, fingerprint: dict | None = None):
    """A partial file as an interrupted run leaves it, with the run's fingerprint beside it."""
    partial = tmp_path / ("pred.jsonl" + PARTIAL_SUFFIX)
    partial.write_text(content, encoding="utf-8")
    partial.with_name(partial.name + FINGERPRINT_SUFFIX).write_text(json.dumps(fingerprint or {}), encoding="utf-8")
    return partial


def test_a_record_round_trips_with_quotes_for_people_and_offsets_for_machines(tmp_path):
    prediction = DocumentPrediction(
        "n1",
        [
            CodePrediction("I10", "icd10cm", 0.8, evidence=[Evidence(pieces=((17, 38),))]),
            CodePrediction("R07.9", "icd10cm", 0.4, sentence_evidence=[Evidence(pieces=((0, 39),))]),
        ],
        {"invented_code": 2},
        candidates=[CodePrediction("E11.9", "icd10cm", 0.1), CodePrediction("I25.10", "icd10cm", 0.2)],
    )
    record = prediction_record(prediction, TEXT)
    assert record["codes"][0]["evidence"] == [{"start": 17, "end": 38, "quote": "hipertensión arterial"}]
    assert [c["code"] for c in record["candidates"]] == ["I25.10", "E11.9"]  # best first
    prediction.candidates.sort(key=lambda c: -c.score)
    path = tmp_path / "pred.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_predictions(path) == [prediction]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "n1", "codes": [{"code": "I10", "system": "icd10cm"}]}', "field 'codes.0.score'"),
        (
            '{"id": "n1", "codes": [{"code": "I10", "system": "icd10cm", "score": 1, "evidence": [{"start": -1, "end": 3}]}]}',
            "field 'codes.0.evidence.0.start'",
        ),
        ('{"id": "n1", "codes": [], "extra": 1}', "field 'extra'"),
        ('{"id": "n1"}', "field 'codes'"),
        ('{"id": "n1", "codes": [{"code": "I10", "system": "icd10cm", "score": NaN}]}', "finite"),
        (
            '{"id": "n1", "codes": [{"code": "I10", "system": "icd10cm", "score": 1, "evidence": [{"start": 9, "end": 3}]}]}',
            "ends before it starts",
        ),
        ('{"id": "n0", "codes": []}\n{"id": "n0", "codes": []}', "predicted twice"),
        ("[1, 2]", "expected a JSON object"),
        (
            '{"id": "n1", "codes": [{"code": "I10", "system": "icd10cm", "score": 1, "validity": {"billable": "maybe"}}]}',
            "field 'codes.0.validity.billable'",
        ),
        (
            '{"id": "n1", "codes": [{"code": "I10", "system": "icd10cm", "score": 1, '
            '"validity": {"billable": false, "problem": "wrong"}}]}',
            "field 'codes.0.validity.problem'",
        ),
        (
            '{"id": "n1", "codes": [{"code": "R07.9", "system": "icd10cm", "score": 1, "integral_to": "I21.9"}]}',
            "field 'codes.0.integral_to'",
        ),
    ],
)
def test_a_malformed_record_fails_in_one_line_naming_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "pred.jsonl"
    path.write_text('{"id": "ok", "codes": []}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=message) as caught:
        read_predictions(path)
    assert "\n" not in str(caught.value) and f"{path}:" in str(caught.value)


def test_an_interrupted_run_leaves_no_output_and_the_rerun_codes_only_the_rest(tmp_path):
    notes, out = _notes(10), tmp_path / "pred.jsonl"
    stopping = _CountingCoder(calls_before_stop=2)
    with pytest.raises(_Interrupted):
        predict_to_jsonl(stopping, notes, _ids(notes), out, chunk=3)
    assert not out.exists() and stopping.asked == ["n0", "n1", "n2", "n3", "n4", "n5"]
    rerun = _CountingCoder()
    assert predict_to_jsonl(rerun, iter(notes), _ids(notes), out, chunk=3) == {"coded": 4, "resumed": 6}
    assert rerun.asked == ["n6", "n7", "n8", "n9"]
    assert sorted(p.doc_id for p in read_predictions(out)) == sorted(note.id for note in notes)
    assert not (tmp_path / ("pred.jsonl" + PARTIAL_SUFFIX)).exists()


def test_a_line_cut_short_by_the_interruption_is_coded_again(tmp_path):
    notes, out = _notes(4), tmp_path / "pred.jsonl"
    whole = json.dumps(prediction_record(DocumentPrediction("n0"), notes[0].text))
    _partial(tmp_path, whole + "\n" + '{"id": "n1", "co')
    rerun = _CountingCoder()
    assert predict_to_jsonl(rerun, notes, _ids(notes), out, chunk=10) == {"coded": 3, "resumed": 1}
    assert rerun.asked == ["n1", "n2", "n3"] and len(read_predictions(out)) == 4


def test_a_whole_record_without_its_line_end_is_coded_again(tmp_path):
    notes, out = _notes(2), tmp_path / "pred.jsonl"
    _partial(tmp_path, json.dumps(prediction_record(DocumentPrediction("n0"), notes[0].text)))
    assert predict_to_jsonl(_CountingCoder(), notes, _ids(notes), out) == {"coded": 2, "resumed": 0}
    assert [p.doc_id for p in read_predictions(out)] == ["n0", "n1"]


def test_a_partial_file_of_other_notes_is_refused(tmp_path):
    _partial(tmp_path, json.dumps({"id": "elsewhere", "codes": []}) + "\n")
    with pytest.raises(InputError, match="not in the input .*; delete it"):
        predict_to_jsonl(_CountingCoder(), _notes(2), _ids(_notes(2)), tmp_path / "pred.jsonl")


def test_a_rerun_with_another_fingerprint_refuses_to_resume(tmp_path):
    notes, out = _notes(6), tmp_path / "pred.jsonl"
    with pytest.raises(_Interrupted):
        predict_to_jsonl(
            _CountingCoder(calls_before_stop=1),
            notes,
            _ids(notes),
            out,
            chunk=2,
            fingerprint={"language": "en", "model": "a"},
        )
    with pytest.raises(InputError, match="another language; rerun with the same"):
        predict_to_jsonl(
            _CountingCoder(), notes, _ids(notes), out, chunk=2, fingerprint={"language": "es", "model": "a"}
        )
    assert predict_to_jsonl(
        _CountingCoder(), notes, _ids(notes), out, chunk=2, fingerprint={"language": "en", "model": "a"}
    ) == {"coded": 4, "resumed": 2}
    assert not (tmp_path / ("pred.jsonl" + PARTIAL_SUFFIX + FINGERPRINT_SUFFIX)).exists()


def test_a_partial_file_without_its_fingerprint_is_refused(tmp_path):
    partial = tmp_path / ("pred.jsonl" + PARTIAL_SUFFIX)
    partial.write_text(json.dumps({"id": "n0", "codes": []}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="has no fingerprint"):
        predict_to_jsonl(_CountingCoder(), _notes(2), _ids(_notes(2)), tmp_path / "pred.jsonl")


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": "n1"}, "field 'codes'"),
        (
            {
                "id": "n1",
                "codes": [
                    {
                        "code": "I10",
                        "system": "icd10cm",
                        "score": 0.8,
                        "evidence": [{"start": 17, "end": 29, "quote": "hipertensiXn"}],
                    }
                ],
            },
            "does not quote the note",
        ),
        (
            {
                "id": "n1",
                "codes": [
                    {
                        "code": "I10",
                        "system": "icd10cm",
                        "score": 0.8,
                        "evidence": [{"start": 17, "end": 99, "quote": "x"}],
                    }
                ],
            },
            "does not quote the note",
        ),
    ],
)
def test_a_hand_edited_partial_record_is_refused_not_carried_into_the_output(tmp_path, record, message):
    _partial(tmp_path, json.dumps(record, ensure_ascii=False) + "\n")
    with pytest.raises(InputError, match=message) as caught:
        predict_to_jsonl(_CountingCoder(), _notes(3), _ids(_notes(3)), tmp_path / "pred.jsonl")
    assert ":1:" in str(caught.value)
    assert not (tmp_path / "pred.jsonl").exists()
