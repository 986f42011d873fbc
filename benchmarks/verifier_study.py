"""Does a span-level LLM verifier over the shipped coder's own candidates pay? (issue 28)

    python benchmarks/verifier_study.py candidates --data-dir ../shared/data/codiesp [--folds 5] [--out /work/verifier_runs]
    python benchmarks/verifier_study.py oracle --data-dir ../shared/data/codiesp [--config configs/verifier/smollm2.yaml]
    python benchmarks/verifier_study.py train --config configs/verifier/smollm2.yaml [--out /work/verifier_runs]
    python benchmarks/verifier_study.py score --adapter /work/verifier_runs/adapter [--out /work/verifier_runs]
    python benchmarks/verifier_study.py measure --data-dir ../shared/data/codiesp [--folds 5]
    python benchmarks/verifier_study.py speed --adapter /work/verifier_runs/adapter [--threads 2]

``candidates``: the training notes coded cross-fitted (``--folds`` folds: each by the shipped coder's settings with a
retriever and lexicons built on the other folds), and the dev notes coded by the shipped coder; every candidate with a
positive fused score, its evidence sentence and label, written to ``train_candidates.jsonl`` / ``dev_candidates.jsonl``.

``oracle``: on dev, what a perfect keep/drop of the candidates in the config's score band would give (D/P micro-F1,
MAP), against the shipped thresholds.

``train``: the verifier's LoRA adapter, trained on the training notes' band candidates.

``score``: the verifier's probability for every dev band candidate (``dev_scores.jsonl``).

``measure``: (``--scores oracle``: with the gold labels as the band's probabilities) LLM off against verifier on, cross-fitted on ``--folds`` dev folds: for a band candidate the fused score
becomes ``(1 - w) * score + w * p``; ``w`` and the per-system thresholds are tuned on the other folds (micro-F1 + MAP,
as ``predict tune``) and the held-out folds are scored together. LLM off has its thresholds tuned the same way.

``speed``: notes/s of the coder with the verifier scoring its band candidates, on a 400-word note.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from pathlib import Path

from icdcoder.train.verifier import (
    VerifierConfig,
    coder_candidates,
    cross_fitted_candidates,
    gold_codes,
    in_band,
    kind_counts,
    load_verifier_config,
    read_candidates,
    training_examples,
    write_candidates,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "src/icdcoder/models/default"
DEFAULT_CONFIG = REPO / "configs/verifier/smollm2.yaml"
TASKS = (("icd10cm", "D"), ("icd10pcs", "P"))


def load_notes(data_dir: str, split: str):
    from icdcoder.data.codiesp import load_codiesp

    return load_codiesp(data_dir, split, language="es", with_translation=True)


def run_candidates(args, config: VerifierConfig) -> None:
    """Dump the dev candidates (shipped coder) and/or the training notes' (cross-fitted), as ``--split`` says."""
    from icdcoder.train.config import DataSettings

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if args.split in ("dev", "both"):
        run_dev_candidates(args, config, out)
    if args.split in ("train", "both"):
        data_settings = DataSettings(data_dir=args.data_dir, split="train", lang="es")
        train = cross_fitted_candidates(
            args.model, load_notes(args.data_dir, "train"), data_settings, args.folds, config.sentence_words
        )
        write_candidates(out / "train_candidates.jsonl", train)
        print(
            json.dumps(
                {
                    "split": "train",
                    "folds": args.folds,
                    "candidates": len(train),
                    "kinds": kind_counts(train),
                    "seconds": round(time.time() - started),
                }
            ),
            flush=True,
        )


def run_dev_candidates(args, config: VerifierConfig, out: Path) -> None:
    from icdcoder.infer.coder import SpanLLMPredictor

    started = time.time()
    trained = gold_codes(load_notes(args.data_dir, "train"))
    dev = coder_candidates(
        SpanLLMPredictor.load(args.model), load_notes(args.data_dir, "dev"), config.sentence_words, trained
    )
    write_candidates(out / "dev_candidates.jsonl", dev)
    print(
        json.dumps(
            {"split": "dev", "candidates": len(dev), "kinds": kind_counts(dev), "seconds": round(time.time() - started)}
        ),
        flush=True,
    )


SHIPPED_THRESHOLDS = {"icd10cm": 0.1, "icd10pcs": 0.15, "untrained": 0.05}
GRID = [round(0.025 * i, 3) for i in range(1, 29)]
WEIGHTS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8]


def threshold_of(candidate, thresholds: dict) -> float:
    untrained = candidate.untrained and candidate.system == "icd10cm"
    return thresholds["untrained"] if untrained else thresholds[candidate.system]


