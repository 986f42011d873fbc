"""Coding metrics: set-based P/R/F1, ranking metrics (MAP, P@k, R@k), AUC, evidence scores.

The functions work on plain mappings so that the CodiEsp scorer
(:mod:`icdcoder.evaluate.codiesp`) and :func:`evaluate` (over
:class:`~icdcoder.data.schema.Document` / :class:`~icdcoder.predictor.DocumentPrediction`)
share one implementation:

* ``gold``: ``{doc_id: set of codes}``. Its keys are THE evaluated documents
  (a document may have an empty set).
* ``ranked``: ``{doc_id: [code, ...]}`` best first. Predictions for documents
  that are not keys of ``gold`` are ignored by every metric.

Conventions (documented once, used everywhere):

* 0/0 is 0: precision with no predictions, recall with no gold codes and F1
  when P + R = 0 are all 0.0 (scikit-learn's ``zero_division=0``). The one
  exception is a frequency-band recall over an empty band, which is ``None``
  (undefined, and reported with its count so nobody mistakes it for a score).
* Averages are order-independent: every float sum is :func:`math.fsum` (exactly
  rounded), so a score does not depend on the order of a dict or a set (hash
  seed, file order of the documents); the same predictions give bit-identical
  numbers on every run.
* A ranking is de-duplicated before anything is computed: the first occurrence
  of a code is kept and later repeats do not occupy a rank.
* Micro P/R/F1 count every predicted code, including codes outside any label
  space (they are false positives, never silently dropped). Macro P/R/F1 average
  the per-code scores over the codes that occur in the evaluated gold (default)
  or over an explicit ``label_space``; macro F1 is the mean of per-code F1, not
  the F1 of macro P and macro R. Predicted codes outside the macro label space
  still hurt micro precision and are counted in ``n_pred_outside_label_space``.

MAP follows the CodiEsp-D/P scorer (``codiespD_P_evaluation.py`` of
TeMU-BSC/codiesp-evaluation-script, which calls ``trectools`` ``get_map`` with
``trec_eval=False``): ranks come from the order in the file, duplicates are
dropped keeping the first, the AP of a document is the sum of precision@rank at
each relevant rank divided by the number of distinct gold codes of that
document, and MAP is the mean over the gold documents (a gold document with no
predictions contributes 0). The pinned ``trectools==0.0.42`` (and 0.0.50)
actually divides the summed AP by the number of documents *in the run* (those
with at least one valid prediction, gold or not); that variant is available as
:func:`trectools_map` and equals :func:`mean_average_precision` whenever every
gold document, and only gold documents, received a prediction.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from icdcoder.data.schema import Document
    from icdcoder.predictor import DocumentPrediction

#: characters of tolerance on each side of a gold reference (CodiEsp-X)
EVIDENCE_SLACK = 10
#: training-document counts that bound the frequency bands: unseen (0), rare (1-4), frequent (>=5)
RARE_MAX_COUNT = 4
DEFAULT_KS = (1, 5, 10)

Span = tuple[int, int]


def safe_divide(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` with the 0/0 (and x/0) convention of this module: 0.0."""
    return numerator / denominator if denominator else 0.0


def f1_score(precision: float, recall: float) -> float:
    """Harmonic mean; 0.0 when both are 0."""
    return safe_divide(2 * precision * recall, precision + recall)


def dedupe_ranking(ranking: Iterable[Hashable]) -> list:
    """The ranking with repeats removed, keeping each code's first (best) position."""
    return list(dict.fromkeys(ranking))


def restrict_to_gold_documents(gold: Mapping[str, Any], ranked: Mapping[str, Sequence]) -> dict[str, list]:
    """Predictions of the evaluated documents only, each ranking de-duplicated."""
    return {doc: dedupe_ranking(ranked.get(doc, ())) for doc in gold}


# --------------------------------------------------------------------------- sets


def micro_prf(gold: Mapping[str, set], ranked: Mapping[str, Sequence]) -> dict[str, float]:
    """Micro precision/recall/F1 over (document, code) pairs of the gold documents."""
    predicted = restrict_to_gold_documents(gold, ranked)
    true_positives = sum(len(gold[doc] & set(codes)) for doc, codes in predicted.items())
    n_predicted = sum(len(codes) for codes in predicted.values())
    n_gold = sum(len(codes) for codes in gold.values())
    precision = safe_divide(true_positives, n_predicted)
    recall = safe_divide(true_positives, n_gold)
    return {
        "micro_precision": precision,
        "micro_recall": recall,
        "micro_f1": f1_score(precision, recall),
        "true_positives": true_positives,
        "n_predicted": n_predicted,
        "n_gold": n_gold,
    }


