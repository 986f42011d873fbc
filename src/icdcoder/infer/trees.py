"""Fusion by gradient-boosted trees: a classifier over each candidate code's signals in place of the weighted mean.

The weighted mean (:mod:`icdcoder.infer.fusion`) scores a code from its own signals, with one weight per signal. The
trees also read how the signals agree (a lexicon match that retrieval confirms), how often the training notes carry
the code, and its rivals in the note (candidates of the same 3-character category): on CodiEsp dev, cross-fitted, they
rank Spanish notes' codes better (``icdcoder experiment run learned_fusion``). They are fitted on the training notes,
each coded by a coder built without it (:mod:`icdcoder.train.fusion_trees`), and saved as plain JSON node arrays in
the coder folder (``fusion_trees.json``; no pickle), evaluated here with numpy.

Features of a candidate code (:data:`FEATURES`): its best value of every signal; whether no training note carries it;
in how many training notes the retriever saw its evidence (log); how many signals found it, over how many spans
(log); the length of the code; its fused score under the weights the trees were fitted with (kept in the file, so
that re-tuning the mean does not shift the trees' input); the note's number of candidates of that system (log); how
many candidates share its category and how far its fused score is below the best of them; how many other candidates
of its system claim some of the same words of the note (log: two codes read in one phrase are seldom both right),
how far its fused score is below the best of those (negative where it leads them; 0 without rivals), and the best
fused score of another system's codes claiming them (a procedure read in the words of a diagnosis); the length of its
longest note span (log of characters); how often the training notes that carry one of the note's leading candidates
(:data:`CONTEXT_CODES`, any system) also carry it (the highest such share: comorbidities and the procedures that go
with a diagnosis).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from icdcoder.errors import InputError
from icdcoder.infer.fusion import fuse
from icdcoder.infer.signals import SIGNALS
from icdcoder.io import atomic_write, read_text

if TYPE_CHECKING:
    from icdcoder.infer.fusion import CodeSignals

#: the file of a coder folder holding the trees of its training language's notes
TREES_FILE = "fusion_trees.json"


def trees_file(language: str | None = None) -> str:
    """The file of the trees of another language's notes (``fusion_trees_en.json``); ``None``: the training language's."""
    return TREES_FILE if language is None else f"fusion_trees_{language}.json"


def language_trees_file(language: str, training_language: str) -> str:
    """The coder folder's file of the trees of ``language`` notes, for a coder trained on ``training_language`` notes."""
    return trees_file(None if language == training_language else language)


#: the features of a candidate code after its best value of each signal
EXTRA_FEATURES = (
    "untrained",
    "training_notes",
    "signals",
    "spans",
    "code_length",
    "fused",
    "candidates",
    "category_candidates",
    "category_gap",
    "span_rivals",
    "span_gap",
    "other_system_rival",
    "span_length",
    "cooccurrence",
)
FEATURES = (*SIGNALS, *EXTRA_FEATURES)
#: how many of the note's leading candidates (by fused score) the ``cooccurrence`` feature reads
CONTEXT_CODES = 8
#: the node arrays of a tree, as saved, with their types
NODE_TYPES = {
    "feature": np.int64,
    "threshold": np.float64,
    "left": np.int64,
    "right": np.int64,
    "is_leaf": bool,
    "value": np.float64,
    "missing_left": bool,
}
#: scikit-learn's name of each node array
SKLEARN_NODE_FIELDS = {
    "feature": "feature_idx",
    "threshold": "num_threshold",
    "left": "left",
    "right": "right",
    "is_leaf": "is_leaf",
    "value": "value",
    "missing_left": "missing_go_to_left",
}


@dataclass(frozen=True)
class TrainingCounts:
    """What the trees read of the training notes, as the coder's retriever counts them (notes that give evidence)."""

    #: (code, system) -> how many training notes carry it
    notes: Mapping[tuple[str, str], int]
    #: ((code, system), (other code, system)) -> how many carry both
    pairs: Mapping[tuple[tuple[str, str], tuple[str, str]], int]

    @classmethod
    def of(cls, retriever: Any) -> TrainingCounts:
        """The counts of a fitted :class:`~icdcoder.spans.retrieval.CandidateRetriever`."""
        return cls(retriever.trained_note_counts, retriever.trained_pair_counts)

    def cooccurrence(self, key: tuple[str, str], context: Iterable[tuple[str, str]]) -> float:
        """The highest share, over the codes of ``context`` other than ``key``, of training notes carrying that code
        that also carry ``key`` (add-one smoothed: a code of one note is weak context)."""
        return max(
            (self.pairs.get((key, other), 0) / (self.notes.get(other, 0) + 1) for other in context if other != key),
            default=0.0,
        )


