"""Coding profiles: negated, ruled-out and family findings leave the code list under ``clinical`` and stay, with their
traits, under ``codiesp``; records carry traits and read back; a resumed run cannot change profile."""

from __future__ import annotations

import json

import pytest
from catalogue import assert_one_line_error, run_main

from icdcoder.data.schema import Evidence
from icdcoder.errors import InputError
from icdcoder.infer.profiles import code_assertion
from icdcoder.infer.records import PredictionRecord, prediction_record, read_predictions
from icdcoder.predictor import CodePrediction, DocumentPrediction

#: every example of issue 29's "Why", hand-written; the findings are negated, ruled out or a relative's
SPANISH = (
    "Niega dolor torácico. Sin diabetes mellitus. Se descarta neumonía. Antecedentes familiares de cáncer de mama. "
    "Hipertensión arterial en tratamiento."
)
ENGLISH = "Patient denies chest pain. No evidence of pneumonia. Rule out MI. History of hypertension."
#: the codes the default coder gave those findings
NOT_BILLABLE = ("R07.9", "E11.9", "J18.9", "C50", "I21")


def _not_billable(code: str) -> bool:
    return code.startswith(NOT_BILLABLE)


def _code(tmp_path, text: str, lang: str, profile: str) -> dict:
    note = tmp_path / f"note_{lang}.txt"
    note.write_text(text, encoding="utf-8")
    result = run_main("code", str(note), "--json", "--lang", lang, "--profile", profile)
    assert result.status == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.parametrize(("text", "lang"), [(SPANISH, "es"), (ENGLISH, "en")], ids=["es", "en"])
def test_clinical_excludes_negated_ruled_out_and_family_findings_codiesp_keeps_them(tmp_path, text, lang):
    clinical = _code(tmp_path, text, lang, "clinical")
    codiesp = _code(tmp_path, text, lang, "codiesp")
    assert not [c["code"] for c in clinical["codes"] if _not_billable(c["code"])]
    excluded = {c["code"]: c for c in clinical["excluded"]}
    assert {code for code in excluded if _not_billable(code)}, (
        "the coder found none of the findings: the test says nothing"
    )
    for row in excluded.values():
        assert row["reason"] in ("negated", "uncertain", "hypothetical", "family") and row["reason"] == row["assertion"]
    assert "excluded" not in codiesp
    kept = {c["code"]: c for c in codiesp["codes"]}
    assert {code for code in kept if _not_billable(code)} == {code for code in excluded if _not_billable(code)}
    for code, row in kept.items():
        spans = row["evidence"] + row["sentence_evidence"]
        assert all("traits" in span for span in spans)
        if _not_billable(code):
            assert row["assertion"] == excluded[code]["reason"]
            assert any(excluded[code]["reason"] in span["traits"] for span in spans)
    # the affirmed and historical findings stay coded under both profiles
    assert {c["code"] for c in clinical["codes"]} == {
        code for code, row in kept.items() if row["assertion"] in ("affirmed", "historical")
    }


def test_table_lists_excluded_findings_apart(tmp_path):
    note = tmp_path / "note.txt"
    note.write_text(SPANISH, encoding="utf-8")
    result = run_main("code", str(note))
    assert result.status == 0, result.stderr[-2000:]
    assert "excluded (not coded)" in result.stdout and "negated" in result.stdout


def test_code_assertion_rule():
    assert code_assertion([]) == "affirmed"
    assert code_assertion([(0, 5, ["negated"]), (10, 15, [])]) == "affirmed"  # any affirmed mention: affirmed
    assert code_assertion([(0, 5, ["negated"]), (10, 15, ["historical"])]) == "historical"  # the least severe
    assert code_assertion([(0, 5, ["negated"]), (10, 15, ["uncertain"])]) == "uncertain"
    assert code_assertion([(0, 5, ["family", "historical"])]) == "family"  # a span's most severe trait
    assert (
        code_assertion([(8, 18, ["negated"]), (0, 20, [])]) == "negated"
    )  # the sentence around the mention is context


