"""CodiEsp submission files, gold reading, the official-style scorer and `icdcoder evaluate codiesp`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from icdcoder.data.schema import Evidence
from icdcoder.errors import InputError
from icdcoder.evaluate.codiesp import load_gold, read_submission, score_submission, write_submission
from icdcoder.predictor import CodePrediction, DocumentPrediction

approx = pytest.approx
CONTRACT = {
    "D": {"map", "micro_precision", "micro_recall", "micro_f1", "macro_f1", "unseen_recall"},
    "P": {"map", "micro_precision", "micro_recall", "micro_f1", "macro_f1", "unseen_recall"},
    "X": {"precision", "recall", "f1"},
}


def _write(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    """A two-document dev split and a train split, official layout."""
    root = tmp_path / "codiesp"
    _write(root / "train" / "trainD.tsv", ["t1\tn44.8", "t1\ti10", "t2\ti10"])
    _write(root / "train" / "trainP.tsv", ["t1\tbw03zzz"])
    _write(root / "train" / "trainX.tsv", ["t1\tDIAGNOSTICO\tn44.8\tx\t0 5"])
    _write(root / "dev" / "devD.tsv", ["d1\tn44.8", "d1\ti10", "d1\tn44.8", "d2\tr52"])
    _write(root / "dev" / "devP.tsv", ["d1\tbw03zzz", "d2\tct13"])
    _write(
        root / "dev" / "devX.tsv",
        [
            "d1\tDIAGNOSTICO\tn44.8\tdolor testicular\t100 120",
            "d1\tDIAGNOSTICO\tn44.8\totra mencion\t300 310",
            "d1\tDIAGNOSTICO\ti10\thipertension\t10 20;30 40",
            "d1\tPROCEDIMIENTO\tbw03zzz\tradiografia\t50 60",
            "d2\tDIAGNOSTICO\tr52\tdolor\t0 5",
            "d2\tPROCEDIMIENTO\tct13\tgammagrafia\t70 80",
        ],
    )
    return root


def test_load_gold_reads_the_tsv_files(corpus: Path):
    gold = load_gold(corpus, "dev")
    assert gold.documents == {"d1", "d2"}
    assert gold.ranked["D"]["d1"] == ["n44.8", "i10", "n44.8"]
    assert gold.references[("d1", "n44.8")] == [(100, 120), (300, 310)]
    assert gold.references[("d1", "i10")] == [(10, 40)]  # multi-piece: first start .. last end


def test_out_of_order_gold_pieces_accept_official_and_covering_interval(corpus: Path, tmp_path: Path):
    with (corpus / "dev" / "devX.tsv").open("a") as handle:
        handle.write("d2\tPROCEDIMIENTO\tct13\tgammagrafia\t2654 2674;691 706\n")
    assert load_gold(corpus, "dev").references[("d2", "ct13")] == [(70, 80), (691, 2674), (2654, 706)]
    for position, hits in (("685 2680", 1), ("2650 2680", 0)):
        _write(tmp_path / position / "X.tsv", [f"d2\t{position}\tPROCEDIMIENTO\tct13"])
        assert score_submission(corpus, "dev", tmp_path / position)["X"]["n_hits"] == hits, position
    # the official script would credit the reversed prediction "2654 706"; a reversed row is an input error here
    _write(tmp_path / "reversed" / "X.tsv", ["d2\t2654 706\tPROCEDIMIENTO\tct13"])
    with pytest.raises(InputError, match=r"X.tsv:1: .*reversed"):
        score_submission(corpus, "dev", tmp_path / "reversed")


def test_write_read_round_trip(tmp_path: Path):
    predictions = [
        DocumentPrediction(
            doc_id="d1",
            codes=[
                CodePrediction(code="I10", system="icd10cm", score=0.3),
                CodePrediction(
                    code="N44.8", system="icd10cm", score=0.9, evidence=[Evidence(pieces=((5, 9), (20, 31)))]
                ),
                CodePrediction(code="BW03ZZZ", system="icd10pcs", score=0.5, evidence=[Evidence(pieces=((1, 2),))]),
                CodePrediction(code="250.00", system="icd9cm", score=1.0),
            ],
            candidates=[
                CodePrediction(code="E11.9", system="icd10cm", score=0.2, evidence=[Evidence(pieces=((3, 4),))])
            ],
        ),
        DocumentPrediction(doc_id="d2"),
    ]
    counts = write_submission(tmp_path / "sub", predictions)
    assert counts == {"D.tsv": 2, "P.tsv": 1, "X.tsv": 2, "D_ranking.tsv": 3, "P_ranking.tsv": 1}
    assert (tmp_path / "sub" / "D.tsv").read_text() == "d1\tn44.8\nd1\ti10\n"
    # the ranking: decisions and candidates by score; a candidate is no decision, its evidence not in X
    assert (tmp_path / "sub" / "D_ranking.tsv").read_text() == "d1\tn44.8\nd1\ti10\nd1\te11.9\n"
    assert (tmp_path / "sub" / "X.tsv").read_text() == "d1\t5 31\tDIAGNOSTICO\tn44.8\nd1\t1 2\tPROCEDIMIENTO\tbw03zzz\n"
    back = read_submission(tmp_path / "sub")
    assert back.ranked["D"] == {"d1": ["n44.8", "i10"]}
    assert back.ranked["P"] == {"d1": ["bw03zzz"]}
    assert back.references == {("d1", "n44.8"): [(5, 31)], ("d1", "bw03zzz"): [(1, 2)]}
    assert back.rankings["D"] == {"d1": ["n44.8", "i10", "e11.9"]}
    assert back.missing_files == []


def test_map_reads_the_ranking_and_f1_the_decisions(corpus: Path, tmp_path: Path):
    gold = load_gold(corpus, "dev")
    doc, codes = next((doc, codes) for doc, codes in gold.ranked["D"].items() if len(codes) >= 2)
    # one gold code decided, a second one only among the candidates
    _write(tmp_path / "D.tsv", [f"{doc}\t{codes[0]}"])
    decisions_only = score_submission(corpus, "dev", tmp_path)
    assert any("no D_ranking.tsv" in note for note in decisions_only["notes"])
    _write(tmp_path / "D_ranking.tsv", [f"{doc}\t{codes[0]}", f"{doc}\tz99.89", f"{doc}\t{codes[1]}"])
    ranked = score_submission(corpus, "dev", tmp_path)
    assert ranked["D"]["micro_f1"] == decisions_only["D"]["micro_f1"]
    assert ranked["D"]["n_predicted"] == 1
    assert ranked["D"]["map"] > decisions_only["D"]["map"]


def test_write_submission_is_all_or_nothing(tmp_path: Path):
    good = [DocumentPrediction(doc_id="d1", codes=[CodePrediction(code="N44.8", system="icd10cm", score=1.0)])]
    write_submission(tmp_path / "sub", good)
    before = {path.name: path.read_text() for path in (tmp_path / "sub").iterdir()}
    with pytest.raises(InputError, match="document id"):
        write_submission(tmp_path / "sub", [*good, DocumentPrediction(doc_id="bad\tid")])
    assert {path.name: path.read_text() for path in (tmp_path / "sub").iterdir()} == before


@pytest.mark.parametrize(
    ("name", "row", "message"),
    [
        ("D.tsv", "d1\tn44.8\textra", "expected 2 tab-separated fields"),
        ("P.tsv", "d1\t", "empty field"),
        ("X.tsv", "d1\t5\tDIAGNOSTICO\tn44.8", "bad position"),
        ("X.tsv", "d1\t1 5\tOTRO\tn44.8", "label must be"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, name: str, row: str, message: str):
    _write(tmp_path / name, ["d1\tn44.8" if name != "X.tsv" else "d1\t1 2\tDIAGNOSTICO\tn44.8", row])
    with pytest.raises(InputError, match=rf"{name}:2: .*{message}"):
        read_submission(tmp_path)


def test_missing_folder_or_files(tmp_path: Path):
    with pytest.raises(InputError, match="not found"):
        read_submission(tmp_path / "nope")
    with pytest.raises(InputError, match="none of"):
        read_submission(tmp_path)


def test_score_submission_hand_computed(corpus: Path, tmp_path: Path):
    sub = tmp_path / "sub"
    # d1 ranking: x99 (wrong), N44.8 (upper case, right), x99 again (duplicate), i10 (right)
    _write(sub / "D.tsv", ["d1\tx99", "d1\tN44.8", "d1\tx99", "d1\ti10", "zz\tr52"])
    _write(sub / "P.tsv", ["d1\tbw03", "d1\tbw03zzz", "d2\tct1300z"])
    _write(
        sub / "X.tsv",
        [
            "d1\t290 320\tDIAGNOSTICO\tn44.8",  # second reference of n44.8, slack 10/10 -> hit
            "d1\t0 45\tDIAGNOSTICO\ti10",  # multi-piece reference 10..40 -> start slack 10, end slack 5 -> hit
            "d1\t39 61\tPROCEDIMIENTO\tbw03zzz",  # start slack 11 -> miss
            "d2\t0 5\tPROCEDIMIENTO\tr52",  # label differs from gold: labels are not compared -> hit
            "zz\t0 5\tDIAGNOSTICO\tr52",  # not a dev document: ignored
        ],
    )
    result = score_submission(corpus, "dev", sub)
    d = result["D"]
    # d1 deduped ranking x99 n44.8 i10: AP (1/2 + 2/3) / 2; d2: no prediction -> 0
    assert d["map"] == approx(((1 / 2 + 2 / 3) / 2) / 2)
    assert d["map_trectools"] == approx((1 / 2 + 2 / 3) / 2)  # only d1 is in the run
    assert d["micro_precision"] == approx(2 / 3) and d["micro_recall"] == approx(2 / 3)
    assert d["micro_f1"] == approx(2 / 3)
    # gold labels n44.8 (F1 1), i10 (F1 1), r52 (F1 0)
    assert d["macro_f1"] == approx(2 / 3)
    # r52 is the only dev diagnosis unseen in trainD, and it is missed
    assert d["unseen_recall"] == 0.0 and d["n_unseen"] == 1
    p = result["P"]
    # exact string match: prefix bw03 does not match bw03zzz, ct1300z does not match ct13
    assert p["micro_precision"] == approx(1 / 3) and p["micro_recall"] == approx(1 / 2)
    assert p["map"] == approx((1 / 2 + 0) / 2)
    assert p["unseen_recall"] == 0.0 and p["n_unseen"] == 1
    x = result["X"]
    assert (x["n_hits"], x["n_predicted"], x["n_gold"]) == (3, 4, 5)
    assert x["precision"] == approx(3 / 4) and x["recall"] == approx(3 / 5)
    assert x["f1"] == approx(2 * 0.75 * 0.6 / 1.35)
    assert result["n_prediction_rows_outside_split"] == 2
    assert result["notes"] == ["no D_ranking.tsv: D MAP read from D.tsv", "no P_ranking.tsv: P MAP read from P.tsv"]


def test_valid_code_lists_remove_invalid_predictions(corpus: Path, tmp_path: Path):
    sub = tmp_path / "sub"
    _write(sub / "D.tsv", ["d1\tx99", "d1\tn44.8"])
    _write(sub / "P.tsv", ["d1\tbw03zzz"])
    valid = {"D": {"n44.8", "i10", "r52"}, "P": {"bw03zzz", "ct13"}}
    strict = score_submission(corpus, "dev", sub)["D"]
    filtered = score_submission(corpus, "dev", sub, valid_codes=valid)["D"]
    assert strict["micro_precision"] == approx(1 / 2) and strict["map"] == approx((1 / 2 / 2) / 2)
    # official behaviour: x99 is dropped, so n44.8 moves to rank 1
    assert filtered["micro_precision"] == approx(1.0) and filtered["map"] == approx((1 / 2) / 2)


def test_missing_x_file_scores_zero_with_a_note(corpus: Path, tmp_path: Path):
    sub = tmp_path / "sub"
    _write(sub / "D.tsv", ["d1\tn44.8"])
    result = score_submission(corpus, "dev", sub)
    assert result["X"]["f1"] == 0.0 and result["P"]["micro_f1"] == 0.0
    assert result["notes"][:2] == ["P.tsv missing: scored as an empty file", "X.tsv missing: scored as an empty file"]


def _perfect_predictions(data_dir: Path, split: str) -> list[DocumentPrediction]:
    gold = load_gold(data_dir, split)
    predictions = []
    for doc in sorted(gold.documents):
        codes = []
        for task, system in (("D", "icd10cm"), ("P", "icd10pcs")):
            ranked = list(dict.fromkeys(gold.ranked[task].get(doc, [])))
            for rank, code in enumerate(ranked):
                spans = gold.references.get((doc, code), [])
                evidence = [Evidence(pieces=(span,)) for span in spans if span[0] <= span[1]]
                score = 1.0 - rank / 1000
                codes.append(CodePrediction(code=code.upper(), system=system, score=score, evidence=evidence))
        predictions.append(DocumentPrediction(doc_id=doc, codes=codes))
    return predictions


def test_perfect_dev_submission_scores_one(codiesp_dir: Path, tmp_path: Path):
    write_submission(tmp_path / "sub", _perfect_predictions(codiesp_dir, "dev"))
    result = score_submission(codiesp_dir, "dev", tmp_path / "sub")
    for task in ("D", "P"):
        for key in ("map", "micro_precision", "micro_recall", "micro_f1", "macro_f1", "unseen_recall"):
            assert result[task][key] == approx(1.0), (task, key)
    assert (result["X"]["precision"], result["X"]["recall"], result["X"]["f1"]) == (approx(1.0),) * 3
    assert result["n_documents"] == 250


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "icdcoder.cli", "evaluate", "codiesp", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_one_json_object(corpus: Path, tmp_path: Path):
    sub = tmp_path / "sub"
    _write(sub / "D.tsv", ["d1\tn44.8", "d1\ti10", "d2\tr52"])
    _write(sub / "P.tsv", ["d1\tbw03zzz", "d2\tct13"])
    _write(sub / "X.tsv", ["d1\t100 120\tDIAGNOSTICO\tn44.8"])
    done = _run_cli("--data-dir", str(corpus), "--split", "dev", "--pred-dir", str(sub))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # the whole of stdout is one JSON object
    for block, keys in CONTRACT.items():
        assert keys <= set(result[block])
    assert result["D"]["map"] == 1.0 and result["P"]["micro_f1"] == 1.0
    assert result["X"]["precision"] == 1.0 and result["X"]["recall"] == approx(1 / 5)


def test_cli_bad_input_is_one_line(corpus: Path, tmp_path: Path):
    _write(tmp_path / "sub" / "D.tsv", ["d1 n44.8"])
    done = _run_cli("--data-dir", str(corpus), "--split", "dev", "--pred-dir", str(tmp_path / "sub"))
    assert done.returncode == 2 and done.stdout == ""
    assert "D.tsv:1" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