def per_label_counts(gold: Mapping[str, set], ranked: Mapping[str, Sequence]) -> dict[Hashable, list[int]]:
    """``{code: [tp, fp, fn]}`` over the gold documents."""
    counts: dict[Hashable, list[int]] = {}
    for doc, codes in restrict_to_gold_documents(gold, ranked).items():
        predicted = set(codes)
        for code in predicted | gold[doc]:
            tally = counts.setdefault(code, [0, 0, 0])
            if code in predicted and code in gold[doc]:
                tally[0] += 1
            elif code in predicted:
                tally[1] += 1
            else:
                tally[2] += 1
    return counts


def macro_prf(
    gold: Mapping[str, set], ranked: Mapping[str, Sequence], label_space: Iterable[Hashable] | None = None
) -> dict[str, float]:
    """Macro precision/recall/F1 over ``label_space`` (default: codes occurring in ``gold``).

    A label of the space with neither gold nor predictions scores 0 (0/0 convention).
    """
    counts = per_label_counts(gold, ranked)
    labels = set(label_space) if label_space is not None else {code for codes in gold.values() for code in codes}
    outside = sum(tally[0] + tally[1] for code, tally in counts.items() if code not in labels)
    precisions, recalls, f1s = [], [], []
    for label in labels:
        tp, fp, fn = counts.get(label, (0, 0, 0))
        precision, recall = safe_divide(tp, tp + fp), safe_divide(tp, tp + fn)
        precisions.append(precision)
        recalls.append(recall)
        f1s.append(f1_score(precision, recall))
    return {
        "macro_precision": safe_divide(math.fsum(precisions), len(labels)),
        "macro_recall": safe_divide(math.fsum(recalls), len(labels)),
        "macro_f1": safe_divide(math.fsum(f1s), len(labels)),
        "n_labels": len(labels),
        "n_pred_outside_label_space": outside,
    }


# ----------------------------------------------------------------------- rankings


def average_precision(ranking: Sequence[Hashable], relevant: set) -> float:
    """CodiEsp/trectools AP: sum of precision@rank at each relevant rank / number of relevant codes."""
    hits, terms = 0, []
    for rank, code in enumerate(dedupe_ranking(ranking), start=1):
        if code in relevant:
            hits += 1
            terms.append(hits / rank)
    return safe_divide(math.fsum(terms), len(relevant))


def mean_average_precision(gold: Mapping[str, set], ranked: Mapping[str, Sequence]) -> float:
    """Mean AP over gold documents that have at least one gold code (no predictions -> AP 0)."""
    scored = [doc for doc, codes in gold.items() if codes]
    return safe_divide(math.fsum(average_precision(ranked.get(doc, ()), gold[doc]) for doc in scored), len(scored))


def trectools_map(gold: Mapping[str, set], ranked: Mapping[str, Sequence]) -> float:
    """MAP with the denominator of ``trectools`` 0.0.42 ``get_map``: documents in the run.

    The run is every document with at least one prediction (after the caller's
    filtering); AP is summed over run documents that have gold codes.
    """
    run_docs = [doc for doc, codes in ranked.items() if len(codes)]
    total = math.fsum(average_precision(ranked[doc], gold[doc]) for doc in run_docs if gold.get(doc))
    return safe_divide(total, len(run_docs))


