"""CodiEsp loader, English projection, stats and CLI: real corpus plus tiny made-up splits for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icdcoder.data.align import align_document
from icdcoder.data.cli import app
from icdcoder.data.codiesp import (
    alignment_report,
    codiesp_stats,
    english_lines,
    load_codiesp,
    load_codiesp_labels,
    read_x_table,
    to_english,
)
from icdcoder.data.schema import load_documents, save_documents
from icdcoder.errors import InputError

BRUCELLA_CASE = "S0004-06142005000700014-1"
CM_CODE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")
PCS_CODE = re.compile(r"^[0-9A-HJ-NP-Z]{3,7}$")


@pytest.fixture(scope="module")
def train_es(codiesp_dir):
    return load_codiesp(codiesp_dir, "train")


@pytest.fixture(scope="module")
def dev_es(codiesp_dir):
    return load_codiesp(codiesp_dir, "dev")


@pytest.fixture(scope="module")
def dev_en(codiesp_dir):
    return load_codiesp(codiesp_dir, "dev", language="en")


def _squash(text: str) -> str:
    return "".join(text.split())


# --- real corpus -------------------------------------------------------------------------------


def test_train_counts_match_the_official_release(codiesp_dir, train_es):
    stats = codiesp_stats(codiesp_dir, "train")
    assert (stats["documents"], stats["D_rows"], stats["P_rows"], stats["X_rows"]) == (500, 5639, 1550, 9181)
    assert stats["X_spans_exact"] + stats["X_spans_mismatched"] == 9181
    assert stats["X_spans_mismatched"] <= 4
    assert stats["D_codes_unknown_to_ontology"] + stats["P_codes_unknown_to_ontology"] > 0  # kept, not dropped
    assert len(train_es) == 500
    assert sum(len(doc.code_set("icd10cm")) for doc in train_es) == 5639
    assert sum(len(doc.code_set("icd10pcs")) for doc in train_es) == 1550


def test_dev_has_250_documents(dev_es):
    assert len(dev_es) == 250
    assert all(doc.split == "dev" and doc.source == "codiesp" and doc.language == "es" for doc in dev_es)


def test_codes_are_canonical_and_carry_their_x_evidence(train_es):
    by_id = {doc.id: doc for doc in train_es}
    for doc in train_es:
        for gold in doc.codes:
            pattern = CM_CODE if gold.system == "icd10cm" else PCS_CODE
            assert pattern.match(gold.code), gold.code
    gold = {g.code: g for g in by_id[BRUCELLA_CASE].codes}
    assert gold["N44.8"].system == "icd10cm"
    assert [e.pieces for e in gold["N44.8"].evidence] == [((1343, 1376),)]
    assert [e.pieces for e in gold["3E02329"].evidence] == [((2787, 2801), (2810, 2823))]
    assert gold["BW03ZZZ"].system == "icd10pcs"


def test_every_x_span_slices_the_spanish_text(codiesp_dir, train_es):
    texts = {doc.id: doc.text for doc in train_es}
    evidence = {(doc.id, g.code): {e.pieces for e in g.evidence} for doc in train_es for g in doc.codes}
    mismatched = []
    for row in read_x_table(codiesp_dir / "train" / "trainX.tsv"):
        assert row.pieces in evidence[(row.doc_id, row.code)]
        sliced = " ".join(texts[row.doc_id][start:end] for start, end in row.pieces)
        if _squash(sliced) != _squash(row.reference):
            mismatched.append((sliced, row.reference))
    # The release has a handful of off-by-one offsets: the slice holds the reference plus one character.
    assert len(mismatched) <= 4
    for sliced, reference in mismatched:
        assert _squash(reference) in _squash(sliced) and len(_squash(sliced)) - len(_squash(reference)) == 1


def test_labels_fast_path_agrees_with_full_load(codiesp_dir, dev_es):
    labels = load_codiesp_labels(codiesp_dir, "dev")
    assert {doc_id: set(codes) for doc_id, codes in labels.items()} == {
        doc.id: {(g.code, g.system) for g in doc.codes} for doc in dev_es
    }


def test_jsonl_round_trip(tmp_path, dev_es, dev_en):
    for docs in (dev_es, dev_en):
        path = tmp_path / f"{docs[0].language}.jsonl"
        save_documents(path, docs)
        assert load_documents(path) == docs


def test_english_documents_use_the_translation_with_sentence_level_evidence(codiesp_dir, dev_es, dev_en):
    assert [doc.id for doc in dev_en] == [doc.id for doc in dev_es]
    with_evidence_es = with_evidence_en = 0
    for es, en in zip(dev_es, dev_en, strict=True):
        lines = (codiesp_dir / "dev" / "text_files_en" / f"{en.id}.txt").read_text(encoding="utf-8").splitlines()
        assert en.language == "en" and en.text == "\n".join(lines)
        assert [(g.code, g.system) for g in en.codes] == [(g.code, g.system) for g in es.codes]
        assert {"alignment_beads", "alignment_one_to_one", "evidence_projected"} <= en.meta.keys()
        line_starts = {0} | {i + 1 for i, ch in enumerate(en.text) if ch == "\n"}
        for gold in en.codes:
            for evidence in gold.evidence:
                for start, end in evidence.pieces:
                    assert start in line_starts and (end == len(en.text) or en.text[end] == "\n")
        with_evidence_es += sum(1 for g in es.codes if g.evidence)
        with_evidence_en += sum(1 for g in en.codes if g.evidence)
    assert with_evidence_en >= 0.95 * with_evidence_es
    assert sum(doc.meta["alignment_one_to_one"] == "true" for doc in dev_en) >= 0.75 * len(dev_en)


def test_projected_evidence_lands_on_the_translated_sentence(codiesp_dir, train_es):
    spanish = next(doc for doc in train_es if doc.id == BRUCELLA_CASE)
    lines = english_lines(codiesp_dir / "train" / "text_files_en" / f"{BRUCELLA_CASE}.txt")
    doc = to_english(spanish, align_document(spanish.text, lines))
    gold = {g.code: g for g in doc.codes}
    assert "enlarged right test" in gold["N44.8"].evidence[0].text_in(doc.text)
    assert gold["3E02329"].evidence[0].text_in(doc.text).count("\n") == 0
    assert all("brucella" in e.text_in(doc.text).lower() for e in gold["A23.9"].evidence)


def test_alignment_report_beats_the_naive_split_and_zip(codiesp_dir):
    report = alignment_report(codiesp_dir, "dev")
    assert report["documents"] == 250 and report["x_spans"] == 4477
    assert report["docs_all_one_to_one"] >= report["naive_period_split_same_count"] + 0.3
    assert report["numbers_agree_aligned"] >= report["numbers_agree_naive_zip"] + 0.2
    assert report["x_spans_projected"] >= 0.95
    assert abs(sum(report["bead_fractions"].values()) - 1) < 1e-3


# --- tiny made-up splits -----------------------------------------------------------------------


ES_TEXT = "Varón con fiebre. Se hizo Rx tórax.\n"
EN_TEXT = "Man with fever.\nChest X-ray was done.\n"


def _make_split(root: Path, d: str = "", p: str = "", x: str = "", texts: dict[str, bytes] | None = None) -> Path:
    folder = root / "train"
    (folder / "text_files").mkdir(parents=True)
    (folder / "text_files_en").mkdir()
    for name, content in (texts or {"doc1": ES_TEXT.encode()}).items():
        (folder / "text_files" / f"{name}.txt").write_bytes(content)
        (folder / "text_files_en" / f"{name}.txt").write_text(EN_TEXT, encoding="utf-8")
    (folder / "trainD.tsv").write_text(d, encoding="utf-8")
    (folder / "trainP.tsv").write_text(p, encoding="utf-8")
    (folder / "trainX.tsv").write_text(x, encoding="utf-8")
    return root


GOOD_D = "doc1\tr50.9\n"
GOOD_P = "doc1\tbw03zzz\n"
GOOD_X = "doc1\tDIAGNOSTICO\tr50.9\tfiebre\t10 16\ndoc1\tPROCEDIMIENTO\tbw03zzz\tRx tórax\t26 34\n"


def test_tiny_split_loads_in_both_languages(tmp_path):
    root = _make_split(tmp_path, GOOD_D, GOOD_P, GOOD_X)
    (doc,) = load_codiesp(root, "train")
    assert [(g.code, g.system, [e.pieces for e in g.evidence]) for g in doc.codes] == [
        ("R50.9", "icd10cm", [((10, 16),)]),
        ("BW03ZZZ", "icd10pcs", [((26, 34),)]),
    ]
    (english,) = load_codiesp(root, "train", language="en")
    gold = {g.code: g for g in english.codes}
    assert gold["R50.9"].evidence[0].text_in(english.text) == "Man with fever."
    assert gold["BW03ZZZ"].evidence[0].text_in(english.text) == "Chest X-ray was done."


def test_irregularities_are_counted_not_hidden(tmp_path):
    x = GOOD_X + "doc1\tDIAGNOSTICO\tz99.9\tVarón con\t0 8\ndoc1\tDIAGNOSTICO\tr50.9\tfiebre\t9 9;10 16\n"
    root = _make_split(tmp_path, GOOD_D + "doc1\tR509\n", GOOD_P, x)
    stats = codiesp_stats(root, "train")
    assert stats["X_codes_not_in_DP"] == 1 and stats["X_spans_mismatched"] == 1 and stats["X_spans_exact"] == 3
    assert stats["D_rows"] == 2 and stats["DP_duplicate_rows"] == 1
    (doc,) = load_codiesp(root, "train")
    assert "Z99.9" in doc.code_set("icd10cm")
    assert [e.pieces for e in next(g for g in doc.codes if g.code == "R50.9").evidence] == [((10, 16),), ((10, 16),)]


@pytest.mark.parametrize(
    ("files", "where", "what"),
    [
        ({"d": "doc1\tr50.9\textra\n"}, r"trainD\.tsv:1", "columns"),
        ({"d": GOOD_D, "x": GOOD_X + "doc1\tDIAGNOSTICO\tr50.9\tfiebre\n"}, r"trainX\.tsv:3", "columns"),
        ({"d": GOOD_D, "x": "doc1\tDIAGNOSTICO\tr50.9\tfiebre\t10 x16\n"}, r"trainX\.tsv:1", "integers"),
        ({"d": GOOD_D, "x": "doc1\tDIAGNOSTICO\tr50.9\tfiebre\t10 16;30 400\n"}, r"trainX\.tsv:1", "past the text"),
        ({"d": GOOD_D, "x": "doc1\tDIAGNOSTICO\tr50.9\tfiebre\t16 10\n"}, r"trainX\.tsv:1", "reversed"),
        ({"d": GOOD_D, "x": "doc1\tDIAGNOSIS\tr50.9\tfiebre\t10 16\n"}, r"trainX\.tsv:1", "unknown label"),
        ({"d": GOOD_D, "p": "doc1\tbw03zzz\ndoc9\tbw40zzz\n"}, r"trainP\.tsv:2", "doc9"),
        ({"d": GOOD_D, "x": "doc9\tDIAGNOSTICO\tr50.9\tfiebre\t10 16\n"}, r"trainX\.tsv:1", "doc9"),
        ({"d": GOOD_D, "texts": {"doc1": "Var\xf3n con fiebre.\n".encode("latin-1")}}, r"doc1\.txt:1", "UTF-8"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, files, where, what):
    root = _make_split(tmp_path, files.get("d", ""), files.get("p", ""), files.get("x", ""), files.get("texts"))
    with pytest.raises(InputError, match=rf"{where}.*{what}"):
        load_codiesp(root, "train")


def test_missing_folder_file_or_language_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="split folder 'dev' not found"):
        load_codiesp(tmp_path, "dev")
    root = _make_split(tmp_path, GOOD_D, GOOD_P, GOOD_X)
    (root / "train" / "trainX.tsv").unlink()
    with pytest.raises(InputError, match=r"trainX\.tsv: CodiEsp X table not found"):
        load_codiesp(root, "train")
    with pytest.raises(InputError, match="language"):
        load_codiesp(root, "train", language="fr")


def test_cli_stats_and_export(tmp_path):
    root = _make_split(tmp_path / "data", GOOD_D, GOOD_P, GOOD_X)
    runner = CliRunner()
    result = runner.invoke(app, ["stats", "codiesp", "--data-dir", str(root), "--split", "train"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert (stats["documents"], stats["D_rows"], stats["P_rows"], stats["X_rows"], stats["X_spans_exact"]) == (
        1,
        1,
        1,
        2,
        2,
    )
    out = tmp_path / "out" / "train_en.jsonl"
    args = ["export", "codiesp", "--data-dir", str(root), "--split", "train", "--lang", "en", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"documents": 1, "codes": 2, "out": str(out)}
    assert load_documents(out) == load_codiesp(root, "train", language="en")