NO_COUNTS = TrainingCounts({}, {})


def candidate_features(
    found: dict[tuple[str, str], CodeSignals],
    system: str,
    weights: dict[str, float],
    counts: TrainingCounts,
) -> tuple[np.ndarray, list[str]]:
    """The feature matrix (rows in :data:`FEATURES` order) of a note's candidate codes of ``system`` and those codes,
    alphabetical; ``found``: the note's :func:`~icdcoder.infer.fusion.collect_signals`, ``weights``: those of the
    ``fused`` feature (the leading candidates of other systems are ranked under them too)."""
    codes = sorted(code for code, sys_ in found if sys_ == system)
    strength = {key: fuse(signals.best, weights) for key, signals in found.items()}
    fused = {code: strength[(code, system)] for code in codes}
    context = sorted(found, key=lambda key: (-strength[key], key))[:CONTEXT_CODES]
    categories: dict[str, list[float]] = {}
    for code in codes:
        categories.setdefault(code[:3], []).append(fused[code])
    span_rivals = overlapping_codes({key: signals.spans for key, signals in found.items()})
    rows = []
    for code in codes:
        signals = found[(code, system)]
        values = [signals.best.get(name, 0.0) for name in SIGNALS]
        spans = sum(map(len, signals.spans.values())) + sum(map(len, signals.sentences.values()))
        rivals = categories[code[:3]]
        same_system = [fused[other] for other, other_system in span_rivals[(code, system)] if other_system == system]
        other_systems = [strength[key] for key in span_rivals[(code, system)] if key[1] != system]
        longest = max((end - start for spans_ in signals.spans.values() for start, end in spans_), default=0)
        rows.append(
            values
            + [
                float(signals.untrained),
                math.log1p(counts.notes.get((code, system), 0)),
                sum(value > 0 for value in values),
                math.log1p(spans),
                len(code.replace(".", "")),
                fused[code],
                math.log1p(len(codes)),
                len(rivals),
                max(rivals) - fused[code],
                math.log1p(len(same_system)),
                max((rival - fused[code] for rival in same_system), default=0.0),
                max(other_systems, default=0.0),
                math.log1p(longest),
                counts.cooccurrence((code, system), context),
            ]
        )
    return np.asarray(rows, dtype=np.float64).reshape(len(codes), len(FEATURES)), codes


def overlapping_codes(
    spans: dict[tuple[str, str], dict[str, list[tuple[int, int]]]],
) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """Per (code, system), the other codes with a note span (any signal's) overlapping one of its own."""
    owners = sorted((start, end, key) for key, by_signal in spans.items() for start, end in _unique_spans(by_signal))
    rivals: dict[tuple[str, str], set[tuple[str, str]]] = {key: set() for key in spans}
    for position, (_start, end, code) in enumerate(owners):
        for later_start, _later_end, other in owners[position + 1 :]:
            if later_start >= end:
                break
            if other != code:
                rivals[code].add(other)
                rivals[other].add(code)
    return rivals


def _unique_spans(by_signal: dict[str, list[tuple[int, int]]]) -> set[tuple[int, int]]:
    return {span for spans in by_signal.values() for span in spans}


