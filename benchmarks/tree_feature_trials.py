"""Trials for the fusion trees that did not raise CodiEsp dev scores, kept so that anyone can rerun them.

Issue 28 asks for D micro-F1 >= 0.72; over a third of the shipped coder's diagnosis false positives on dev are a
sibling of a gold code (same 3-character category), so these trials give the trees more to read about a candidate's
siblings and its evidence, or fit them differently:

* ``shipped``: the trees' own features (:data:`icdcoder.infer.trees.FEATURES`), the reference row;
* ``category_share``: + the candidate's share of the training notes of the note's candidates of its category, and its
  rank among them by fused score (the frequent sibling wins the swap; do the trees know it is the frequent one?);
* ``parent_child``: + whether another candidate is its parent (a prefix longer than the category) or its child
  (``C90.3`` against ``C90.30``: annotators code either);
* ``assertion``: + the assertion of its evidence (negated, uncertain or hypothetical, family, historical; and the share
  of its spans that are negated): do CodiEsp's annotators code negated findings less often?
* ``tfidf``: + the probability the TF-IDF baseline (``icdcoder.baselines.tfidf``, fitted on the same training notes
  as the coder that coded the note: out of fold for training notes) gives the code from the whole note;
* ``context_words``: + how likely a mention is coded given the words around it, whatever the code: a logistic
  regression over the 6 words before and after the candidate's first span (hashed, position-marked), fitted on the
  training candidates (out of fold for the training notes' own rows);
* ``title_similarity``: + how close the candidate's English title is to the translation of the sentence holding its
  first span (cosine of all-MiniLM-L6-v2 vectors, the retriever's encoder), and its margin over the closest candidate
  of its category: a CPU stand-in for the verifier's "which sibling does the sentence mean";
* ``feature_subsampling``: the shipped features, five fits that each split on a random half of the features
  (``max_features=0.5``, seeds 0-4), probabilities averaged;
* ``ten_folds``: the shipped features, the training notes coded out of 10 folds instead of 5 (fold coders fitted on 90%
  of the notes, nearer to the full coder the trees then read).

Each training note is coded once by a coder fitted on the other folds, as ``icdcoder predict fit-trees`` does, and the
dev notes once by the shipped coder; the trees (``TREE_PARAMETERS``) are fitted on the training notes' candidates and
score the dev notes' candidates. Per system: MAP of each note's candidates ranked by the trees, and micro-F1 at the
best threshold of the tuning grid (chosen on dev itself: compare rows with one another, not with cross-fitted numbers);
for diagnoses, the false positives at that threshold and how many share a gold code's category.
Spanish notes (with their translation). Takes ~15 minutes on 2 CPU cores (coding the notes out of 5 folds ~6, out of
10 ~8; embedding the titles and sentences of ``title_similarity`` ~3); ``--cache`` keeps the coded notes (a rerun reads
them).

Run: ``python benchmarks/tree_feature_trials.py --data-dir ../shared/data/codiesp [--cache DIR] [--trials a,b]``
"""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from icdcoder.infer.fusion import CodeSignals, collect_signals, signal_weights
from icdcoder.infer.trees import FEATURES, TrainingCounts, candidate_features
from icdcoder.io import atomic_write
from icdcoder.ontology.labels import CODER_SYSTEMS

REPO = Path(__file__).resolve().parent.parent
BENCHMARK_CODER = REPO / "src" / "icdcoder" / "models" / "benchmark"


@dataclass(frozen=True)
class NoteSystem:
    """What a trial's extra columns read of one note's candidates of one system."""

    #: the note's signals, (code, system) -> CodeSignals
    found: dict[tuple[str, str], CodeSignals]
    system: str
    #: the candidates, in the order of ``rows``
    codes: list[str]
    #: the retriever counts of the coder that coded the note
    counts: TrainingCounts
    note: Any
    #: the shipped features of the candidates
    rows: np.ndarray
    #: what the trial read of the coded notes as a whole (``Trial.inputs``; ``tfidf``: note id -> code key ->
    #: probability, ``context_words``: system -> (note id, code) -> probability, ``title_similarity``: (note id, code,
    #: system) -> similarity)
    inputs: dict