def as_predictions(doc_ids: list[str], candidates, scores: list[float], kept: list[bool]):
    """One :class:`DocumentPrediction` per note: the kept candidates with their scores and evidence."""
    from icdcoder.data.schema import Evidence
    from icdcoder.predictor import CodePrediction, DocumentPrediction

    by_doc = {doc_id: DocumentPrediction(doc_id=doc_id) for doc_id in doc_ids}
    for candidate, score, keep in zip(candidates, scores, kept):
        if keep and candidate.doc_id in by_doc:
            evidence = [Evidence(pieces=((start, end),)) for start, end in candidate.evidence]
            by_doc[candidate.doc_id].codes.append(
                CodePrediction(candidate.code, candidate.system, score, evidence=evidence)
            )
    return list(by_doc.values())


def thresholded(candidates, scores: list[float], thresholds: dict) -> list[bool]:
    return [score > 0 and score >= threshold_of(c, thresholds) for c, score in zip(candidates, scores)]


def objective(docs, candidates, scores: list[float], kept: list[bool], system: str) -> float:
    """micro-F1 + MAP of ``system`` on ``docs`` (what ``predict tune`` maximises)."""
    from icdcoder.evaluate.metrics import mean_average_precision, micro_prf

    wanted = {d.id for d in docs}
    ranked: dict[str, list[tuple[float, str]]] = {d.id: [] for d in docs}
    for c, score, keep in zip(candidates, scores, kept):
        if keep and c.system == system and c.doc_id in wanted:
            ranked[c.doc_id].append((-score, c.code))
    ranked_codes = {doc_id: [code for _, code in sorted(items)] for doc_id, items in ranked.items()}
    truth = {d.id: d.code_set(system) for d in docs}
    return micro_prf(truth, ranked_codes)["micro_f1"] + mean_average_precision(truth, ranked_codes)


def tuned_thresholds(docs, candidates, scores: list[float]) -> tuple[dict, float]:
    """Each system's threshold, then the untrained diagnosis codes' own, by micro-F1 + MAP on ``docs``."""
    thresholds = dict(SHIPPED_THRESHOLDS)
    total = 0.0
    for system in ("icd10pcs", "icd10cm"):
        best = max(
            GRID,
            key=lambda t: objective(
                docs,
                candidates,
                scores,
                thresholded(
                    candidates,
                    scores,
                    {**thresholds, system: t, "untrained": t} if system == "icd10cm" else {**thresholds, system: t},
                ),
                system,
            ),
        )
        thresholds[system] = best
        if system == "icd10cm":
            thresholds["untrained"] = best
    thresholds["untrained"] = max(
        GRID,
        key=lambda t: objective(
            docs, candidates, scores, thresholded(candidates, scores, {**thresholds, "untrained": t}), "icd10cm"
        ),
    )
    kept = thresholded(candidates, scores, thresholds)
    total = sum(objective(docs, candidates, scores, kept, system) for system in ("icd10cm", "icd10pcs"))
    return thresholds, total


def scores_with_verdicts(candidates, probabilities: dict[int, float], weight: float, band) -> list[float]:
    from icdcoder.models.verifier import fused_with_verdict

    return [
        fused_with_verdict(
            c.score, probabilities.get(i), weight, band.low.get(c.system, 0.0), band.high.get(c.system, 1.0)
        )
        for i, c in enumerate(candidates)
    ]


def report(dev, predictions, train_counts: Counter) -> dict:
    """D/P MAP, micro/macro-F1, unseen-code recall, and X F1 (both systems) of ``predictions``."""
    from icdcoder.evaluate.metrics import evaluate

    row = {}
    for system, task in TASKS:
        found = evaluate(dev, predictions, train_counts, systems={system})
        row |= {
            f"{task}_map": found["map"],
            f"{task}_f1": found["micro_f1"],
            f"{task}_macro_f1": found["macro_f1"],
            f"{task}_unseen_recall": found["unseen_recall"],
        }
    row["X_f1"] = evaluate(dev, predictions, train_counts)["evidence_f1"]
    return {name: round(value, 4) for name, value in row.items()}


def dev_and_counts(args):
    dev = load_notes(args.data_dir, "dev")
    train_counts = Counter(g.code for d in load_notes(args.data_dir, "train") for g in d.codes)
    return dev, train_counts


#: bands the oracle is also computed on, beside the config's: a wider one, and every candidate
ORACLE_BANDS = {
    "wider": {"low": {"icd10cm": 0.05, "icd10pcs": 0.1}, "high": {"icd10cm": 0.3, "icd10pcs": 0.4}},
    "all candidates": {"low": {"icd10cm": 0.0, "icd10pcs": 0.0}, "high": {"icd10cm": 2.0, "icd10pcs": 2.0}},
}


