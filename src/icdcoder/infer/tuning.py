"""Tune the span coder's fusion on dev: a grid over the signal weights, each system's threshold per row, then
each system's threshold for the codes no training note carries.

Stage 1 (:meth:`SpanPredictor.segment_outputs`) runs once; every setting of the grid only re-weighs the
same signals. :class:`FusionTable` holds each note's codes with their best value of every signal as one
matrix, so a setting is a matrix product and a sort per note and system;
:func:`icdcoder.evaluate.thresholds.best_threshold` scores all thresholds of a ranking in one pass over cumulative
hits. Both give what :func:`icdcoder.infer.fusion.aggregate` and the metrics of :mod:`icdcoder.evaluate.metrics`
give, fast enough to try hundreds of settings.

Every threshold maximises the micro-F1 of the decisions; the codes below it stay in the ranking as candidates, so
the ranking's MAP does not depend on it. The grid picks the weights by micro-F1 + MAP (``tuning_objective: f1``:
micro-F1 alone). The untrained codes' threshold (:func:`best_untrained_threshold`) is picked last, for the chosen
weights, by micro-F1 too: a lower threshold for them buys unseen-code recall at a low precision (the trade, threshold
by threshold: ``icdcoder experiment run unseen_threshold``), and below the threshold they stay in the ranking, where a
reviewer sees them as candidates.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from icdcoder.data.schema import Document
from icdcoder.evaluate.metrics import macro_prf, micro_prf
from icdcoder.evaluate.thresholds import THRESHOLDS, best_threshold
from icdcoder.infer.fusion import (
    SCORE_DIGITS,
    code_threshold,
    collect_signals,
    signal_weights,
)
from icdcoder.infer.settings import CoderSettings
from icdcoder.infer.signals import (
    HELD_WEIGHTS,
    SIGNAL_WEIGHTS,
    SIGNALS,
    WEIGHT_GRID,
    NoteOutputs,
)
from icdcoder.ontology.labels import CODER_SYSTEMS

if TYPE_CHECKING:
    from icdcoder.infer.trees import TreeFusion

#: the settings fields the grid varies, in ``WEIGHT_GRID`` order (the weight columns of the tuning table)
GRID_WEIGHTS = tuple(SIGNAL_WEIGHTS[signal] for signal in WEIGHT_GRID)


class FusionTable:
    """Every (note, code) of stage-1 outputs with its best value of each signal, grouped by note and system,
    codes in alphabetical order within a group (the tie order of :func:`aggregate`)."""

    def __init__(self, outputs: Sequence[NoteOutputs]) -> None:
        self.doc_ids = [note.doc_id for note in outputs]
        rows: list[list[float]] = []
        codes: list[str] = []
        untrained: list[bool] = []
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
                    untrained.append(found[(code, system)].untrained)
                self.groups[(index, system)] = (start, len(codes))
        self.values = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(SIGNALS))
        self.codes = codes
        #: whether no training note carries the row's code (``ScoredCode.untrained``)
        self.untrained = untrained

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
        flagged = self.flagged_rankings(settings, system)
        return {doc_id: [(score, code) for score, code, _ in items] for doc_id, items in flagged.items()}

    def flagged_rankings(self, settings: CoderSettings, system: str) -> dict[str, list[tuple[float, str, bool]]]:
        """:meth:`rankings` with each code's ``untrained`` flag."""
        scores = self.scores(settings, system)
        ranked = {}
        for index, doc_id in enumerate(self.doc_ids):
            start, end = self.groups[(index, system)]
            order = np.argsort(-scores[start:end], kind="stable")[: settings.max_codes_per_system]
            ranked[doc_id] = [
                (float(scores[start + i]), self.codes[start + i], self.untrained[start + i])
                for i in order
                if scores[start + i] > 0
            ]
        return ranked


class TreeTable:
    """Stage-1 outputs scored by fusion trees, with :class:`FusionTable`'s rankings, as :func:`aggregate` ranks them
    under ``fusion: trees`` (the trees' probabilities do not depend on the settings' weights)."""

    def __init__(self, outputs: Sequence[NoteOutputs], trees: TreeFusion) -> None:
        self.ranked: dict[str, dict[str, list[tuple[float, str, bool]]]] = {system: {} for system in CODER_SYSTEMS}
        for note in outputs:
            found = collect_signals(note)
            for system in CODER_SYSTEMS:
                scores = trees.scores(found, system)
                rounded = ((round(score, SCORE_DIGITS), code) for code, score in scores.items())
                self.ranked[system][note.doc_id] = sorted(
                    ((score, code, found[(code, system)].untrained) for score, code in rounded if score > 0),
                    key=lambda item: (-item[0], item[1]),
                )

    def flagged_rankings(self, settings: CoderSettings, system: str) -> dict[str, list[tuple[float, str, bool]]]:
        depth = settings.max_codes_per_system
        return {doc_id: items[:depth] for doc_id, items in self.ranked[system].items()}

    def rankings(self, settings: CoderSettings, system: str) -> dict[str, list[tuple[float, str]]]:
        flagged = self.flagged_rankings(settings, system)
        return {doc_id: [(score, code) for score, code, _ in items] for doc_id, items in flagged.items()}