#: a trial's extra feature columns of one note's candidates
Extra = Callable[[NoteSystem], np.ndarray]


def coded_notes(model: Path, data_dir: Path, folds: int, cache: Path | None) -> dict:
    """The training notes coded out of ``folds`` folds and the dev notes coded by the shipped coder: per split, note id
    -> (counts key, note, its signals); and the retriever counts of each fold coder and of the shipped one. ``cache``:
    a folder keeping them (written whole or not at all; one made for another coder or data folder is refused)."""
    source = {"model": str(model.resolve()), "data_dir": str(data_dir.resolve())}
    path = cache / f"coded_{folds}_folds.pickle" if cache else None
    if path is not None and path.is_file():
        with path.open("rb") as handle:
            cached = pickle.load(handle)  # noqa: S301 - a cache this script wrote
        if cached.get("source") != source:
            raise SystemExit(f"{path}: coded with {cached.get('source')}, not {source}: give another --cache folder")
        return cached
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.train.config import DataSettings
    from icdcoder.train.fusion_trees import fold_coder, split_fold

    coder = SpanPredictor.load(model, check_files=False)
    train = load_codiesp(data_dir, "train", with_translation=True)
    dev = load_codiesp(data_dir, "dev", with_translation=True)
    coded: dict = {"train": {}, "dev": {}, "counts": {}, "source": source}
    for fold in range(folds):
        held, rest = split_fold(train, fold, folds)
        fitted = fold_coder(coder, rest, DataSettings(data_dir=data_dir, split="train", lang="es"))
        coded["counts"][fold] = TrainingCounts.of(fitted.fitted_retriever)
        for outputs, note in zip(fitted.segment_outputs(held), held):
            coded["train"][note.id] = (fold, note, collect_signals(outputs))
        print(f"training fold {fold + 1}/{folds} coded", flush=True)
    coded["counts"]["shipped"] = TrainingCounts.of(coder.fitted_retriever)
    for outputs, note in zip(coder.segment_outputs(dev), dev):
        coded["dev"][note.id] = ("shipped", note, collect_signals(outputs))
    coded["settings"] = coder.settings.for_language("es")
    if path is not None:
        with atomic_write(path, mode="wb") as handle:
            pickle.dump(coded, handle)
    return coded


def code_spans(found: dict[tuple[str, str], CodeSignals], code: str, system: str) -> list[tuple[int, int]]:
    """Every note span where a signal found the code, in text order."""
    return sorted({span for spans in found[(code, system)].spans.values() for span in spans})


def category_share(item: NoteSystem) -> np.ndarray:
    codes = item.codes
    fused = item.rows[:, FEATURES.index("fused")]
    notes = [item.counts.notes.get((code, item.system), 0) for code in codes]
    category_notes: dict[str, int] = {}
    category_scores: dict[str, list[float]] = {}
    for code, count, score in zip(codes, notes, fused):
        category_notes[code[:3]] = category_notes.get(code[:3], 0) + count
        category_scores.setdefault(code[:3], []).append(float(score))
    return np.array(
        [
            [
                (count + 1) / (category_notes[code[:3]] + len(category_scores[code[:3]])),
                sum(other > score for other in category_scores[code[:3]]),
            ]
            for code, count, score in zip(codes, notes, fused)
        ]
    )


def parent_child(item: NoteSystem) -> np.ndarray:
    codes = item.codes
    return np.array(
        [
            [
                float(any(other != code and code.startswith(other) and len(other) > 3 for other in codes)),
                float(any(other != code and other.startswith(code) for other in codes)),
            ]
            for code in codes
        ]
    )