def run_oracle(args, config: VerifierConfig) -> None:
    """A perfect keep/drop of the dev band candidates, at the shipped thresholds, against the coder alone."""
    from icdcoder.train.verifier import ScoreBand

    dev, train_counts = dev_and_counts(args)
    candidates = read_candidates(Path(args.out) / "dev_candidates.jsonl")
    doc_ids = [d.id for d in dev]
    scores = [c.score for c in candidates]
    kept = thresholded(candidates, scores, SHIPPED_THRESHOLDS)
    print(
        json.dumps(
            {
                "system": "coder alone (shipped thresholds)",
                **report(dev, as_predictions(doc_ids, candidates, scores, kept), train_counts),
            }
        ),
        flush=True,
    )
    bands = {"config": config.band} | {name: ScoreBand(**band) for name, band in ORACLE_BANDS.items()}
    for name, band in bands.items():
        inside = [band.contains(c.system, c.score) for c in candidates]
        oracle = [c.gold if i else keep for c, keep, i in zip(candidates, kept, inside)]
        band_candidates = [c for c, i in zip(candidates, inside) if i]
        counts = {
            "in_band": len(band_candidates),
            "in_band_kinds": kind_counts(band_candidates),
            "in_band_above_threshold": sum(k for k, i in zip(kept, inside) if i),
        }
        row = report(dev, as_predictions(doc_ids, candidates, scores, oracle), train_counts)
        print(
            json.dumps({"system": f"oracle keep/drop, {name} band", "band": band.model_dump(), **counts, **row}),
            flush=True,
        )


def run_train(args, config: VerifierConfig) -> None:
    """Train the adapter on the training notes' band candidates (cross-fitted dump)."""
    from icdcoder.ontology import load_ontology
    from icdcoder.train.verifier import train_verifier

    band = in_band(read_candidates(Path(args.out) / "train_candidates.jsonl"), config.band)
    examples = training_examples(band, config.max_examples, config.seed)
    print(
        json.dumps(
            {
                "train_band": len(band),
                "band_kinds": kind_counts(band),
                "examples": len(examples),
                "example_kinds": kind_counts(examples),
            }
        ),
        flush=True,
    )
    print(json.dumps(train_verifier(config, examples, load_ontology())), flush=True)


def run_score(args, config: VerifierConfig) -> None:
    """The verifier's probability for every dev band candidate, keyed by its line in ``dev_candidates.jsonl``."""
    import torch

    from icdcoder.io import atomic_write
    from icdcoder.models.verifier import load_verifier
    from icdcoder.ontology import load_ontology

    torch.set_num_threads(args.threads)
    candidates = read_candidates(Path(args.out) / "dev_candidates.jsonl")
    positions = [i for i, c in enumerate(candidates) if config.band.contains(c.system, c.score)]
    scorer = load_verifier(
        args.adapter or str(config.output_dir), dtype="float32", max_prompt_tokens=config.max_prompt_tokens
    )
    started = time.time()
    found = scorer.score_candidates([candidates[i] for i in positions], load_ontology(), config)
    seconds = time.time() - started
    with atomic_write(Path(args.out) / args.scores) as handle:
        for local, probability in sorted(found.probabilities.items()):
            handle.write(json.dumps({"line": positions[local], "p": round(probability, 5)}) + "\n")
    print(
        json.dumps(
            {
                "scored": len(found.probabilities),
                "dropped": dict(found.dropped),
                "seconds": round(seconds, 1),
                "candidates_per_s": round(len(positions) / seconds, 2),
            }
        ),
        flush=True,
    )


def read_scores(path: Path) -> dict[int, float]:
    """The probabilities ``score`` wrote, keyed by candidate line."""
    return {record["line"]: record["p"] for record in map(json.loads, path.read_text().splitlines()) if record}


def tuned_fusion(docs, candidates, probabilities: dict[int, float], band, weights: list[float]) -> tuple[float, dict]:
    """The verifier weight and thresholds with the best micro-F1 + MAP (D + P) on ``docs``."""
    best = None
    for weight in weights:
        scores = scores_with_verdicts(candidates, probabilities, weight, band)
        thresholds, total = tuned_thresholds(docs, candidates, scores)
        if best is None or total > best[0]:
            best = (total, weight, thresholds)
    return best[1], best[2]


