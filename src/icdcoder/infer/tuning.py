"""Tune the span coder's fusion on dev: a grid over the signal weights, each system's threshold per row.

Stage 1 (:meth:`SpanLLMPredictor.segment_outputs`) runs once; every setting of the grid only re-weighs the
same signals. :class:`FusionTable` holds each note's codes with their best value of every signal as one
matrix, so a setting is a matrix product and a sort per note and system; :func:`best_threshold` scores all
thresholds of a ranking in one pass over cumulative hits. Both give what :func:`icdcoder.infer.coder.aggregate`
and the metrics of :mod:`icdcoder.evaluate.metrics` give, fast enough to try hundreds of settings.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from icdcoder.data.schema import Document
from icdcoder.evaluate.metrics import f1_score, safe_divide
from icdcoder.infer.coder import (
    CODER_SYSTEMS,
    SCORE_DIGITS,
    SIGNAL_WEIGHTS,
    SIGNALS,
    CoderSettings,
    NoteOutputs,
    collect_signals,
    signal_weights,
)

#: the weights the grid tries for each signal the stage-1 outputs carry (retrieval's weight is fixed at 1)
WEIGHT_GRID = {
    "llm": [0.0, 0.25, 0.5, 1.0, 2.0, 4.0],
    "lexical": [0.0, 1.0, 2.0, 4.0, 8.0],
    "english": [0.0, 1.0, 2.0, 4.0, 8.0],
    "ontology": [0.0, 1.0, 2.0, 4.0, 8.0],
    "procedure": [0.0, 0.5, 1.0, 2.0, 4.0],
    "concept": [0.0, 0.5, 1.0, 2.0, 4.0],
    "quantity": [0.0, 1.0, 2.0, 4.0],
}
#: the settings fields the grid varies, in ``WEIGHT_GRID`` order (the weight columns of the tuning table)
GRID_WEIGHTS = tuple(SIGNAL_WEIGHTS[signal] for signal in WEIGHT_GRID)
#: the thresholds tried for each system
THRESHOLDS = [round(step * 0.025, 3) for step in range(40)]


class FusionTable:
    """Every (note, code) of stage-1 outputs with its best value of each signal, grouped by note and system,
    codes in alphabetical order within a group (the tie order of :func:`aggregate`)."""

    def __init__(self, outputs: Sequence[NoteOutputs]) -> None:
        self.doc_ids = [note.doc_id for note in outputs]
        rows, codes = [], []
        #: (note index, system) -> the rows [start, end) of its codes
        self.groups: dict[tuple[int, str], tuple[int, int]] = {}
        for index, note in enumerate(outputs):
            found = collect_signals(note)
            for system in CODER_SYSTEMS:
                start = len(codes)
                for code in sorted(code for code, sys_ in found if sys_ == system):
                    best = found[(code, system)].best
                    rows.append([best.get(name, 0.0) for name in SIGNALS])
                    codes.append(code)
                self.groups[(index, system)] = (start, len(codes))
        self.values = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(SIGNALS))
        self.codes = codes

    def scores(self, settings: CoderSettings, system: str) -> np.ndarray:
        """Each row's fused score with ``system``'s weights (the weighted mean of its signals), rounded as predictions
        round it."""
        by_signal = signal_weights(settings, system)
        weights = np.asarray([by_signal[name] for name in SIGNALS], dtype=np.float64)
        total = weights.sum()
        if total <= 0:
            return np.zeros(len(self.codes))
        return np.round(self.values @ weights / total, SCORE_DIGITS)

    def rankings(self, settings: CoderSettings, system: str) -> dict[str, list[tuple[float, str]]]:
        """Per note, its ``(score, code)`` of ``system`` best first: the top ``max_codes_per_system`` with a score > 0."""
        scores = self.scores(settings, system)
        ranked = {}
        for index, doc_id in enumerate(self.doc_ids):
            start, end = self.groups[(index, system)]
            order = np.argsort(-scores[start:end], kind="stable")[: settings.max_codes_per_system]
            ranked[doc_id] = [(float(scores[start + i]), self.codes[start + i]) for i in order if scores[start + i] > 0]
        return ranked


def best_threshold(ranked: dict[str, list[tuple[float, str]]], gold: dict[str, set[str]]) -> dict[str, float]:
    """The threshold of ``THRESHOLDS`` maximising micro-F1 + MAP of the thresholded rankings, for one system.

    Both count: F1 reads the set, CodiEsp's MAP reads the (thresholded) ranked list. A threshold keeps a prefix
    of each ranking, so cumulative true positives and precision sums give every threshold's metrics at once.
    """
    thresholds = np.asarray(THRESHOLDS)
    true_positives = np.zeros(len(thresholds))
    predicted = np.zeros(len(thresholds))
    precision_sums = np.zeros(len(thresholds))
    scored_documents = sum(1 for codes in gold.values() if codes)
    n_gold = sum(len(codes) for codes in gold.values())
    for doc_id, relevant in gold.items():
        items = ranked.get(doc_id, [])
        scores = np.asarray([score for score, _ in items], dtype=np.float64)
        hits = np.asarray([code in relevant for _, code in items], dtype=np.float64)
        cumulative_hits = np.concatenate(([0.0], np.cumsum(hits)))
        ranks = np.arange(1, len(items) + 1)
        cumulative_precision = np.concatenate(([0.0], np.cumsum(hits * cumulative_hits[1:] / ranks)))
        kept = np.searchsorted(-scores, -thresholds, side="right")  # scores >= threshold, best first
        true_positives += cumulative_hits[kept]
        predicted += kept
        if relevant:
            precision_sums += cumulative_precision[kept] / len(relevant)
    best = {"threshold": 0.5, "f1": 0.0, "map": 0.0}
    best_sum = 0.0
    for position, threshold in enumerate(THRESHOLDS):
        f1 = f1_score(safe_divide(true_positives[position], predicted[position]), safe_divide(true_positives[position], n_gold))
        average_precision = safe_divide(precision_sums[position], scored_documents)
        if f1 + average_precision > best_sum:
            best_sum = f1 + average_precision
            best = {"threshold": round(threshold, 3), "f1": round(float(f1), 4), "map": round(float(average_precision), 4)}
    return best


def objective(row: dict) -> float:
    """What tuning maximises: D and P micro-F1 plus MAP, of one row of the tuning table."""
    return row["D_f1"] + row["D_map"] + row["P_f1"] + row["P_map"]


def gold_by_system(documents: Sequence[Document]) -> dict[str, dict[str, set[str]]]:
    """system -> note id -> its gold codes of that system."""
    return {system: {d.id: d.code_set(system) for d in documents} for system in CODER_SYSTEMS}


def tuned_row(
    table: FusionTable, gold: dict[str, dict[str, set[str]]], settings: CoderSettings, memo: dict | None = None
) -> tuple[dict, dict]:
    """D and P micro-F1 and MAP of ``settings``' weights at each system's best threshold, and those thresholds.

    ``memo`` (a dict kept across calls) remembers each system's result by the weights that system's scores use:
    grid rows that differ only in a procedure-only weight share their diagnosis result, and the other way round.
    """
    row, thresholds = {}, {}
    memo = {} if memo is None else memo
    for system, task in (("icd10cm", "D"), ("icd10pcs", "P")):
        key = (system, tuple(signal_weights(settings, system).values()))
        if key not in memo:
            memo[key] = best_threshold(table.rankings(settings, system), gold[system])
        found = memo[key]
        thresholds[system] = found["threshold"]
        row.update({f"{task}_f1": found["f1"], f"{task}_map": found["map"], f"{task}_threshold": found["threshold"]})
    return row, thresholds


def tune_fusion(outputs: list[NoteOutputs], dev: list[Document], settings: CoderSettings) -> dict:
    """Grid over the signal weights (``WEIGHT_GRID``) with retrieval_weight = 1; per-system thresholds.

    Returns the best settings and a table with the best row of each set of signals the grid weighs (which weights
    are above 0): the ablation of every signal (LLM, lexicon, English lexicon, ontology terms, composed procedures,
    matched concepts, measured values). Kept in the model's ``coder.json``, the whole grid would be megabytes.
    A signal the stage-1 outputs lack stays at 0; so does the surface bonus: retrieval already
    counts the training surface forms.
    """
    has_llm = any(o.llm_segments for o in outputs)
    table = FusionTable(outputs)
    present = {**dict(zip(SIGNALS, (table.values > 0).any(axis=0))), "llm": has_llm}
    grid = itertools.product(*(values if present[signal] else [0.0] for signal, values in WEIGHT_GRID.items()))
    gold = gold_by_system(dev)
    best_by_signals: dict[tuple[bool, ...], dict] = {}
    best, memo = None, {}
    for values in grid:
        weights = {**dict(zip(GRID_WEIGHTS, values)), "retrieval_weight": 1.0, "surface_bonus": 0.0}
        scores, thresholds = tuned_row(table, gold, settings.model_copy(update=weights), memo)
        row = {**dict(zip(GRID_WEIGHTS, values)), **scores}
        signals = tuple(value > 0 for value in values)
        if signals not in best_by_signals or objective(row) > objective(best_by_signals[signals]):
            best_by_signals[signals] = row
        if best is None or objective(row) > best[0]:
            best = (objective(row), {**weights, "threshold": thresholds})
    result = {"best_settings": best[1], "table": list(best_by_signals.values())}
    if has_llm:  # what the LLM's answers alone are worth: the measure of its training
        result["llm_alone"] = tuned_row(table, gold, llm_alone(settings))[0]
    return result


def llm_alone(settings: CoderSettings) -> CoderSettings:
    """``settings`` with every signal but the LLM weighted 0: what an adapter's training taught it."""
    return settings.model_copy(update={**dict.fromkeys(SIGNAL_WEIGHTS.values(), 0.0), "llm_weight": 1.0})


def with_tuned_thresholds(outputs: list[NoteOutputs], dev: list[Document], settings: CoderSettings) -> CoderSettings:
    """``settings`` with each system's threshold tuned on ``dev`` (micro-F1 + MAP), weights unchanged."""
    _, thresholds = tuned_row(FusionTable(outputs), gold_by_system(dev), settings)
    return settings.model_copy(update={"threshold": thresholds})
