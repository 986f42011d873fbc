"""The one threshold tuner and its grid, shared by the span coder's fusion tuning and every baseline.

A threshold decides which of a note's ranked codes are asserted (the decisions); the codes below it stay in the
ranking as candidates. So a threshold is chosen for micro-F1 of the decisions alone, and the ranking's MAP (every scored
code, decisions and candidates: :meth:`icdcoder.predictor.DocumentPrediction.ranking`) does not depend on it.
Cumulative true positives over each note's ranking give the micro-F1 of every threshold of the grid in one pass. The
scores match :func:`icdcoder.evaluate.metrics.micro_prf` of the decisions and
:func:`~icdcoder.evaluate.metrics.mean_average_precision` of the rankings.

It sits next to the metrics, below :mod:`icdcoder.infer` and :mod:`icdcoder.baselines`: both tune with it, and a
baseline must not import the coder's package.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Literal, TypedDict

import numpy as np

from icdcoder.evaluate.metrics import f1_score, safe_divide

#: what weight tuning maximises: micro-F1 of the decisions + MAP of the ranking, or micro-F1 alone
Objective = Literal["f1+map", "f1"]
#: a note's codes best first, each as ``(score, code)``
Ranking = Sequence[tuple[float, Any]]

#: probabilities of rare codes from one-vs-rest classifiers are small: the grid is fine near zero
FINE_HEAD: tuple[float, ...] = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015)
#: the thresholds every tuner tries: 0 (every scored code), the fine head, then 0.025 steps below 1
THRESHOLDS: tuple[float, ...] = (0.0, *FINE_HEAD, *(round(step * 0.025, 3) for step in range(1, 40)))


class TunedThreshold(TypedDict):
    """The chosen threshold with its micro-F1 and the ranking's MAP (rounded to 4 digits)."""

    threshold: float
    f1: float
    map: float


def best_threshold(
    ranked: Mapping[Any, Ranking],
    gold: Mapping[Any, AbstractSet[Any]],
    grid: Sequence[float] = THRESHOLDS,
) -> TunedThreshold:
    """The threshold of ``grid`` maximising micro-F1 over the notes of ``gold`` (rankings best first), with the MAP of
    the whole rankings.

    Ties go to the lowest threshold (more recall); when nothing scores above 0 the threshold is 0.5.
    """
    if not grid:
        raise ValueError("empty threshold grid")
    thresholds = np.asarray(grid, dtype=np.float64)
    true_positives = np.zeros(len(thresholds))
    predicted = np.zeros(len(thresholds))
    precision_sum = 0.0
    for scores, hits, n_relevant in _note_arrays(ranked, gold):
        cumulative_hits = np.concatenate(([0.0], np.cumsum(hits)))
        kept = np.searchsorted(-scores, -thresholds, side="right")  # scores >= threshold, best first
        true_positives += cumulative_hits[kept]
        predicted += kept
        if n_relevant:
            ranks = np.arange(1, len(hits) + 1)
            precision_sum += float(np.sum(hits * cumulative_hits[1:] / ranks)) / n_relevant
    scored_notes = sum(1 for codes in gold.values() if codes)
    n_gold = sum(len(codes) for codes in gold.values())
    average_precision = round(safe_divide(precision_sum, scored_notes), 4)
    best = TunedThreshold(threshold=0.5, f1=0.0, map=average_precision)
    for position, threshold in enumerate(grid):
        f1 = f1_score(
            safe_divide(true_positives[position], predicted[position]), safe_divide(true_positives[position], n_gold)
        )
        if f1 > best["f1"]:
            best = TunedThreshold(threshold=round(threshold, 4), f1=round(float(f1), 4), map=average_precision)
    return best


def _note_arrays(
    ranked: Mapping[Any, Ranking], gold: Mapping[Any, AbstractSet[Any]]
) -> Iterable[tuple[np.ndarray, np.ndarray, int]]:
    """Per gold note: its ranking's scores, whether each code is gold, and its number of gold codes."""
    for note, relevant in gold.items():
        items = ranked.get(note, [])
        scores = np.asarray([score for score, _ in items], dtype=np.float64)
        hits = np.asarray([code in relevant for _, code in items], dtype=np.float64)
        yield scores, hits, len(relevant)


def ranking_of(scored: Mapping[Any, float]) -> list[tuple[float, Any]]:
    """A note's ``{code: score}`` as a ranking: best first, ties in code order."""
    return sorted(((score, code) for code, score in scored.items()), key=lambda item: (-item[0], str(item[1])))