def run_measure(args, config: VerifierConfig) -> None:
    """LLM off against verifier on, weights and thresholds cross-fitted on dev folds."""
    dev, train_counts = dev_and_counts(args)
    candidates = read_candidates(Path(args.out) / "dev_candidates.jsonl")
    if args.scores == "oracle":  # the bound through this fusion: a verifier that is always right on the band
        probabilities = {i: float(c.gold) for i, c in enumerate(candidates) if config.band.contains(c.system, c.score)}
    else:
        probabilities = read_scores(Path(args.out) / args.scores)
    doc_ids = [d.id for d in dev]
    folds = [list(range(start, len(dev), args.folds)) for start in range(args.folds)]
    for name, weights in (("LLM off", [0.0]), ("verifier on", WEIGHTS)):
        scores_out, kept_out, picked = [0.0] * len(candidates), [False] * len(candidates), []
        for fold in folds:
            held = {doc_ids[i] for i in fold}
            rest = [dev[i] for i in range(len(dev)) if i not in set(fold)]
            weight, thresholds = tuned_fusion(rest, candidates, probabilities, config.band, weights)
            picked.append({"weight": weight, **thresholds})
            scores = scores_with_verdicts(candidates, probabilities, weight, config.band)
            kept = thresholded(candidates, scores, thresholds)
            for i, c in enumerate(candidates):
                if c.doc_id in held:
                    scores_out[i], kept_out[i] = scores[i], kept[i]
        row = report(dev, as_predictions(doc_ids, candidates, scores_out, kept_out), train_counts)
        print(json.dumps({"system": name, "cross_fitted": row, "fold_settings": picked}), flush=True)
    band = [i for i, c in enumerate(candidates) if config.band.contains(c.system, c.score) and i in probabilities]
    print(
        json.dumps(
            {
                "band_auc": band_auc([candidates[i].gold for i in band], [probabilities[i] for i in band]),
                "coder_score_auc": band_auc([candidates[i].gold for i in band], [candidates[i].score for i in band]),
                "band_scored": len(band),
            }
        ),
        flush=True,
    )


def band_auc(labels: list[bool], values: list[float]) -> float:
    """ROC AUC of ``values`` for ``labels`` (ties count half)."""
    positives = [v for v, y in zip(values, labels) if y]
    negatives = [v for v, y in zip(values, labels) if not y]
    if not positives or not negatives:
        return float("nan")
    ranked = sorted((v, y) for v, y in zip(values, labels))
    rank_sum, position = 0.0, 0
    while position < len(ranked):
        end = position
        while end < len(ranked) and ranked[end][0] == ranked[position][0]:
            end += 1
        average_rank = (position + 1 + end) / 2
        rank_sum += average_rank * sum(1 for v, y in ranked[position:end] if y)
        position = end
    return round((rank_sum - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives)), 4)


def note_of_words(notes, words: int):
    """A dev note cut to ``words`` words (the longest notes first), as a fresh document."""
    from icdcoder.data.schema import Document

    longest = max(notes, key=lambda d: len(d.text.split()))
    cut = " ".join(longest.text.split()[:words])
    return Document(id="speed", text=cut, language=longest.language)


def run_speed(args, config: VerifierConfig) -> None:
    """Seconds per 400-word note: the coder alone, and the coder plus the verifier on its band candidates."""
    import os

    import torch

    from icdcoder.infer.coder import SpanLLMPredictor
    from icdcoder.models.verifier import load_verifier
    from icdcoder.ontology import load_ontology
    from icdcoder.train.verifier import candidates_of, with_thresholds_lowered

    torch.set_num_threads(args.threads)
    note = note_of_words(load_notes(args.data_dir, "dev"), 400)
    coder = with_thresholds_lowered(SpanLLMPredictor.load(args.model))
    scorer = load_verifier(
        args.adapter or str(config.output_dir), dtype="auto", max_prompt_tokens=config.max_prompt_tokens
    )
    ontology = load_ontology()
    coder.predict([note])  # warm-up: caches, lazy indexes
    runs = []
    for _ in range(3):
        started = time.time()
        prediction = coder.predict([note])[0]
        coded = time.time() - started
        band = in_band(candidates_of(note, prediction, config.sentence_words, labelled=False), config.band)
        scorer.score_candidates(band, ontology, config)
        runs.append((coded, time.time() - started, len(band)))
    coded, total, band_size = (min(run[i] for run in runs) for i in range(3))
    print(
        json.dumps(
            {
                "words": len(note.text.split()),
                "threads": args.threads,
                "band_candidates": band_size,
                "coder_notes_per_s": round(1 / coded, 2),
                "with_verifier_notes_per_s": round(1 / total, 3),
                "load_average": os.getloadavg()[0],
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("candidates", "oracle", "train", "score", "measure", "speed"))
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared/data/codiesp"))
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--out", default="/work/verifier_runs")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--split", choices=("dev", "train", "both"), default="both")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scores", default="dev_scores.jsonl", help="file under --out for the dev probabilities")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = load_verifier_config(args.config)
    {
        "candidates": run_candidates,
        "oracle": run_oracle,
        "train": run_train,
        "score": run_score,
        "measure": run_measure,
        "speed": run_speed,
    }[args.stage](args, config)


if __name__ == "__main__":
    main()
