"""MDACE loader: annotations joined to a tiny made-up NOTEEVENTS (no real text)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icdcoder.data.mdace import load_mdace, read_mdace_splits
from icdcoder.data.prepare_cli import prepare_app
from icdcoder.data.schema import load_documents
from icdcoder.errors import InputError

HEADER = [
    "ROW_ID",
    "SUBJECT_ID",
    "HADM_ID",
    "CHARTDATE",
    "CHARTTIME",
    "STORETIME",
    "CATEGORY",
    "DESCRIPTION",
    "CGID",
    "ISERROR",
    "TEXT",
]
REPORT = "Admission for fever.\nHistory: hypertension and type 2 diabetes.\nIntubated on day 2."
RADIOLOGY = "CXR: right lower lobe pneumonia."


def annotation(text: str, quote: str, code: str, system: str) -> dict:
    begin = text.index(quote)
    return {
        "begin": begin,
        "end": begin + len(quote),
        "code": code,
        "code_system": system,
        "description": "",
        "type": "Human",
    }


def make_mdace(root: Path) -> tuple[Path, Path]:
    notes_path = root / "NOTEEVENTS.csv.gz"
    with gzip.open(notes_path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(HEADER)
        writer.writerow([7, 1, 101, "", "", "", "Nursing", "", "", "", "unrelated"])
        writer.writerow([25762, 1, 100197, "", "", "", "Discharge summary", "Report", "", "", REPORT])
        writer.writerow([30001, 1, 100197, "", "", "", "Radiology", "CHEST", "", "", RADIOLOGY])
    data = root / "mdace" / "Inpatient" / "ICD-10" / "1.0"
    data.mkdir(parents=True)
    admission = {
        "hadm_id": 100197,
        "comment": "",
        "notes": [
            {
                "note_id": 25762,
                "category": "Discharge summary",
                "description": "Report",
                "annotations": [
                    annotation(REPORT, "hypertension", "I10", "ICD-10-CM"),
                    annotation(REPORT, "type 2 diabetes", "e119", "ICD-10-CM"),
                    annotation(REPORT, "fever", "R50.9", "ICD-10-CM"),
                    annotation(REPORT, "Intubated", "0BH17EZ", "ICD-10-PCS"),
                ],
            },
            {
                "note_id": 30001,
                "category": "Radiology",
                "description": "CHEST",
                "annotations": [
                    annotation(RADIOLOGY, "pneumonia", "J18.9", "ICD-10-CM"),
                    annotation(RADIOLOGY, "right lower lobe pneumonia", "J18.9", "ICD-10-CM"),
                ],
            },
        ],
    }
    (data / "100197-ICD-10.json").write_text(json.dumps(admission))
    return root / "mdace", notes_path


def test_note_documents_carry_evidence_that_slices_the_text(tmp_path):
    mdace_dir, notes = make_mdace(tmp_path)
    documents = {doc.id: doc for doc in load_mdace(mdace_dir, notes)}
    assert set(documents) == {"Inpatient/ICD-10/1.0/100197-ICD-10#25762", "Inpatient/ICD-10/1.0/100197-ICD-10#30001"}
    report = documents["Inpatient/ICD-10/1.0/100197-ICD-10#25762"]
    assert report.text == REPORT and report.meta["hadm_id"] == "100197"
    assert report.meta["category"] == "Discharge summary"
    quotes = {gold.code: [ev.text_in(report.text) for ev in gold.evidence] for gold in report.codes}
    assert quotes == {
        "I10": ["hypertension"],
        "E11.9": ["type 2 diabetes"],
        "R50.9": ["fever"],
        "0BH17EZ": ["Intubated"],
    }
    assert {g.code: g.system for g in report.codes}["0BH17EZ"] == "icd10pcs"
    radiology = documents["Inpatient/ICD-10/1.0/100197-ICD-10#30001"]
    assert len(radiology.codes) == 1 and len(radiology.codes[0].evidence) == 2  # one code, two spans


def test_admission_documents_shift_offsets(tmp_path):
    mdace_dir, notes = make_mdace(tmp_path)
    (document,) = load_mdace(mdace_dir, notes, unit="admission")
    assert document.text == REPORT + "\n\n" + RADIOLOGY
    pneumonia = next(g for g in document.codes if g.code == "J18.9")
    assert [ev.text_in(document.text) for ev in pneumonia.evidence] == ["pneumonia", "right lower lobe pneumonia"]
    assert document.meta["note_ids"] == "25762,30001"


def test_splits_select_admissions(tmp_path):
    mdace_dir, notes = make_mdace(tmp_path)
    splits_dir = tmp_path / "splits"
    splits_dir.mkdir()
    for name, ids in {"train": "1\n", "val": "100197\n", "test": "2\n"}.items():
        (splits_dir / f"MDace-ev-{name}.csv").write_text(ids)
    splits = read_mdace_splits(splits_dir)
    assert {doc.split for doc in load_mdace(mdace_dir, notes, splits=splits)} == {"dev"}
    del splits[100197]
    assert load_mdace(mdace_dir, notes, splits=splits) == []


def _rewrite(mdace_dir: Path, change) -> None:
    path = next(mdace_dir.rglob("*.json"))
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_unknown_code_system_names_file(tmp_path):
    mdace_dir, notes = make_mdace(tmp_path)
    _rewrite(mdace_dir, lambda d: d["notes"][0]["annotations"][0].update(code_system="SNOMED"))
    with pytest.raises(InputError, match=r"100197-ICD-10\.json: field 'notes\[0\]\.annotations\[0\]\.code_system'"):
        load_mdace(mdace_dir, notes)


def test_offsets_outside_the_note_are_rejected(tmp_path):
    mdace_dir, notes = make_mdace(tmp_path)
    _rewrite(mdace_dir, lambda d: d["notes"][1]["annotations"][0].update(end=len(RADIOLOGY) + 1))
    with pytest.raises(InputError, match=r"note 30001 annotation 0 .*outside the note text"):
        load_mdace(mdace_dir, notes)


def test_missing_note_and_wrong_admission_are_rejected(tmp_path):
    mdace_dir, notes = make_mdace(tmp_path)
    _rewrite(mdace_dir, lambda d: d["notes"][1].update(note_id=99999))
    with pytest.raises(InputError, match=r"1 MDACE notes are not in NOTEEVENTS \(ROW_ID 99999"):
        load_mdace(mdace_dir, notes)
    _rewrite(mdace_dir, lambda d: d["notes"][1].update(note_id=7))
    with pytest.raises(InputError, match="note 7 belongs to admission 101"):
        load_mdace(mdace_dir, notes)


def test_malformed_json_and_wrong_field_type(tmp_path):
    mdace_dir, notes = make_mdace(tmp_path)
    path = next(mdace_dir.rglob("*.json"))
    path.write_text('{"hadm_id": "100197", "notes": []}')
    with pytest.raises(InputError, match="field 'hadm_id': expected int"):
        load_mdace(mdace_dir, notes)
    path.write_text("{not json")
    with pytest.raises(InputError, match=r"100197-ICD-10\.json:1: malformed JSON"):
        load_mdace(mdace_dir, notes)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"no MDACE \*\.json files"):
        load_mdace(empty, notes)
    with pytest.raises(InputError, match="MDACE folder not found"):
        load_mdace(tmp_path / "absent", notes)


def test_cli_prepare_mdace_writes_jsonl(tmp_path):
    mdace_dir, notes = make_mdace(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        prepare_app, ["mdace", "--mdace-dir", str(mdace_dir), "--noteevents", str(notes), "--out-dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["documents"] == 2 and summary["evidence_spans"] == 6
    assert len(load_documents(out / "all.jsonl")) == 2
