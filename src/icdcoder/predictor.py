"""The one interface every coder implements: LLM coders and baselines alike.

Data flows one way: documents -> ``Predictor.fit`` -> a fitted coder ->
``Predictor.predict`` -> :class:`DocumentPrediction` -> metrics. A prediction
lists the codes the coder *asserts* (its decisions), best first, each with a score
in [0, 1] and the evidence it relied on (character pieces into the document's
text), and the *candidates* it scored below its decision threshold.

Two operating points, as ICD coding papers report them: set metrics (micro/macro-F1,
CodiEsp-X) read the decisions; ranking metrics (MAP, P@k) read the whole ranking,
decisions and candidates by score (at most :data:`RANKING_DEPTH` codes per system).
A coder without candidates is ranked by its decisions alone.
"""

from __future__ import annotations

import abc
import resource
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from icdcoder.data.schema import Document, Evidence

#: codes per system in a prediction's ranking (decisions and candidates together)
RANKING_DEPTH = 100


@dataclass
class CodePrediction:
    code: str
    system: str
    score: float
    #: spans of the note's own words (what CodiEsp-X scores)
    evidence: list[Evidence] = field(default_factory=list)
    #: when no words of the note support the code: the note's sentences whose translation does
    sentence_evidence: list[Evidence] = field(default_factory=list)


@dataclass
class DocumentPrediction:
    doc_id: str
    codes: list[CodePrediction] = field(default_factory=list)
    #: counts of model output that was dropped (invented codes, quotes not in the note, ...)
    dropped: dict[str, int] = field(default_factory=dict)
    #: codes scored below the decision threshold, best first: the rest of the ranking (no evidence needed)
    candidates: list[CodePrediction] = field(default_factory=list)

    def ranked(self, systems: set[str] | frozenset[str] | None = None) -> list[CodePrediction]:
        """The decisions sorted by score (stable), optionally filtered by system."""
        return by_score(self.codes, systems)

    def ranking(self, systems: set[str] | frozenset[str] | None = None) -> list[CodePrediction]:
        """Decisions and candidates sorted by score (stable, decisions first among equal scores): what MAP reads."""
        return by_score([*self.codes, *self.candidates], systems)


def by_score(
    predictions: Iterable[CodePrediction], systems: set[str] | frozenset[str] | None = None
) -> list[CodePrediction]:
    """``predictions`` of ``systems`` (all when None), best first; equal scores keep their order."""
    return sorted((p for p in predictions if systems is None or p.system in systems), key=lambda p: -p.score)


def ranking_candidates(
    decisions: Sequence[CodePrediction], scored: Iterable[tuple[str, str, float]]
) -> list[CodePrediction]:
    """The codes of ``scored`` (``(code, system, score)``, any order) that are not among ``decisions``, best first,
    each system's filling its ranking up to :data:`RANKING_DEPTH` codes: a baseline's candidates."""
    scored = list(scored)
    decided = {(p.code, p.system) for p in decisions}
    room = Counter({system: RANKING_DEPTH for _, system, _ in scored})
    room.subtract(p.system for p in decisions)
    candidates = []
    for code, system, score in sorted(scored, key=lambda item: (-item[2], item[0])):
        if (code, system) not in decided and score > 0 and room[system] > 0:
            candidates.append(CodePrediction(code, system, score))
            room[system] -= 1
    return candidates


def top_scored(
    scores: np.ndarray, labels: Sequence[tuple[str, str]], floor: float = 0.0
) -> list[tuple[str, str, float]]:
    """``(code, system, score)`` of the best-scored ``labels`` (``scores[i]`` is label ``i``'s) at or above
    ``floor``, best first, ties in label order: enough for :func:`ranking_candidates` to fill the rankings of both
    CodiEsp sub-tasks (diagnoses, procedures)."""
    best = np.argsort(-scores, kind="stable")[: 2 * RANKING_DEPTH]
    return [(*labels[label], float(scores[label])) for label in best.tolist() if scores[label] >= floor]


@dataclass
class FitReport:
    """What training cost: recorded in every run's metadata and in the bench table."""

    wall_seconds: float = 0.0
    train_tokens: int = 0
    peak_rss_mb: float = 0.0
    extra: dict[str, float | int | str] = field(default_factory=dict)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (for :class:`FitReport`)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class Predictor(abc.ABC):
    """A coder: fit on training documents, predict codes with evidence."""

    #: short registry name, e.g. ``"dictionary"``
    name: str = "predictor"

    @abc.abstractmethod
    def fit(self, train: Sequence[Document], dev: Sequence[Document] | None = None) -> FitReport:
        """Train on ``train``; ``dev`` may be used for thresholds and model selection only."""

    @abc.abstractmethod
    def predict(self, documents: Sequence[Document]) -> list[DocumentPrediction]:
        """Code each document; one prediction per document, in order."""

    @abc.abstractmethod
    def save(self, directory: str | Path) -> None:
        """Write everything ``load`` needs into ``directory``."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: str | Path) -> Predictor:
        """Restore a coder written by ``save``."""