def assertion(item: NoteSystem) -> np.ndarray:
    from icdcoder.assertion import assert_spans
    from icdcoder.infer.profiles import code_assertion

    spans = {code: code_spans(item.found, code, item.system) for code in item.codes}
    every = sorted({span for found_spans in spans.values() for span in found_spans})
    traits = dict(zip(every, assert_spans(item.note.text, every, item.note.language))) if every else {}
    columns = []
    for code in item.codes:
        assessed = [(start, end, traits[(start, end)]) for start, end in spans[code]]
        kind = code_assertion(assessed) if assessed else "none"
        negated = sum("negated" in found_traits for _, _, found_traits in assessed)
        columns.append(
            [
                float(kind == "negated"),
                float(kind in ("uncertain", "hypothetical")),
                float(kind == "family"),
                float(kind == "historical"),
                negated / len(assessed) if assessed else -1.0,
            ]
        )
    return np.array(columns)


def tfidf_probability(item: NoteSystem) -> np.ndarray:
    from icdcoder.ontology.labels import code_key

    scores = item.inputs[item.note.id]
    return np.array([[scores.get(code_key(code, item.system), 0.0)] for code in item.codes])


def tfidf_scores(coded: dict) -> dict[str, dict[str, float]]:
    """Per note, the TF-IDF baseline's probability of each code it scores: a training note's from the baseline fitted
    on the other folds (those of the coder that coded it), a dev note's from the one fitted on every training note."""
    from icdcoder.baselines.tfidf import TfidfPredictor

    def fitted(notes: list) -> TfidfPredictor:
        predictor = TfidfPredictor()
        predictor.fit(notes)
        return predictor

    training = [note for _, note, _ in coded["train"].values()]
    scores: dict[str, dict[str, float]] = {}
    for fold in sorted(key for key in coded["counts"] if isinstance(key, int)):
        held = [note for note in training if coded["train"][note.id][0] == fold]
        rest = [note for note in training if coded["train"][note.id][0] != fold]
        scores.update(zip((note.id for note in held), fitted(rest).code_probabilities([note.text for note in held])))
    dev = [note for _, note, _ in coded["dev"].values()]
    scores.update(zip((note.id for note in dev), fitted(training).code_probabilities([note.text for note in dev])))
    return scores


#: words read on each side of a candidate's first span by the ``context_words`` trial
CONTEXT_WORDS = 6


def context_of(text: str, spans: list[tuple[int, int]]) -> str:
    """The words around the first span, each marked by its side (and the nearest two by their place)."""
    import re

    if not spans:
        return "no_span"
    start, end = spans[0]
    before = re.findall(r"\w+", text[max(0, start - 200) : start].lower())[-CONTEXT_WORDS:]
    after = re.findall(r"\w+", text[end : end + 200].lower())[:CONTEXT_WORDS]
    nearest = [f"b1_{before[-1]}" if before else "b1_", f"a1_{after[0]}" if after else "a1_"]
    return " ".join([f"b_{word}" for word in before] + [f"a_{word}" for word in after] + nearest)


def context_probability(item: NoteSystem) -> np.ndarray:
    return np.array([[item.inputs[item.system][(item.note.id, code)]] for code in item.codes])