@dataclass
class TreeEnsemble:
    """One system's boosted trees: the probability that a candidate code is right is the logistic of ``baseline``
    plus the leaf value each tree reaches."""

    baseline: float
    #: per tree, its node arrays (:data:`NODE_TYPES`)
    trees: list[dict[str, np.ndarray]]
    #: the signal weights of the ``fused`` feature
    fused_weights: dict[str, float]

    @classmethod
    def from_sklearn(cls, model: Any, fused_weights: dict[str, float]) -> TreeEnsemble:
        """The trees of a fitted binary ``HistGradientBoostingClassifier`` (numeric features)."""
        trees = [
            node_arrays({name: predictor.nodes[field] for name, field in SKLEARN_NODE_FIELDS.items()})
            for (predictor,) in model._predictors
        ]
        weights = {name: float(fused_weights.get(name, 0.0)) for name in SIGNALS}
        return cls(float(np.ravel(model._baseline_prediction)[0]), trees, weights)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Each row's probability (rows in :data:`FEATURES` order)."""
        raw = np.full(len(features), self.baseline)
        rows = np.arange(len(features))
        for tree in self.trees:
            node = np.zeros(len(features), dtype=np.int64)
            while not tree["is_leaf"][node].all():
                inner = ~tree["is_leaf"][node]
                at = node[inner]
                values = features[rows[inner], tree["feature"][at]]
                left = np.where(np.isnan(values), tree["missing_left"][at], values <= tree["threshold"][at])
                node[inner] = np.where(left, tree["left"][at], tree["right"][at])
            raw += tree["value"][node]
        return 1.0 / (1.0 + np.exp(-raw))

    def as_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "fused_weights": self.fused_weights,
            "trees": [{name: tree[name].tolist() for name in NODE_TYPES} for tree in self.trees],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TreeEnsemble:
        trees = [node_arrays(tree) for tree in data["trees"]]
        for tree in trees:
            check_tree(tree)
        weights = {name: float(data["fused_weights"].get(name, 0.0)) for name in SIGNALS}
        return cls(float(data["baseline"]), trees, weights)


def node_arrays(tree: Any) -> dict[str, np.ndarray]:
    """A tree's node arrays, each of its :data:`NODE_TYPES` type, from a mapping of array-likes."""
    return {name: np.asarray(tree[name], dtype=kind) for name, kind in NODE_TYPES.items()}


def check_tree(tree: dict[str, np.ndarray]) -> None:
    """Raise ValueError unless every array has one entry per node and inner nodes point at later nodes and at
    features that exist (so that evaluation ends and indexes nothing out of range)."""
    size = len(tree["feature"])
    if size == 0 or any(len(array) != size for array in tree.values()):
        raise ValueError("a tree's node arrays differ in length")
    inner = ~tree["is_leaf"]
    nodes = np.arange(size)[inner]
    for child in (tree["left"][inner], tree["right"][inner]):
        if ((child <= nodes) | (child >= size)).any():
            raise ValueError("a tree's node points outside the tree or backwards")
    if ((tree["feature"][inner] < 0) | (tree["feature"][inner] >= len(FEATURES))).any():
        raise ValueError("a tree's node reads a feature that does not exist")


@dataclass
class TreeFusion:
    """Per coded system, its trees; with the training notes' code counts (the retriever's), what scores a note."""

    systems: dict[str, TreeEnsemble]
    counts: TrainingCounts

    def scores(self, found: dict[tuple[str, str], CodeSignals], system: str) -> dict[str, float]:
        """Each candidate code of ``system`` in a note (its :func:`~icdcoder.infer.fusion.collect_signals`) with its
        probability."""
        trees = self.systems.get(system)
        if trees is None:
            raise InputError(f"the coder's fusion trees have none for {system}")
        features, codes = candidate_features(found, system, trees.fused_weights, self.counts)
        return dict(zip(codes, trees.probabilities(features).tolist())) if codes else {}

    def save(self, directory: Path, name: str = TREES_FILE) -> None:
        record = {
            "features": list(FEATURES),
            "systems": {system: trees.as_json() for system, trees in self.systems.items()},
        }
        with atomic_write(directory / name) as handle:
            handle.write(json.dumps(record) + "\n")

    @classmethod
    def load(cls, directory: Path, counts: TrainingCounts, name: str = TREES_FILE) -> TreeFusion:
        """The trees of a coder folder (``name``: a language's file); a clear error for a file that is not this
        version's trees."""
        path = directory / name
        try:
            record = json.loads(read_text(path))
            features = record["features"]
            if features != list(FEATURES):
                raise InputError(
                    "its trees read other features than this version computes: refit them (icdcoder predict fit-trees)",
                    path=path,
                )
            systems = {system: TreeEnsemble.from_json(data) for system, data in record["systems"].items()}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(f"malformed fusion trees ({str(err).splitlines()[0]})", path=path) from None
        return cls(systems, counts)