def best_untrained_threshold(
    table: FusionTable | TreeTable, gold: dict[str, set[str]], settings: CoderSettings, system: str
) -> dict:
    """The threshold of ``THRESHOLDS`` for ``system``'s untrained codes that maximises micro-F1 of the decisions, the
    other codes kept at ``settings.threshold``; the shared threshold unless another one scores higher.

    Returns the threshold, its micro-F1 and macro-F1, and both at the shared threshold (``shared_*``).
    """
    ranked = table.flagged_rankings(settings, system)
    shared = settings.threshold[system]

    def scores(threshold: float) -> dict:
        split = settings.model_copy(update={"untrained_threshold": {system: threshold}})
        kept = {
            doc_id: [code for score, code, untrained in items if score >= code_threshold(split, system, untrained)]
            for doc_id, items in ranked.items()
        }
        return {"f1": micro_prf(gold, kept)["micro_f1"], "macro_f1": macro_prf(gold, kept)["macro_f1"]}

    at_shared = scores(shared)
    chosen, best = shared, at_shared
    for threshold in THRESHOLDS:
        found = scores(threshold)
        if found["f1"] > best["f1"] + 1e-12:
            chosen, best = threshold, found
    rounded = {key: round(value, 4) for key, value in best.items()}
    return {"threshold": chosen, **rounded, **{f"shared_{key}": round(value, 4) for key, value in at_shared.items()}}


def untrained_thresholds(
    table: FusionTable | TreeTable, gold: dict[str, dict[str, set[str]]], settings: CoderSettings
) -> dict[str, dict]:
    """:func:`best_untrained_threshold` of each of ``settings.untrained_threshold_systems``, for ``settings``' weights
    and (trained codes') thresholds."""
    return {
        system: best_untrained_threshold(table, gold[system], settings, system)
        for system in settings.untrained_threshold_systems
    }


def objective(row: dict, name: str = "f1+map") -> float:
    """What tuning maximises, of one row of the tuning table: D and P micro-F1 plus MAP (``name="f1"``: micro-F1)."""
    maps = row["D_map"] + row["P_map"] if name == "f1+map" else 0.0
    return row["D_f1"] + row["P_f1"] + maps


def gold_by_system(documents: Sequence[Document]) -> dict[str, dict[str, set[str]]]:
    """system -> note id -> its gold codes of that system."""
    return {system: {d.id: d.code_set(system) for d in documents} for system in CODER_SYSTEMS}


def tuned_row(
    table: FusionTable | TreeTable,
    gold: dict[str, dict[str, set[str]]],
    settings: CoderSettings,
    memo: dict | None = None,
) -> tuple[dict, dict]:
    """D and P micro-F1 of ``settings``' weights at each system's best threshold, the MAP of their rankings, and those
    thresholds.

    ``memo`` (a dict kept across calls) remembers each system's result by the weights that system's scores use: grid
    rows that differ only in a procedure-only weight share their diagnosis result, and the other way round.
    """
    row, thresholds = {}, {}
    memo = {} if memo is None else memo
    for system, task in (("icd10cm", "D"), ("icd10pcs", "P")):
        key = (system, settings.max_codes_per_system, tuple(signal_weights(settings, system).values()))
        if key not in memo:
            memo[key] = best_threshold(table.rankings(settings, system), gold[system])
        found = memo[key]
        thresholds[system] = found["threshold"]
        row.update({f"{task}_f1": found["f1"], f"{task}_map": found["map"], f"{task}_threshold": found["threshold"]})
    return row, thresholds