def precision_recall_at_k(gold: Mapping[str, set], ranked: Mapping[str, Sequence], k: int) -> tuple[float, float]:
    """Mean P@k (hits in the top k / k) and R@k (hits in the top k / gold) over gold documents with codes."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scored = [doc for doc, codes in gold.items() if codes]
    precisions, recalls = [], []
    for doc in scored:
        hits = len(set(dedupe_ranking(ranked.get(doc, ()))[:k]) & gold[doc])
        precisions.append(hits / k)
        recalls.append(hits / len(gold[doc]))
    return safe_divide(math.fsum(precisions), len(scored)), safe_divide(math.fsum(recalls), len(scored))


# --------------------------------------------------------------------------- AUC


def auc_scores(
    gold: Mapping[str, set],
    scores: Mapping[str, Mapping[Any, float]],
    label_space: Iterable[Hashable] | None = None,
) -> dict[str, float | None]:
    """Micro and macro ROC AUC over documents x labels (scikit-learn ``roc_auc_score``).

    ``scores[doc][code]`` is the model's score; codes a document does not list get
    a score below every listed one. The label space defaults to gold codes plus
    predicted codes. Macro skips labels with only one class among the documents;
    a value is ``None`` when it cannot be computed.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    docs = sorted(gold)  # rows in a fixed order, whatever the mapping's order
    if label_space is None:
        seen = {c for codes in gold.values() for c in codes} | {c for d in docs for c in scores.get(d, {})}
        labels = sorted(seen, key=str)
    else:
        labels = sorted(set(label_space), key=str)
    if not docs or not labels:
        return {"micro_auc": None, "macro_auc": None}
    listed = [value for doc in docs for value in scores.get(doc, {}).values()]
    floor = (min(listed) if listed else 0.0) - 1.0
    column = {label: index for index, label in enumerate(labels)}
    truth = np.zeros((len(docs), len(labels)), dtype=np.int8)
    matrix = np.full((len(docs), len(labels)), floor, dtype=np.float64)
    for row, doc in enumerate(docs):
        for code in gold[doc]:
            if code in column:
                truth[row, column[code]] = 1
        for code, value in scores.get(doc, {}).items():
            if code in column:
                matrix[row, column[code]] = value
    positives = truth.sum(axis=0)
    two_class = (positives > 0) & (positives < len(docs))
    per_label = [roc_auc_score(truth[:, j], matrix[:, j]) for j in np.flatnonzero(two_class)]
    macro = math.fsum(float(value) for value in per_label) / len(per_label) if per_label else None
    flat_truth = truth.ravel()
    micro = float(roc_auc_score(flat_truth, matrix.ravel())) if 0 < flat_truth.sum() < flat_truth.size else None
    return {"micro_auc": micro, "macro_auc": macro}


# --------------------------------------------------------------- frequency bands


def code_frequencies(train_docs: Iterable[Document]) -> Counter:
    """Number of training documents that have each (canonical) code."""
    counts: Counter = Counter()
    for doc in train_docs:
        counts.update(doc.code_set())
    return counts


def frequency_band(count: int) -> str:
    """``unseen`` (0 training documents), ``rare`` (1-4) or ``frequent`` (>=5)."""
    if count == 0:
        return "unseen"
    return "rare" if count <= RARE_MAX_COUNT else "frequent"


def frequency_band_recall(
    gold: Mapping[str, set], ranked: Mapping[str, Sequence], train_counts: Mapping[Any, int]
) -> dict[str, float | int | None]:
    """Recall on gold (document, code) pairs grouped by the code's training frequency band.

    An empty band has recall ``None`` (and ``n_<band>`` 0).
    """
    found = {band: 0 for band in ("unseen", "rare", "frequent")}
    total = dict(found)
    predicted = restrict_to_gold_documents(gold, ranked)
    for doc, codes in gold.items():
        for code in codes:
            band = frequency_band(train_counts.get(code, 0))
            total[band] += 1
            found[band] += code in predicted[doc]
    result: dict[str, float | int | None] = {}
    for band in total:
        result[f"{band}_recall"] = found[band] / total[band] if total[band] else None
        result[f"n_{band}"] = total[band]
    return result


# ------------------------------------------------------------------------ evidence


def reference_inside(gold_span: Span, predicted_span: Span, slack: int = EVIDENCE_SLACK) -> bool:
    """CodiEsp-X hit rule: the gold reference lies inside the prediction, each side at most ``slack`` chars wider."""
    start_space = gold_span[0] - predicted_span[0]
    end_space = predicted_span[1] - gold_span[1]
    return 0 <= start_space <= slack and 0 <= end_space <= slack


