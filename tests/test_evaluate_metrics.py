"""Hand-computed cases for every metric in icdcoder.evaluate.metrics."""

from __future__ import annotations

import pytest

from icdcoder.data.schema import Document, Evidence, GoldCode
from icdcoder.evaluate.metrics import (
    auc_scores,
    average_precision,
    code_frequencies,
    dedupe_ranking,
    evaluate,
    evidence_prf,
    frequency_band,
    frequency_band_recall,
    macro_prf,
    mean_average_precision,
    micro_prf,
    precision_recall_at_k,
    reference_inside,
    trectools_map,
)
from icdcoder.predictor import CodePrediction, DocumentPrediction

approx = pytest.approx


def test_dedupe_keeps_first_occurrence():
    assert dedupe_ranking(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def test_average_precision_drops_duplicates_and_divides_by_gold_count():
    # deduped ranking a x b c: hits at rank 1 (1/1) and rank 3 (2/3); 3 gold codes (d never found)
    assert average_precision(["a", "x", "b", "a", "c"], {"a", "b", "d"}) == approx((1 + 2 / 3) / 3)
    # without dedup the repeated "a" would shift "b" to rank 4
    assert average_precision(["a", "a", "b"], {"a", "b"}) == approx(1.0)
    assert average_precision([], {"a"}) == 0.0


def test_map_is_a_mean_over_gold_documents():
    gold = {"d1": {"a", "b", "d"}, "d2": {"z"}, "d3": set()}
    ranked = {"d1": ["a", "x", "b", "a", "c"], "d4": ["q"], "d5": ["z"]}
    # d2 has no prediction -> 0; d3 has no gold code -> not averaged; d4/d5 are not gold documents
    assert mean_average_precision(gold, ranked) == approx((5 / 9 + 0) / 2)
    # trectools 0.0.42 divides by the documents of the run (d1, d4, d5), gold or not
    assert trectools_map(gold, ranked) == approx((5 / 9) / 3)
    assert trectools_map(gold, {"d1": ranked["d1"]}) == approx(5 / 9)
    assert mean_average_precision(gold, {}) == 0.0


def test_micro_counts_unknown_codes_as_false_positives_and_ignores_unknown_documents():
    gold = {"d1": {"a", "b"}, "d2": {"c"}, "d3": set()}
    ranked = {"d1": ["a", "x", "a"], "d2": [], "d3": ["y"], "d9": ["a", "b"]}
    micro = micro_prf(gold, ranked)
    # predicted: d1 {a, x}, d3 {y} -> 3 predictions, 1 hit; 3 gold codes
    assert micro["n_predicted"] == 3 and micro["true_positives"] == 1 and micro["n_gold"] == 3
    assert micro["micro_precision"] == approx(1 / 3)
    assert micro["micro_recall"] == approx(1 / 3)
    assert micro["micro_f1"] == approx(1 / 3)


def test_zero_over_zero_is_zero():
    assert micro_prf({"d1": {"a"}}, {}) == {
        "micro_precision": 0.0,
        "micro_recall": 0.0,
        "micro_f1": 0.0,
        "true_positives": 0,
        "n_predicted": 0,
        "n_gold": 1,
    }
    assert micro_prf({"d1": set()}, {"d1": ["a"]})["micro_recall"] == 0.0
    assert macro_prf({"d1": set()}, {})["macro_f1"] == 0.0


def test_macro_over_gold_codes_versus_label_space():
    gold = {"d1": {"a", "b"}, "d2": {"c"}, "d3": set()}
    ranked = {"d1": ["a", "x"], "d3": ["y"]}
    default = macro_prf(gold, ranked)
    # a: P1 R1 F1 1; b and c: never predicted -> 0 (0/0 precision is 0)
    assert default["n_labels"] == 3
    assert default["macro_f1"] == approx(1 / 3)
    assert default["macro_precision"] == approx(1 / 3)
    assert default["macro_recall"] == approx(1 / 3)
    assert default["n_pred_outside_label_space"] == 2  # x and y
    wider = macro_prf(gold, ranked, label_space={"a", "b", "c", "e"})
    assert wider["macro_f1"] == approx(1 / 4)
    narrow = macro_prf(gold, ranked, label_space={"a"})
    assert narrow["macro_f1"] == approx(1.0) and narrow["n_pred_outside_label_space"] == 2
    # a predicted code in the label space with no gold: precision 0 for that label
    with_x = macro_prf(gold, ranked, label_space={"a", "x"})
    assert with_x["macro_precision"] == approx(0.5) and with_x["macro_f1"] == approx(0.5)


def test_macro_f1_is_mean_of_per_label_f1():
    gold = {"d1": {"a"}, "d2": {"a"}, "d3": {"b"}}
    ranked = {"d1": ["a"], "d2": ["b"], "d3": ["b"]}
    # a: tp1 fn1 -> P1 R.5 F 2/3; b: tp1 fp1 -> P.5 R1 F 2/3
    macro = macro_prf(gold, ranked)
    assert macro["macro_f1"] == approx(2 / 3)
    assert macro["macro_precision"] == approx(0.75) and macro["macro_recall"] == approx(0.75)


def test_precision_and_recall_at_k():
    gold = {"d1": {"a", "b"}, "d2": {"c"}}
    ranked = {"d1": ["a", "x", "a", "b"], "d2": ["c"]}
    assert precision_recall_at_k(gold, ranked, 1) == (approx(1.0), approx((0.5 + 1) / 2))
    # d1 deduped: a x b -> top2 has 1 hit; d2 top2 has 1 hit
    assert precision_recall_at_k(gold, ranked, 2) == (approx((0.5 + 0.5) / 2), approx((0.5 + 1) / 2))
    assert precision_recall_at_k(gold, ranked, 5) == (approx((2 / 5 + 1 / 5) / 2), approx(1.0))
    with pytest.raises(ValueError):
        precision_recall_at_k(gold, ranked, 0)


def test_auc_micro_macro_and_one_class_labels_skipped():
    gold = {"d1": {"a"}, "d2": {"b"}, "d3": {"a"}}
    scores = {"d1": {"a": 0.9}, "d2": {"a": 0.8, "b": 0.7}, "d3": {"a": 0.4}}
    result = auc_scores(gold, scores)
    # a: positives .9 .4 vs negative .8 -> 1/2; b: .7 vs unlisted, unlisted -> 1
    assert result["macro_auc"] == approx(0.75)
    # flattened: positives .9 .7 .4 vs negatives (unlisted, .8, unlisted): 3 + 2 + 2 of 9 pairs
    assert result["micro_auc"] == approx(7 / 9)
    # a predicted-only label has one class: skipped in macro
    scores["d1"]["z"] = 0.1
    assert auc_scores(gold, scores)["macro_auc"] == approx(0.75)
    assert auc_scores({"d1": {"a"}}, {"d1": {"a": 1.0}}) == {"micro_auc": None, "macro_auc": None}


def _doc(doc_id: str, *codes: tuple[str, str], text: str = "x" * 200) -> Document:
    return Document(id=doc_id, text=text, language="es", codes=tuple(GoldCode(code=c, system=s) for c, s in codes))


def test_code_frequencies_count_documents_not_mentions():
    docs = [
        _doc("t1", ("A00.0", "icd10cm"), ("BW03ZZZ", "icd10pcs")),
        Document(id="t2", text="abc", language="es", codes=(GoldCode(code="A00.0", system="icd10cm"),) * 2),
    ]
    assert code_frequencies(docs) == {"A00.0": 2, "BW03ZZZ": 1}


def test_frequency_bands_and_band_recall():
    assert [frequency_band(n) for n in (0, 1, 4, 5, 50)] == ["unseen", "rare", "rare", "frequent", "frequent"]
    gold = {"d1": {"a", "b", "c"}, "d2": {"a"}}
    ranked = {"d1": ["a", "c"], "d2": []}
    bands = frequency_band_recall(gold, ranked, {"a": 5, "b": 1})
    assert bands["frequent_recall"] == approx(0.5) and bands["n_frequent"] == 2
    assert bands["rare_recall"] == 0.0 and bands["n_rare"] == 1
    assert bands["unseen_recall"] == 1.0 and bands["n_unseen"] == 1
    assert frequency_band_recall({"d1": {"a"}}, {}, {"a": 9})["unseen_recall"] is None


@pytest.mark.parametrize(
    ("predicted", "hit"),
    [
        ((100, 120), True),
        ((90, 130), True),  # 10 characters of slack on each side
        ((89, 120), False),  # 11 before
        ((100, 131), False),  # 11 after
        ((101, 120), False),  # starts inside the reference
        ((100, 119), False),  # ends inside the reference
    ],
)
def test_evidence_slack_boundary(predicted, hit):
    assert reference_inside((100, 120), predicted) is hit


def test_evidence_prf_any_reference_any_prediction_labels_ignored():
    gold = {("d1", "a"): [(0, 5), (50, 60)], ("d1", "b"): [(10, 20)]}
    predicted = {("d1", "a"): [(200, 210), (45, 62)], ("d1", "c"): [(0, 5)]}
    result = evidence_prf(gold, predicted)
    assert result["hits"] == 1
    assert result["precision"] == approx(0.5) and result["recall"] == approx(0.5) and result["f1"] == approx(0.5)
    assert evidence_prf(gold, {})["precision"] == 0.0


def test_evaluate_over_documents_and_predictions():
    text = "paciente con diabetes y nefrectomia derecha " * 3
    gold_docs = [
        Document(
            id="d1",
            text=text,
            language="es",
            codes=(
                GoldCode(code="E11.9", system="icd10cm", evidence=(Evidence(pieces=((13, 21),)),)),
                GoldCode(code="0TT00ZZ", system="icd10pcs", evidence=(Evidence(pieces=((24, 35), (36, 43))),)),
            ),
        ),
        _doc("d2", ("I10", "icd10cm")),
    ]
    predictions = [
        DocumentPrediction(
            doc_id="d1",
            codes=[
                CodePrediction(code="X99.9", system="icd10cm", score=0.2),
                CodePrediction(code="E11.9", system="icd10cm", score=0.9, evidence=[Evidence(pieces=((5, 25),))]),
                CodePrediction(code="0TT00ZZ", system="icd10pcs", score=0.5, evidence=[Evidence(pieces=((20, 44),))]),
            ],
        ),
        DocumentPrediction(doc_id="unknown", codes=[CodePrediction(code="I10", system="icd10cm", score=1.0)]),
    ]
    result = evaluate(gold_docs, predictions, train_counts={"E11.9": 7, "I10": 2})
    assert result["n_docs"] == 2
    assert result["micro_precision"] == approx(2 / 3) and result["micro_recall"] == approx(2 / 3)
    # d1 ranking by score: E11.9, 0TT00ZZ, X99.9 -> AP 1; d2 none -> 0
    assert result["map"] == approx(0.5)
    assert result["precision_at_1"] == approx(0.5)
    assert result["frequent_recall"] == 1.0 and result["rare_recall"] == 0.0 and result["unseen_recall"] == approx(1.0)
    # E11.9: gold (13,21) inside (5,25)? start space 8, end space 4 -> hit; PCS gold (24,43) in (20,44) -> hit
    assert result["evidence_precision"] == 1.0 and result["evidence_recall"] == 1.0
    only_dx = evaluate(gold_docs, predictions, systems={"icd10cm"})
    assert only_dx["micro_precision"] == approx(1 / 2) and only_dx["micro_recall"] == approx(1 / 2)
    assert only_dx["evidence_recall"] == 1.0 and "unseen_recall" not in only_dx


def test_set_measures_read_the_decisions_and_ranking_measures_the_candidates_too():
    gold_docs = [_doc("d1", ("E11.9", "icd10cm"), ("I10", "icd10cm"))]
    decided = DocumentPrediction(doc_id="d1", codes=[CodePrediction(code="E11.9", system="icd10cm", score=0.9)])
    with_candidates = DocumentPrediction(
        doc_id="d1",
        codes=list(decided.codes),
        candidates=[
            CodePrediction(code="X99.9", system="icd10cm", score=0.3),
            CodePrediction(code="I10", system="icd10cm", score=0.2),
        ],
    )
    alone, ranked = evaluate(gold_docs, [decided]), evaluate(gold_docs, [with_candidates])
    assert ranked["micro_precision"] == alone["micro_precision"] == 1.0
    assert ranked["micro_recall"] == alone["micro_recall"] == 0.5
    assert alone["map"] == approx(0.5) and ranked["map"] == approx((1 + 2 / 3) / 2)
    assert ranked["recall_at_5"] == 1.0