def tune_fusion(outputs: list[NoteOutputs], dev: list[Document], settings: CoderSettings) -> dict:
    """Grid over the signal weights (``WEIGHT_GRID``), the others at their ``HELD_WEIGHTS``; per-system thresholds;
    then, for the best weights, the thresholds of the untrained codes of ``settings.untrained_threshold_systems``
    (:func:`best_untrained_threshold`).

    Returns the best settings and a table with the best row of each set of signals the grid weighs (which weights
    are above 0): the ablation of every signal (LLM, lexicon, English lexicon, ontology terms, composed procedures,
    matched concepts, measured values). Kept in the model's ``coder.json``, the whole grid would be megabytes.
    A signal the stage-1 outputs lack stays at 0.
    """
    has_llm = any(o.llm_segments for o in outputs)
    table = FusionTable(outputs)
    present = {
        **{name: bool((table.values[:, column] > 0).any()) for column, name in enumerate(SIGNALS)},
        "llm": has_llm,
    }
    grid = itertools.product(*(values if present[signal] else [0.0] for signal, values in WEIGHT_GRID.items()))
    gold = gold_by_system(dev)
    best_by_signals: dict[tuple[bool, ...], dict] = {}
    best: tuple[float, dict] | None = None
    memo: dict = {}
    for values in grid:
        weights = {**dict(zip(GRID_WEIGHTS, values)), **HELD_WEIGHTS}
        scores, thresholds = tuned_row(table, gold, settings.model_copy(update=weights), memo)
        row = {**dict(zip(GRID_WEIGHTS, values)), **scores}
        signals = tuple(value > 0 for value in values)
        score = objective(row, settings.tuning_objective)
        if signals not in best_by_signals or score > objective(best_by_signals[signals], settings.tuning_objective):
            best_by_signals[signals] = row
        if best is None or score > best[0]:
            best = (score, {**weights, "threshold": thresholds})
    if best is None:  # the grid always has a row: every signal's weights include one value at least
        raise ValueError("empty weight grid")
    untrained = untrained_thresholds(table, gold, settings.model_copy(update=best[1]))
    best_settings = {
        **best[1],
        "untrained_threshold": {system: found["threshold"] for system, found in untrained.items()},
        "tuning_objective": settings.tuning_objective,
        "fusion": "mean",
    }
    result = {"best_settings": best_settings, "table": list(best_by_signals.values()), "untrained_threshold": untrained}
    if has_llm:  # what the LLM's answers alone are worth: the measure of its training
        result["llm_alone"] = tuned_row(table, gold, llm_alone(settings))[0]
    return result


def tune_tree_thresholds(
    outputs: list[NoteOutputs], dev: list[Document], settings: CoderSettings, trees: TreeFusion
) -> dict:
    """Each system's threshold on the trees' probabilities (micro-F1 of the decisions), then the untrained codes'
    thresholds of ``settings.untrained_threshold_systems``, as :func:`tune_fusion` tunes the weighted mean's; no grid
    (the trees learned how the signals combine). The table has the one row."""
    table, gold = TreeTable(outputs, trees), gold_by_system(dev)
    row, thresholds = tuned_row(table, gold, settings)
    untrained = untrained_thresholds(table, gold, settings.model_copy(update={"threshold": thresholds}))
    best_settings = {
        "threshold": thresholds,
        "untrained_threshold": {system: found["threshold"] for system, found in untrained.items()},
        "tuning_objective": settings.tuning_objective,
        "fusion": "trees",
    }
    return {"best_settings": best_settings, "table": [{"fusion": "trees", **row}], "untrained_threshold": untrained}


def llm_alone(settings: CoderSettings) -> CoderSettings:
    """``settings`` with every signal but the LLM weighted 0: what an adapter's training taught it."""
    return settings.model_copy(update={**dict.fromkeys(SIGNAL_WEIGHTS.values(), 0.0), "llm_weight": 1.0})


def with_tuned_thresholds(
    outputs: list[NoteOutputs], dev: list[Document], settings: CoderSettings, untrained: bool = False
) -> CoderSettings:
    """``settings`` with each system's threshold tuned on ``dev`` (micro-F1 of the decisions), weights unchanged.

    ``untrained``: the untrained codes' thresholds tuned after, as :func:`tune_fusion` tunes them; otherwise one
    threshold per system (``settings``' untrained thresholds dropped).
    """
    return tuned_thresholds(FusionTable(outputs), gold_by_system(dev), settings, untrained)


def tuned_thresholds(
    table: FusionTable | TreeTable, gold: dict[str, dict[str, set[str]]], settings: CoderSettings, untrained: bool
) -> CoderSettings:
    """:func:`with_tuned_thresholds` on the notes of ``table`` (gold: system -> note id -> codes)."""
    _, thresholds = tuned_row(table, gold, settings)
    tuned = settings.model_copy(update={"threshold": thresholds, "untrained_threshold": {}})
    if not untrained:
        return tuned
    found = untrained_thresholds(table, gold, tuned)
    return tuned.model_copy(
        update={"untrained_threshold": {system: best["threshold"] for system, best in found.items()}}
    )