def evidence_prf(
    gold: Mapping[tuple[str, Any], Sequence[Span]],
    predicted: Mapping[tuple[str, Any], Sequence[Span]],
    slack: int = EVIDENCE_SLACK,
) -> dict[str, float]:
    """CodiEsp-X precision/recall/F1 over (document, code) pairs.

    Mirrors ``codiespX_evaluation.py``: a gold (document, code) is a hit when ANY
    of its references (a multi-piece reference runs from the first piece's start
    to the last piece's end: pass it as one span) lies inside ANY predicted
    interval for the same document and code, within ``slack`` characters on each
    side. Labels (DIAGNOSTICO/PROCEDIMIENTO) are not compared. P = hits / distinct
    predicted (document, code) pairs, R = hits / distinct gold pairs.
    The caller restricts ``predicted`` to the evaluated documents.
    """
    hits = sum(
        1
        for key, gold_spans in gold.items()
        if any(reference_inside(g, p, slack) for g in gold_spans for p in predicted.get(key, ()))
    )
    precision = safe_divide(hits, len(predicted))
    recall = safe_divide(hits, len(gold))
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1_score(precision, recall),
        "hits": hits,
        "n_predicted": len(predicted),
        "n_gold": len(gold),
    }


# ------------------------------------------------------------ documents in, dict out


def _gold_sets(gold_docs: Sequence[Document], systems: set[str] | None) -> dict[str, set[str]]:
    return {doc.id: {g.code for g in doc.codes if systems is None or g.system in systems} for doc in gold_docs}


def _gold_spans(gold_docs: Sequence[Document], systems: set[str] | None) -> dict[tuple[str, str], list[Span]]:
    spans: dict[tuple[str, str], list[Span]] = {}
    for doc in gold_docs:
        for gold in doc.codes:
            if (systems is None or gold.system in systems) and gold.evidence:
                spans.setdefault((doc.id, gold.code), []).extend((e.start, e.end) for e in gold.evidence)
    return spans


def evaluate(
    gold_docs: Sequence[Document],
    predictions: Sequence[DocumentPrediction],
    train_counts: Mapping[str, int] | None = None,
    label_space: Iterable[str] | None = None,
    systems: Iterable[str] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, Any]:
    """All metrics of predictions against gold documents, as one flat JSON-ready dict.

    Codes are compared as canonical strings. ``systems`` restricts both sides to those code systems. Set metrics
    (F1, frequency-band recall, evidence) read the decisions (:meth:`DocumentPrediction.ranked`); ranking metrics
    (MAP, P/R@k, AUC) the whole ranking, candidates included (:meth:`DocumentPrediction.ranking`). Evidence scores
    use the CodiEsp-X rule over gold codes that carry evidence; frequency bands need ``train_counts`` (see
    :func:`code_frequencies`).
    """
    chosen = set(systems) if systems is not None else None
    gold = _gold_sets(gold_docs, chosen)
    decided: dict[str, list[str]] = {}
    ranked: dict[str, list[str]] = {}
    scores: dict[str, dict[str, float]] = {}
    predicted_spans: dict[tuple[str, str], list[Span]] = {}
    for prediction in predictions:
        if prediction.doc_id not in gold:
            continue
        ordered = prediction.ranked(chosen)
        decided.setdefault(prediction.doc_id, []).extend(p.code for p in ordered)
        ranking = prediction.ranking(chosen)
        ranked.setdefault(prediction.doc_id, []).extend(p.code for p in ranking)
        for p in ranking:
            scores.setdefault(prediction.doc_id, {}).setdefault(p.code, p.score)
        for p in ordered:
            if p.evidence:
                predicted_spans.setdefault((prediction.doc_id, p.code), []).extend((e.start, e.end) for e in p.evidence)
    space = list(label_space) if label_space is not None else None
    result: dict[str, Any] = {"n_docs": len(gold)}
    result.update(micro_prf(gold, decided))
    result.update(macro_prf(gold, decided, space))
    result["map"] = mean_average_precision(gold, ranked)
    for k in ks:
        result[f"precision_at_{k}"], result[f"recall_at_{k}"] = precision_recall_at_k(gold, ranked, k)
    result.update(auc_scores(gold, scores, space))
    if train_counts is not None:
        result.update(frequency_band_recall(gold, decided, train_counts))
    evidence = evidence_prf(_gold_spans(gold_docs, chosen), predicted_spans)
    result.update({f"evidence_{name}": value for name, value in evidence.items()})
    return result