def context_scores(coded: dict) -> dict[str, dict[tuple[str, str], float]]:
    """Per system, (note id, code) -> the context model's probability that the candidate is right."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = HashingVectorizer(n_features=2**18, token_pattern=r"\S+", alternate_sign=False)

    def contexts(split: str, system: str):
        texts, labels, keys, folds = [], [], [], []
        for note_id, (counts_key, note, found) in coded[split].items():
            for code in sorted(code for code, sys_ in found if sys_ == system):
                texts.append(context_of(note.text, code_spans(found, code, system)))
                labels.append(code in note.code_set(system))
                keys.append((note_id, code))
                folds.append(counts_key)
        return vectorizer.transform(texts), np.asarray(labels), keys, np.asarray(folds, dtype=object)

    def model(rows, labels) -> LogisticRegression:
        return LogisticRegression(max_iter=2000).fit(rows, labels)

    scores: dict[str, dict[tuple[str, str], float]] = {}
    for system in CODER_SYSTEMS:
        rows, labels, keys, folds = contexts("train", system)
        probabilities = np.zeros(len(keys))
        for fold in set(folds.tolist()):
            held = folds == fold
            probabilities[held] = model(rows[~held], labels[~held]).predict_proba(rows[held])[:, 1]
        dev_rows, _, dev_keys, _ = contexts("dev", system)
        dev_probabilities = model(rows, labels).predict_proba(dev_rows)[:, 1]
        scores[system] = dict(zip(keys + dev_keys, [*probabilities.tolist(), *dev_probabilities.tolist()]))
    return scores


#: ``title_similarity``'s value where there is none (no span, no translation, no sibling): below any cosine or margin,
#: rather than NaN, because scikit-learn's trees refuse a feature column that is NaN throughout
NO_SIMILARITY = -3.0


def title_similarity(item: NoteSystem) -> np.ndarray:
    """Each candidate's title-to-sentence similarity and its margin over the most similar other candidate of its
    category (``NO_SIMILARITY`` where either is unknown)."""
    own = [item.inputs[(item.note.id, code, item.system)] for code in item.codes]
    columns = []
    for index, code in enumerate(item.codes):
        rivals = [
            own[other]
            for other, rival in enumerate(item.codes)
            if other != index and rival[:3] == code[:3] and own[other] is not None
        ]
        known = own[index] is not None
        columns.append(
            [own[index] if known else NO_SIMILARITY, own[index] - max(rivals) if known and rivals else NO_SIMILARITY]
        )
    return np.array(columns, dtype=float)


def title_similarities(coded: dict) -> dict[tuple[str, str, str], float | None]:
    """(note id, code, system) -> cosine between the code's English title and the translation of the sentence(s)
    holding the candidate's first span; None where the note has no translation or the candidate no span."""
    from icdcoder.data.align import align_document, project_pieces
    from icdcoder.ontology import load_ontology
    from icdcoder.spans.retrieval import CandidateRetriever

    sentences: dict[tuple[str, str, str], str] = {}
    for split in ("train", "dev"):
        for note_id, (_, note, found) in coded[split].items():
            aligned = align_document(note.text, note.translation.split("\n")) if note.translation else None
            for code, system in found:
                spans = code_spans(found, code, system)[:1]
                pieces = project_pieces(aligned, spans) if aligned is not None and spans else ()
                sentences[(note_id, code, system)] = " ".join(aligned.target_text[a:b] for a, b in pieces)
    ontology = load_ontology()
    encoder = CandidateRetriever()
    texts = sorted({text for text in sentences.values() if text})
    titles = sorted({(code, system) for _, code, system in sentences})
    text_vectors = dict(zip(texts, encoder.embed_texts(texts)))
    title_vectors = dict(
        zip(titles, encoder.embed_texts([ontology.describe(code, system, code) for code, system in titles]))
    )
    return {
        key: float(text_vectors[text] @ title_vectors[key[1:]]) if text else None for key, text in sentences.items()
    }


@dataclass(frozen=True)
class Trial:
    #: the extra feature columns (None: the shipped features only)
    extra: Extra | None = None
    #: what ``extra`` reads of the coded notes as a whole (``NoteSystem.inputs``)
    inputs: Callable[[dict], dict] | None = None
    #: scikit-learn settings over ``TREE_PARAMETERS``
    settings: dict = field(default_factory=dict)
    #: one fit per seed, probabilities averaged
    seeds: tuple[int, ...] = (0,)
    #: the folds the training notes are coded out of
    folds: int = 5


TRIALS: dict[str, Trial] = {
    "shipped": Trial(),
    "category_share": Trial(category_share),
    "parent_child": Trial(parent_child),
    "assertion": Trial(assertion),
    "tfidf": Trial(tfidf_probability, tfidf_scores),
    "context_words": Trial(context_probability, context_scores),
    "title_similarity": Trial(title_similarity, title_similarities),
    "feature_subsampling": Trial(settings={"max_features": 0.5}, seeds=(0, 1, 2, 3, 4)),
    "ten_folds": Trial(folds=10),
}


