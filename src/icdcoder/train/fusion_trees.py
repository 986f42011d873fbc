"""Fit a coder's fusion trees (:mod:`icdcoder.infer.trees`) on its training notes.

The trees must learn from signals that look like those of an unseen note. A training note coded by the coder itself
finds its own evidence in the retriever and the lexicons (every training surface form matches), so each note is coded
instead by a coder whose retriever and lexicons were fitted on the other ``folds`` training folds; its candidate codes,
labelled by the note's gold codes, are the trees' examples. The trees never see a dev label: ``predict tune`` then
tunes their thresholds on dev, as it tunes the weighted mean's.

The fold coders run without the LLM (the adapter was trained on every training note), so only a coder whose LLM is
off (``use_llm: false``, the shipped one) can fuse by trees.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from icdcoder.data.schema import Document
from icdcoder.errors import InputError
from icdcoder.infer.fusion import collect_signals, signal_weights
from icdcoder.infer.signals.base import TrainingNotes
from icdcoder.infer.trees import FEATURES, TrainingCounts, TreeEnsemble, TreeFusion, candidate_features
from icdcoder.ontology.labels import CODER_SYSTEMS
from icdcoder.train.config import DataSettings

#: scikit-learn ``HistGradientBoostingClassifier`` settings, those of ``icdcoder experiment run learned_fusion``
#: (fixed, no early stopping: the fit is deterministic)
TREE_PARAMETERS = {
    "max_iter": 200,
    "learning_rate": 0.05,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 20,
    "l2_regularization": 1.0,
    "early_stopping": False,
    "random_state": 0,
}

#: per system, a note's candidate feature matrix and codes
NoteCandidates = dict[str, tuple[np.ndarray, list[str]]]


def split_fold(documents: Sequence[Document], fold: int, folds: int) -> tuple[list[Document], list[Document]]:
    """The notes of training fold ``fold`` (the ``i``-th note is in fold ``i % folds``), and all the others: what a
    fold coder codes, and what it is fitted on."""
    held = [document for i, document in enumerate(documents) if i % folds == fold]
    rest = [document for i, document in enumerate(documents) if i % folds != fold]
    return held, rest


def fold_coder(coder, documents: Sequence[Document], settings: DataSettings):
    """A coder with ``coder``'s settings and ontology whose retriever and other signals (not the LLM) are fitted on
    ``documents`` only: it codes a training note left out of them as it would code an unseen note.

    It fuses with ``coder``'s trees, if any, reading its own training counts. Those trees were fitted on every training
    note's out-of-fold candidates, the left-out notes' own among them, so their fused scores are somewhat more
    confident than an unseen note's; the signals (what ``predict fit-trees`` reads) are out of fold either way."""
    from icdcoder.train.data import training_notes

    fitted = coder_fitted_on(coder, training_notes(documents, settings))
    counts = TrainingCounts.of(fitted.fitted_retriever)
    fitted.trees = {language: TreeFusion(trees.systems, counts) for language, trees in coder.trees.items()}
    return fitted


def coder_fitted_on(coder, training: TrainingNotes):
    """A coder with ``coder``'s settings and ontology, no LLM and no trees, whose retriever and signals are fitted on
    ``training`` (a fold coder's, a refitted coder's)."""
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.train.data import fit_retriever

    retriever = fit_retriever(training.documents, coder.ontology)
    fitted = SpanPredictor(coder.settings).attach(None, None, retriever, ontology=coder.ontology)
    fitted.fit_signals(training)
    return fitted


def out_of_fold_candidates(
    coder,
    documents: Sequence[Document],
    data_settings: DataSettings,
    folds: int,
    cache: Path | None = None,
    progress: Callable[[int], None] | None = None,
    versions: dict[str, Document] | None = None,
) -> dict[str, NoteCandidates]:
    """Each training note's candidates, as coded by a coder fitted on the other folds (its retriever and every signal
    but the LLM; ``coder``'s settings and ontology). ``versions``: the notes' versions in another language (their
    English translations), coded in their place by the same fold coders, under ``coder``'s settings for that language,
    as the coder reads notes of that language. ``cache`` (JSONL) keeps each finished fold: a rerun resumes."""
    if coder.settings.use_llm:
        raise InputError("fusion trees are fitted for a coder without its LLM (use_llm: false)")
    done = read_candidates(cache) if cache else {}
    for fold in range(folds):
        held, rest = split_fold(documents, fold, folds)
        if all(d.id in done for d in held):
            if progress:
                progress(len(held))
            continue
        fitted = fold_coder(coder, rest, data_settings)
        coded = [versions[d.id] for d in held] if versions is not None else held
        outputs = fitted.segment_outputs(coded, progress=progress)
        counts = TrainingCounts.of(fitted.fitted_retriever)
        fresh = {
            note.doc_id: note_candidates(collect_signals(note), coder.settings.for_language(doc.language), counts)
            for note, doc in zip(outputs, coded)
        }
        done.update(fresh)
        if cache:
            append_candidates(cache, fresh)
    return {d.id: done[d.id] for d in documents}


def note_candidates(found: dict, settings, counts: TrainingCounts) -> NoteCandidates:
    return {
        system: candidate_features(found, system, signal_weights(settings, system), counts) for system in CODER_SYSTEMS
    }


def read_candidates(path: Path) -> dict[str, NoteCandidates]:
    """The notes of a candidates cache; a torn last line (interrupted write) is ignored."""
    if not path.is_file():
        return {}
    notes = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        try:
            if record.get("features") != list(FEATURES):
                raise InputError("the candidates cache holds other features than this version computes", path=path)
            notes[record["doc_id"]] = {
                system: (np.asarray(data["rows"], dtype=np.float64).reshape(-1, len(FEATURES)), list(data["codes"]))
                for system, data in record["systems"].items()
            }
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise InputError(f"not a candidates cache record ({err})", path=path, line=number) from None
    return notes


def append_candidates(path: Path, notes: dict[str, NoteCandidates]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for doc_id, systems in notes.items():
            record = {
                "doc_id": doc_id,
                "features": list(FEATURES),
                "systems": {
                    system: {"rows": matrix.tolist(), "codes": codes} for system, (matrix, codes) in systems.items()
                },
            }
            handle.write(json.dumps(record) + "\n")


def fitted_ensemble(
    system: str, candidates: list[tuple[np.ndarray, list[str]]], gold: list[set[str]], weights: dict[str, float]
) -> TreeEnsemble:
    """``system``'s trees, fitted on notes' candidates labelled by their gold codes."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    features = np.vstack([matrix for matrix, _ in candidates])
    labels = np.asarray([code in truth for (_, codes), truth in zip(candidates, gold) for code in codes])
    if labels.all() or not labels.any():
        raise InputError(
            f"the training notes' {system} candidates are all right or all wrong: nothing for the trees to learn"
        )
    model = HistGradientBoostingClassifier(**TREE_PARAMETERS).fit(features, labels)
    return TreeEnsemble.from_sklearn(model, weights)


def fit_tree_fusion(
    candidates: dict[str, NoteCandidates], documents: Sequence[Document], settings, counts: TrainingCounts
) -> TreeFusion:
    """Per coded system, trees fitted on the training notes' out-of-fold candidates; scored at inference with the
    coder's own retriever counts (``counts``)."""
    systems = {}
    for system in CODER_SYSTEMS:
        examples = [candidates[d.id][system] for d in documents]
        gold = [d.code_set(system) for d in documents]
        systems[system] = fitted_ensemble(system, examples, gold, signal_weights(settings, system))
    return TreeFusion(systems, counts)
