"""``icdcoder export``: FHIR R4 bundles (validated with fhir.resources), CodiEsp TSV and canonical JSONL from a
predictions file; one-line errors and no half-written output."""

from __future__ import annotations

import json

import pytest
from catalogue import assert_one_line_error, run_main

from icdcoder.data.schema import load_documents
from icdcoder.export.fhir import bundle, verification

TEXT = "Niega dolor torácico. Hipertensión arterial. Posible neumonía. Madre con cáncer de mama. Radiografía de tórax."


def _span(phrase: str, traits: list[str]) -> dict:
    start = TEXT.index(phrase)
    return {"start": start, "end": start + len(phrase), "quote": phrase, "traits": traits}


def _code(code: str, system: str, phrase: str, traits: list[str], assertion: str, **extra) -> dict:
    return {
        "code": code,
        "system": system,
        "score": 0.5,
        "description": f"title of {code}",
        "evidence": [_span(phrase, traits)],
        "sentence_evidence": [],
        "assertion": assertion,
        **extra,
    }


RECORD = {
    "id": "n1",
    "codes": [
        _code("I10", "icd10cm", "Hipertensión arterial", [], "affirmed"),
        _code("BW03ZZZ", "icd10pcs", "Radiografía de tórax", [], "affirmed"),
    ],
    "dropped": {},
    "excluded": [
        _code("R07.9", "icd10cm", "dolor torácico", ["negated"], "negated", reason="negated"),
        _code("J18.9", "icd10cm", "neumonía", ["uncertain"], "uncertain", reason="uncertain"),
        _code("C50.919", "icd10cm", "cáncer de mama", ["family"], "family", reason="family"),
    ],
}


@pytest.fixture
def predictions(tmp_path):
    path = tmp_path / "predictions.jsonl"
    second = {**RECORD, "id": "n2", "excluded": []}
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in (RECORD, second)), encoding="utf-8")
    return path


def test_export_fhir_writes_a_valid_bundle_with_verification_from_traits(tmp_path, predictions):
    from fhir.resources.R4B.bundle import Bundle

    out = tmp_path / "bundle.json"
    result = run_main("export", "fhir", "--pred", predictions, "--out", out)
    assert result.status == 0, result.stderr
    assert json.loads(result.stdout) == {"conditions": 4, "procedures": 2, "left_out": {"family": 1}, "out": str(out)}
    document = json.loads(out.read_text(encoding="utf-8"))
    Bundle.model_validate(document)
    first = {
        e["resource"]["code"]["coding"][0]["code"]: e["resource"]
        for e in document["entry"]
        if e["resource"]["identifier"][0]["value"].startswith("n1#")
    }
    assert {
        code: r.get("verificationStatus", {}).get("coding", [{}])[0].get("code")
        for code, r in first.items()
        if r["resourceType"] == "Condition"
    } == {"I10": "confirmed", "R07.9": "refuted", "J18.9": "provisional"}
    procedure = first["BW03ZZZ"]
    assert procedure["resourceType"] == "Procedure" and procedure["status"] == "completed"
    assert procedure["code"]["coding"][0]["system"] == "http://www.cms.gov/Medicare/Coding/ICD10"
    assert first["I10"]["code"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/icd-10-cm",
        "code": "I10",
        "display": "title of I10",
    }
    assert first["I10"]["note"][0]["text"] == 'evidence 22-43: "Hipertensión arterial"'
    again = tmp_path / "again.json"
    assert run_main("export", "fhir", "--pred", predictions, "--out", again).status == 0
    assert again.read_text(encoding="utf-8") == out.read_text(encoding="utf-8")  # ids derive from note and code


def test_a_reviewers_decision_decides_over_the_traits():
    assert verification({"assertion": "negated", "review": "accepted"}) == "confirmed"
    assert verification({"assertion": "affirmed"}, reason="rejected") == "refuted"
    assert verification({"assertion": "hypothetical"}) == "provisional"
    assert verification({"assertion": "historical"}) == "confirmed"
    document, left_out = bundle(
        [
            {
                "id": "x",
                "codes": [{**RECORD["codes"][1], "review": "accepted"}],
                "excluded": [{**RECORD["codes"][1], "code": "0DT60ZZ", "reason": "rejected"}],
            }
        ]
    )
    assert [e["resource"]["status"] for e in document["entry"]] == ["completed", "not-done"] and left_out == {}


def test_export_codiesp_and_canonical_jsonl(tmp_path, predictions):
    out_dir = tmp_path / "tsv"
    result = run_main("export", "codiesp", "--pred", predictions, "--out-dir", out_dir)
    assert result.status == 0, result.stderr
    assert (out_dir / "D.tsv").read_text().splitlines() == ["n1\ti10", "n2\ti10"]
    assert (out_dir / "P.tsv").read_text().splitlines() == ["n1\tbw03zzz", "n2\tbw03zzz"]
    assert (out_dir / "X.tsv").read_text().splitlines()[0] == "n1\t22 43\tDIAGNOSTICO\ti10"
    notes = tmp_path / "notes.jsonl"
    notes.write_text(
        "".join(json.dumps({"id": i, "text": TEXT}, ensure_ascii=False) + "\n" for i in ("n1", "n2")), encoding="utf-8"
    )
    out = tmp_path / "train.jsonl"
    result = run_main("export", "jsonl", "--pred", predictions, "--notes", notes, "--out", out)
    assert result.status == 0, result.stderr
    documents = load_documents(out)  # what train sft / train lexicons --jsonl / predict tune --jsonl read
    assert [d.id for d in documents] == ["n1", "n2"] and documents[0].language == "es"
    assert {(g.code, g.system) for g in documents[0].codes} == {("I10", "icd10cm"), ("BW03ZZZ", "icd10pcs")}
    assert documents[0].codes[0].evidence[0].text_in(TEXT) == "Hipertensión arterial"


def test_export_errors_are_one_line_and_leave_no_output(tmp_path, predictions):
    out = tmp_path / "bundle.json"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(RECORD) + "\n" + json.dumps({"id": "n3", "codes": [{"code": "I10"}]}) + "\n", encoding="utf-8"
    )
    assert_one_line_error(run_main("export", "fhir", "--pred", bad, "--out", out), "bad.jsonl:2", "codes.0.system")
    assert_one_line_error(
        run_main("export", "fhir", "--pred", tmp_path / "none.jsonl", "--out", out), "none.jsonl", "file not found"
    )
    assert_one_line_error(run_main("export", "fhir", "--pred", predictions, "--out", predictions), "is also an input")
    twice = tmp_path / "twice.jsonl"
    twice.write_text((json.dumps(RECORD) + "\n") * 2, encoding="utf-8")
    assert_one_line_error(run_main("export", "fhir", "--pred", twice, "--out", out), "twice.jsonl:2", "occurs twice")
    other = tmp_path / "other.jsonl"
    other.write_text(
        json.dumps({"id": "n1", "text": "Otra nota distinta, sin nada que ver con la primera."}) + "\n",
        encoding="utf-8",
    )
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps(RECORD) + "\n", encoding="utf-8")
    assert_one_line_error(run_main("export", "jsonl", "--pred", one, "--notes", other, "--out", out), "does not quote")
    assert_one_line_error(
        run_main("export", "jsonl", "--pred", predictions, "--notes", other, "--out", out), "'n2'", "not in the notes"
    )
    assert not out.exists() and not list(tmp_path.glob(".bundle.json*"))