def candidate_matrix(coded: dict, split: str, system: str, extra: Extra | None, inputs: dict):
    """The split's candidates of ``system``: feature rows, labels, and (note id, code) of each row."""
    weights = signal_weights(coded["settings"], system)
    rows, labels, keys = [], [], []
    for note_id, (counts_key, note, found) in coded[split].items():
        counts = coded["counts"][counts_key]
        matrix, codes = candidate_features(found, system, weights, counts)
        if not codes:
            continue
        if extra is not None:
            matrix = np.hstack([matrix, extra(NoteSystem(found, system, codes, counts, note, matrix, inputs))])
        gold = note.code_set(system)
        rows.append(matrix)
        labels += [code in gold for code in codes]
        keys += [(note_id, code) for code in codes]
    return np.vstack(rows), np.asarray(labels), keys


def false_positives(ranked: dict[str, list[tuple[float, str]]], gold: dict[str, set[str]], threshold: float) -> dict:
    """The decisions at ``threshold`` that are wrong, and how many of them share the 3-character category of a gold
    code of their note (the sibling the annotators chose was another)."""
    wrong = [
        (code, note_id)
        for note_id, ranking in ranked.items()
        for score, code in ranking
        if score >= threshold and code not in gold[note_id]
    ]
    siblings = sum(any(code[:3] == right[:3] for right in gold[note_id]) for code, note_id in wrong)
    return {"false_positives": len(wrong), "sibling_false_positives": siblings}


def trial_scores(coded: dict, trial: str) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from icdcoder.evaluate.thresholds import best_threshold
    from icdcoder.train.fusion_trees import TREE_PARAMETERS

    chosen = TRIALS[trial]
    inputs = chosen.inputs(coded) if chosen.inputs is not None else {}
    scores = {}
    for system in CODER_SYSTEMS:
        train_rows, train_labels, _ = candidate_matrix(coded, "train", system, chosen.extra, inputs)
        dev_rows, _, keys = candidate_matrix(coded, "dev", system, chosen.extra, inputs)
        probabilities = np.mean(
            [
                HistGradientBoostingClassifier(**{**TREE_PARAMETERS, **chosen.settings, "random_state": seed})
                .fit(train_rows, train_labels)
                .predict_proba(dev_rows)[:, 1]
                for seed in chosen.seeds
            ],
            axis=0,
        )
        ranked: dict[str, list[tuple[float, str]]] = {note_id: [] for note_id in coded["dev"]}
        for (note_id, code), probability in zip(keys, probabilities):
            ranked[note_id].append((float(probability), code))
        for ranking in ranked.values():
            ranking.sort(key=lambda item: (-item[0], item[1]))
        gold = {note_id: note.code_set(system) for note_id, (_, note, _) in coded["dev"].items()}
        best = best_threshold(ranked, gold)
        scores[system] = {**best, **false_positives(ranked, gold, best["threshold"])}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="CodiEsp folder (official layout)")
    parser.add_argument(
        "--model",
        type=Path,
        default=BENCHMARK_CODER,
        help="coder folder (default: the benchmarked one, fitted on train)",
    )
    parser.add_argument("--cache", type=Path, default=None, help="folder keeping the coded notes between runs")
    parser.add_argument("--trials", default=",".join(TRIALS), help=f"comma-separated, of {', '.join(TRIALS)}")
    arguments = parser.parse_args()
    trials = [name.strip() for name in arguments.trials.split(",") if name.strip()]
    unknown = sorted(set(trials) - set(TRIALS))
    if unknown:
        parser.error(f"unknown trials: {', '.join(unknown)} (known: {', '.join(TRIALS)})")
    print(
        "| trial | D MAP | D micro-F1 | D threshold | D false positives (siblings) | P MAP | P micro-F1 | P threshold |"
    )
    print("|---|---|---|---|---|---|---|---|")
    coded_by_folds: dict[int, dict] = {}
    for trial in trials:
        folds = TRIALS[trial].folds
        if folds not in coded_by_folds:
            coded_by_folds[folds] = coded_notes(arguments.model, arguments.data_dir, folds, arguments.cache)
        found = trial_scores(coded_by_folds[folds], trial)
        d, p = found["icd10cm"], found["icd10pcs"]
        print(
            f"| {trial} | {d['map']:.4f} | {d['f1']:.4f} | {d['threshold']} "
            f"| {d['false_positives']} ({d['sibling_false_positives']}) "
            f"| {p['map']:.4f} | {p['f1']:.4f} | {p['threshold']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
