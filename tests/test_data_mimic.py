"""MIMIC-III / MIMIC-IV loaders on tiny made-up files in the real column schema (no real text)."""

from __future__ import annotations

import csv
import gzip
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icdcoder.data.mimic import (
    AdmissionCodes,
    iter_csv_rows,
    iterative_stratification,
    prepare_mimic3,
    prepare_mimic4,
    read_hadm_ids,
    stratified_patient_splits,
    top_codes,
)
from icdcoder.data.prepare_cli import prepare_app
from icdcoder.data.schema import load_documents
from icdcoder.errors import InputError

NOTE_HEADER_III = [
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
CODE_HEADER_III = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "SEQ_NUM", "ICD9_CODE"]
NOTE_HEADER_IV = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]
CODE_HEADER_IV = ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"]
RARE_CODES = [f"{i:03d}" for i in range(1, 56)]  # 55 distinct codes of one admission


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    """A gzip CSV quoted like the MIMIC releases."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def note3(row_id, subject, hadm, category, description, text, date="2150-01-01"):
    return [row_id, subject, hadm, date, "", "", category, description, "", "", text]


def make_mimic3(root: Path) -> tuple[Path, Path]:
    mimic, splits = root / "mimic3", root / "splits"
    notes = [
        note3(10, 1, 100, "Discharge summary", "Report", 'Report of 100.\nHTN, "quoted", commas, ok.'),
        note3(11, 2, 200, "Discharge summary", "Report", "Report of 200."),
        note3(13, 1, 100, "Nursing", "Nursing Progress Note", "not a discharge summary"),
        note3(14, 3, 300, "Discharge summary", "Report", "Report of 300 (no codes)."),
        note3(15, 9, "", "Discharge summary", "Report", "no admission id"),
        note3(16, 5, 500, "Discharge summary", "Report", "Report of 500 (not in any split)."),
        note3(17, 6, 600, "Discharge summary", "Report", "Report of 600."),
        note3(12, 1, 100, "Discharge summary", "Addendum", "Addendum of 100.", date="2150-01-03"),
    ]
    write_csv(mimic / "NOTEEVENTS.csv.gz", NOTE_HEADER_III, notes)
    diagnoses = [
        [1, 1, 100, 2, "4019"],
        [2, 1, 100, 1, "E8790"],
        [3, 1, 100, 3, "25000"],
        [4, 1, 100, 4, "4019"],
        [5, 2, 200, 1, "4019"],
        [6, 2, 200, 2, "V5861"],
        [7, 4, 400, 1, "4019"],
        [8, 5, 500, 1, "4019"],
        [9, 2, 200, "", ""],
    ]
    diagnoses += [[100 + i, 6, 600, i + 1, code] for i, code in enumerate(RARE_CODES)]
    write_csv(mimic / "DIAGNOSES_ICD.csv.gz", CODE_HEADER_III, diagnoses)
    write_csv(mimic / "PROCEDURES_ICD.csv.gz", CODE_HEADER_III, [[1, 1, 100, 1, "3893"], [2, 2, 200, 1, "9604"]])
    splits.mkdir(parents=True)
    for name, ids in {
        "train_full": [100, 400, 600],
        "dev_full": [200],
        "test_full": [300],
        "train_50": [600],
        "dev_50": [200],
        "test_50": [100],
    }.items():
        (splits / f"{name}_hadm_ids.csv").write_text("".join(f"{i}\n" for i in ids))
    return mimic, splits


def by_id(path: Path) -> dict:
    return {doc.id: doc for doc in load_documents(path)}


def test_mimic3_joins_reports_and_addenda_and_normalises_codes(tmp_path):
    mimic, splits = make_mimic3(tmp_path)
    summary = prepare_mimic3(mimic, splits, tmp_path / "out")
    train = by_id(tmp_path / "out" / "mimic3_full" / "train.jsonl")
    dev = by_id(tmp_path / "out" / "mimic3_full" / "dev.jsonl")
    assert set(train) == {"100", "600"} and set(dev) == {"200"}
    assert load_documents(tmp_path / "out" / "mimic3_full" / "test.jsonl") == []  # 300 has no codes
    doc = train["100"]
    assert doc.text == 'Report of 100.\nHTN, "quoted", commas, ok.\n\nAddendum of 100.'
    assert [(g.code, g.system) for g in doc.codes] == [
        ("E879.0", "icd9cm"),
        ("401.9", "icd9cm"),
        ("250.00", "icd9cm"),
        ("38.93", "icd9pcs"),
    ]  # diagnoses in SEQ_NUM order, de-duplicated, then procedures
    assert doc.meta["note_ids"] == "10,12" and doc.meta["subject_id"] == "1" and doc.split == "train"
    assert dev["200"].code_set() == {"401.9", "V58.61", "96.04"}
    assert summary["counts"]["mimic3_full/not_in_split_files"] == 1  # admission 500
    assert summary["counts"]["admissions_with_notes_and_codes"] == 4  # 100, 200, 500, 600
    assert json.loads((tmp_path / "out" / "mimic3_summary.json").read_text())["top50"] == summary["top50"]


def test_mimic3_top50_is_most_frequent_over_full_data_and_filters_50_splits(tmp_path):
    mimic, splits = make_mimic3(tmp_path)
    summary = prepare_mimic3(mimic, splits, tmp_path / "out")
    # 401.9 is on three labelled admissions (100, 200, 500); every other code on one: ties by code.
    assert summary["top50"] == ["401.9"] + RARE_CODES[:49]
    out = tmp_path / "out" / "mimic3_50"
    assert by_id(out / "test.jsonl")["100"].code_set() == {"401.9"}
    assert by_id(out / "dev.jsonl")["200"].code_set() == {"401.9"}
    assert by_id(out / "train.jsonl")["600"].code_set() == set(RARE_CODES[:49])


def test_mimic3_paper_top50_drops_admissions_without_listed_codes(tmp_path):
    mimic, splits = make_mimic3(tmp_path)
    summary = prepare_mimic3(mimic, splits, tmp_path / "out", paper_top50=True)
    assert len(summary["top50"]) == 50 and summary["top50_source"] == "caml_paper"
    out = tmp_path / "out" / "mimic3_50"
    assert by_id(out / "test.jsonl")["100"].code_set() == {"401.9", "250.00", "38.93"}
    assert load_documents(out / "train.jsonl") == []
    assert summary["counts"]["mimic3_50/dropped_without_codes"] == 1


def test_top_codes_breaks_ties_by_code():
    from collections import Counter

    assert top_codes(Counter({"b": 2, "a": 2, "c": 3, "d": 1}), k=3) == ["c", "a", "b"]


def make_mimic4(root: Path) -> tuple[Path, Path]:
    note_dir, hosp = root / "note", root / "hosp"
    notes = [
        ["1-DS-1", 1, 11, "DS", 1, "2180-01-01 00:00:00", "", "Note one, hypertension."],
        ["1-DS-2", 1, 11, "DS", 2, "2180-01-01 00:00:00", "", "Note one, hypertension."],  # duplicate text
        ["2-DS-1", 2, 21, "DS", 1, "", "", "Note two."],
        ["3-DS-1", 3, 31, "DS", 1, "", "", "   "],  # empty text
        ["4-DS-1", 4, 41, "DS", 1, "", "", "Uncoded admission."],
        ["5-DS-1", 5, 51, "DS", 1, "", "", "ICD-10 only."],
        ["1-DS-3", 1, 12, "DS", 1, "", "", "Second stay of patient 1."],
    ]
    write_csv(note_dir / "discharge.csv.gz", NOTE_HEADER_IV, notes)
    diagnoses = [
        [1, 11, 1, "4019", 9],
        [1, 11, 2, "0389", 9],
        [2, 21, 1, "4019", 9],
        [3, 31, 1, "4019", 9],
        [1, 12, 1, "4019", 9],
        [1, 11, 3, "I10", 10],
        [5, 51, 1, "I10", 10],
        [2, 21, 2, "E119", 10],
    ]
    write_csv(hosp / "diagnoses_icd.csv.gz", CODE_HEADER_IV, diagnoses)
    write_csv(hosp / "procedures_icd.csv.gz", CODE_HEADER_IV, [[2, 21, 1, "9604", 9], [5, 51, 1, "0BH17EZ", 10]])
    return note_dir, hosp


def all_splits(folder: Path) -> dict:
    return {doc.id: doc for split in ("train", "dev", "test") for doc in load_documents(folder / f"{split}.jsonl")}


def test_mimic4_applies_edin_filters(tmp_path):
    note_dir, hosp = make_mimic4(tmp_path)
    summary = prepare_mimic4(note_dir, hosp, tmp_path / "out", min_code_count=2)
    counts = summary["counts"]
    assert counts["duplicate_notes"] == 1 and counts["notes_without_admission_or_text"] == 1
    assert counts["notes_without_codes"] == 1
    icd9, icd10 = all_splits(tmp_path / "out" / "mimic4_icd9"), all_splits(tmp_path / "out" / "mimic4_icd10")
    assert set(icd9) == {"1-DS-1", "2-DS-1", "1-DS-3"}
    assert all(doc.code_set() == {"401.9"} for doc in icd9.values())  # 038.9 and 96.04 are on one note only
    assert set(icd10) == {"1-DS-1", "5-DS-1"}  # 2-DS-1 had only the rare E11.9
    assert icd10["5-DS-1"].codes[0].code == "I10" and icd10["5-DS-1"].code_set() == {"I10"}
    assert counts["mimic4_icd10/dropped_only_rare_codes"] == 1
    assert icd9["1-DS-1"].split == icd9["1-DS-3"].split  # one patient, one split
    assert icd9["1-DS-1"].meta == {
        "subject_id": "1",
        "hadm_id": "11",
        "note_type": "DS",
        "note_seq": "1",
        "charttime": "2180-01-01 00:00:00",
    }


def test_mimic4_given_split_csv(tmp_path):
    note_dir, hosp = make_mimic4(tmp_path)
    split_csv = tmp_path / "splits.csv"
    split_csv.write_text("_id,split\n11,train\n12,val\n21,test\n")
    summary = prepare_mimic4(note_dir, hosp, tmp_path / "out", min_code_count=2, split_csv=split_csv)
    out = tmp_path / "out" / "mimic4_icd9"
    assert [d.id for d in load_documents(out / "dev.jsonl")] == ["1-DS-3"]
    assert [d.id for d in load_documents(out / "test.jsonl")] == ["2-DS-1"]
    assert summary["counts"]["mimic4_icd10/not_in_split_file"] == 1  # admission 51


def test_iterative_stratification_keeps_ratios_and_labels_balanced():
    rng = random.Random(0)
    labels = {i: {rng.randrange(30) for _ in range(rng.randint(1, 5))} for i in range(3000)}
    splits = stratified_patient_splits(labels, test_size=0.15, dev_size=0.10, seed=1)
    assert splits == stratified_patient_splits(labels, test_size=0.15, dev_size=0.10, seed=1)
    share = {name: sum(s == name for s in splits.values()) / len(splits) for name in ("train", "dev", "test")}
    assert share["test"] == pytest.approx(0.15, abs=0.02) and share["dev"] == pytest.approx(0.10, abs=0.02)
    for label in range(30):
        holders = [key for key, held in labels.items() if label in held]
        in_test = sum(splits[key] == "test" for key in holders) / len(holders)
        assert in_test == pytest.approx(0.15, abs=0.03)


def test_iterative_stratification_places_rare_labels_in_every_subset():
    labels = {i: {"rare"} if i < 3 else {"common"} for i in range(30)}
    subsets = iterative_stratification(labels, [1 / 3, 1 / 3, 1 / 3], seed=0)
    assert sorted(subsets[i] for i in range(3)) == [0, 1, 2]


def test_admission_codes_order_and_dedup():
    store = AdmissionCodes()
    store.add(7, "38.93", "icd9pcs", procedure=True, seq=1)
    store.add(7, "401.9", "icd9cm", procedure=False, seq=2)
    store.add(7, "428.0", "icd9cm", procedure=False, seq=1)
    store.add(7, "401.9", "icd9cm", procedure=False, seq=3)
    assert [g.code for g in store.gold(store.code_ids(7))] == ["428.0", "401.9", "38.93"]
    assert 7 in store and 8 not in store


# ----------------------------------------------------------------------- errors


def test_missing_file_is_named(tmp_path):
    mimic, splits = make_mimic3(tmp_path)
    (mimic / "NOTEEVENTS.csv.gz").unlink()
    with pytest.raises(InputError, match="NOTEEVENTS"):
        prepare_mimic3(mimic, splits, tmp_path / "out")


def test_missing_column_names_column_and_file(tmp_path):
    path = write_csv(tmp_path / "DIAGNOSES_ICD.csv.gz", ["ROW_ID", "HADM_ID", "SEQ_NUM"], [[1, 2, 3]])
    with pytest.raises(InputError, match=r"DIAGNOSES_ICD\.csv\.gz:1: missing required column 'ICD9_CODE'"):
        list(iter_csv_rows(path, ["HADM_ID", "ICD9_CODE"]))


def test_malformed_row_names_file_and_line(tmp_path):
    path = tmp_path / "codes.csv"
    path.write_text("HADM_ID,ICD9_CODE\n1,4019\n2,4019,extra\n")
    with pytest.raises(InputError, match=r"codes\.csv:3: malformed row"):
        list(iter_csv_rows(path, ["HADM_ID", "ICD9_CODE"]))


def test_non_integer_id_names_column(tmp_path):
    path = tmp_path / "codes.csv"
    path.write_text("HADM_ID,SEQ_NUM,ICD9_CODE\nabc,1,4019\n")
    from collections import Counter

    from icdcoder.data.mimic import read_mimic3_codes

    with pytest.raises(InputError, match=r"codes\.csv:2: column 'HADM_ID'"):
        read_mimic3_codes(path, path, Counter())


def test_parse_int_accepts_pandas_floats_and_empty(tmp_path):
    from icdcoder.data.mimic import parse_int

    assert parse_int("167853.0", "HADM_ID", tmp_path, 2) == 167853
    assert parse_int(" ", "HADM_ID", tmp_path, 2) is None
    with pytest.raises(InputError, match="column 'HADM_ID': expected an integer"):
        parse_int("1.5", "HADM_ID", tmp_path, 2)


def test_non_utf8_is_an_input_error(tmp_path):
    path = tmp_path / "NOTEEVENTS.csv.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b"ROW_ID,TEXT\n1,ok\n2,caf\xe9\n")
    with pytest.raises(InputError, match="UTF-8"):
        list(iter_csv_rows(path, ["ROW_ID", "TEXT"]))


def test_unknown_icd_version_is_an_input_error(tmp_path):
    note_dir, hosp = make_mimic4(tmp_path)
    write_csv(hosp / "procedures_icd.csv.gz", CODE_HEADER_IV, [[2, 21, 1, "9604", 11]])
    with pytest.raises(InputError, match=r"procedures_icd\.csv\.gz:2: column 'icd_version'"):
        prepare_mimic4(note_dir, hosp, tmp_path / "out")


def test_split_file_with_bad_id_and_duplicate_assignment(tmp_path):
    bad = tmp_path / "train_full_hadm_ids.csv"
    bad.write_text("HADM_ID\n1\nx2\n")
    with pytest.raises(InputError, match=r"train_full_hadm_ids\.csv:3"):
        read_hadm_ids(bad)
    mimic, splits = make_mimic3(tmp_path / "d")
    (splits / "dev_full_hadm_ids.csv").write_text("200\n100\n")
    with pytest.raises(InputError, match="admission 100 is also in the 'train' split"):
        prepare_mimic3(mimic, splits, tmp_path / "out")


# -------------------------------------------------------------------------- CLI


def test_cli_prepare_mimic3_prints_json_summary(tmp_path):
    mimic, splits = make_mimic3(tmp_path)
    out = tmp_path / "out"
    args = ["mimic3", "--mimic-dir", str(mimic), "--splits-dir", str(splits), "--out-dir", str(out), "--quiet"]
    result = CliRunner().invoke(prepare_app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["counts"]["written/mimic3_full/train"] == 2
    assert (out / "mimic3_50" / "test.jsonl").is_file()


def test_cli_prepare_mimic4_runs(tmp_path):
    note_dir, hosp = make_mimic4(tmp_path)
    args = [
        "mimic4",
        "--note-dir",
        str(note_dir),
        "--hosp-dir",
        str(hosp),
        "--out-dir",
        str(tmp_path / "o"),
        "--min-code-count",
        "2",
        "--quiet",
    ]
    result = CliRunner().invoke(prepare_app, args)
    assert result.exit_code == 0, result.output
    assert sum(v for k, v in json.loads(result.stdout)["counts"].items() if k.startswith("written/mimic4_icd9")) == 3