TEXT = "Niega dolor torácico. Hipertensión arterial."


def test_records_round_trip_with_traits_and_excluded_codes_are_not_predictions(tmp_path):
    prediction = DocumentPrediction(
        "n1",
        [
            CodePrediction("R07.9", "icd10cm", 0.6, evidence=[Evidence(pieces=((6, 20),))]),
            CodePrediction("I10", "icd10cm", 0.5, evidence=[Evidence(pieces=((22, 43),))]),
        ],
    )
    record = prediction_record(prediction, TEXT, lang="es", profile="clinical")
    assert [c["code"] for c in record["codes"]] == ["I10"] and record["codes"][0]["assertion"] == "affirmed"
    assert record["excluded"][0]["code"] == "R07.9" and record["excluded"][0]["reason"] == "negated"
    assert record["excluded"][0]["evidence"] == [
        {"start": 6, "end": 20, "quote": "dolor torácico", "traits": ["negated"]}
    ]
    path = tmp_path / "pred.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    parsed = PredictionRecord.model_validate(json.loads(path.read_text(encoding="utf-8")))
    assert parsed.excluded[0].evidence[0].traits == ["negated"] and parsed.codes[0].evidence[0].traits == []
    (read,) = read_predictions(path)
    assert [c.code for c in read.ranked()] == ["I10"]
    bad = {**record, "codes": [{**record["codes"][0], "evidence": [{"start": 22, "end": 43, "traits": ["maybe"]}]}]}
    path.write_text(json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="traits"):
        read_predictions(path)


def test_a_run_cannot_resume_under_another_profile(tmp_path):
    from icdcoder.infer.cli import MAX_NOTE_CHARS, run_fingerprint
    from icdcoder.infer.records import file_digest

    notes = tmp_path / "notes.jsonl"
    notes.write_text(
        json.dumps({"id": "a", "text": "Niega fiebre."}) + "\n" + json.dumps({"id": "b", "text": "Fiebre."}) + "\n"
    )
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.partial").write_text(json.dumps({"id": "a", "codes": []}) + "\n", encoding="utf-8")
    fingerprint = run_fingerprint(
        file_digest(notes), None, "span", "codiesp", language="es", max_note_chars=MAX_NOTE_CHARS
    )
    (tmp_path / "out.jsonl.partial.json").write_text(json.dumps(fingerprint), encoding="utf-8")
    args = ["predict", "jsonl", "--input", str(notes), "--out", str(out), "--lang", "es"]
    assert_one_line_error(run_main(*args), "out.jsonl.partial", "another profile")  # the default is clinical
    assert_one_line_error(run_main(*args, "--profile", "billing"), "--profile must be codiesp or clinical")


# --------------------------------------------------------------------------- validity and integral symptoms (part 4)

VALIDITY_TEXT = "Infarto agudo de miocardio con dolor torácico. Neumonía con fiebre. Fractura de fémur. Rx de tórax."


def _validity_prediction() -> DocumentPrediction:
    def at(code: str, system: str, phrase: str, score: float) -> CodePrediction:
        start = VALIDITY_TEXT.index(phrase)
        return CodePrediction(code, system, score, evidence=[Evidence(pieces=((start, start + len(phrase)),))])

    return DocumentPrediction(
        "v1",
        [
            at("I21.9", "icd10cm", "Infarto agudo de miocardio", 0.9),
            at("R07.9", "icd10cm", "dolor torácico", 0.8),
            at("J18", "icd10cm", "Neumonía", 0.7),
            at("R50.9", "icd10cm", "fiebre", 0.6),
            at("S72.001", "icd10cm", "Fractura de fémur", 0.5),
            at("BW03", "icd10pcs", "Rx de tórax", 0.4),
        ],
    )


def test_every_code_carries_its_validity_and_clinical_keeps_non_billable_codes_flagged(tmp_path):
    clinical = prediction_record(_validity_prediction(), VALIDITY_TEXT, lang="es", profile="clinical")
    rows = {c["code"]: c for c in clinical["codes"]}
    assert set(rows) == {"I21.9", "R07.9", "J18", "R50.9", "S72.001", "BW03"} and clinical["excluded"] == []
    assert rows["I21.9"]["validity"]["billable"] and rows["I21.9"]["validity"]["code_set"] == "ICD-10-CM 2024"
    assert rows["J18"]["validity"]["problem"] == "category" and rows["J18"]["validity"]["replacements"] == ["J18.9"]
    assert rows["S72.001"]["validity"]["problem"] == "missing_7th_character"
    assert rows["BW03"]["validity"]["problem"] == "partial_pcs"
    # symptoms integral to a coded diagnosis are flagged (J18 is a category, and still a diagnosis of pneumonia)
    assert rows["R07.9"]["integral_to"] == ["I21.9"] and rows["R50.9"]["integral_to"] == ["J18"]
    assert "integral_to" not in rows["I21.9"]
    path = tmp_path / "pred.jsonl"
    path.write_text(json.dumps(clinical, ensure_ascii=False) + "\n", encoding="utf-8")
    assert PredictionRecord.model_validate(clinical).codes[0].validity.billable
    assert {c.code for c in read_predictions(path)[0].ranked()} == set(rows)


def test_codiesp_profile_adds_validity_as_information_only():
    codiesp = prediction_record(_validity_prediction(), VALIDITY_TEXT, lang="es", profile="codiesp")
    assert [c["code"] for c in codiesp["codes"]] == [p.code for p in _validity_prediction().ranked()]
    assert all("validity" in c and "integral_to" not in c for c in codiesp["codes"])


def test_a_negated_diagnosis_makes_no_symptom_integral_and_excluded_codes_carry_validity():
    text = "Dolor torácico. Se descarta infarto agudo de miocardio."
    start = text.index("infarto")
    prediction = DocumentPrediction(
        "n",
        [
            CodePrediction("R07.9", "icd10cm", 0.8, evidence=[Evidence(pieces=((0, 14),))]),
            CodePrediction("I21", "icd10cm", 0.7, evidence=[Evidence(pieces=((start, start + 26),))]),
        ],
    )
    record = prediction_record(prediction, text, lang="es", profile="clinical")
    assert [c["code"] for c in record["codes"]] == ["R07.9"] and "integral_to" not in record["codes"][0]
    assert record["excluded"][0]["code"] == "I21" and record["excluded"][0]["validity"]["problem"] == "category"


def test_excludes1_pairs_are_flagged_on_the_coded_codes():
    text = "Diabetes mellitus tipo 1. Diabetes mellitus tipo 2."
    prediction = DocumentPrediction(
        "n",
        [
            CodePrediction("E10.9", "icd10cm", 0.8, evidence=[Evidence(pieces=((0, 24),))]),
            CodePrediction("E11.9", "icd10cm", 0.7, evidence=[Evidence(pieces=((26, 50),))]),
        ],
    )
    for profile in ("codiesp", "clinical"):
        rows = {c["code"]: c for c in prediction_record(prediction, text, lang="es", profile=profile)["codes"]}
        assert rows["E10.9"]["validity"]["excludes1"] == ["E11.9"] and rows["E11.9"]["validity"]["excludes1"] == [
            "E10.9"
        ]


def test_the_table_shows_validity_and_integral_flags(tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("Infarto agudo de miocardio con dolor torácico. Neumonía con fiebre.", encoding="utf-8")
    result = run_main("code", str(note))
    assert result.status == 0, result.stderr[-2000:]
    assert "validity" in result.stdout and "billable" in result.stdout and "integral to" in result.stdout
