"""Does a span-level LLM verifier over the shipped coder's own candidates pay? (the verifier of issue 28)

The stages run in order, each reading what the one before wrote under ``runs_dir``; ``train``, ``score``,
``measure`` and ``speed`` run once per verifier config (``verifier_configs``: one per backbone), each under
``runs_dir/<config name>/``:

- ``candidates``: the training notes coded cross-fitted (``folds`` folds: each by the coder's settings with a
  retriever and lexicons built on the other folds), and the dev notes coded by the coder; every candidate with a
  positive fused score, its evidence sentence and label, written to ``train_candidates.jsonl`` /
  ``dev_candidates.jsonl`` (``candidate_splits`` picks which).
- ``oracle``: on dev, what a perfect keep/drop of the candidates in a score band would give (D/P micro-F1, MAP), for
  the verifier config's band and two wider ones, at the coder's own thresholds for Spanish notes (``coder.json``).
- ``train``: the verifier's LoRA adapter, trained on the training notes' band candidates, saved to
  ``runs_dir/<config name>/adapter``.
- ``score``: the verifier's probability for every dev band candidate (``dev_scores.jsonl``).
- ``measure``: LLM off against verifier on, cross-fitted on ``folds`` dev folds: for a band candidate the fused score
  becomes ``(1 - w) * score + w * p``; per system, ``w`` and the thresholds are tuned on the other folds (micro-F1 +
  MAP, as ``predict tune``; a verifier may pay on diagnoses and not on procedures) and the held-out folds are scored
  together. LLM off has its thresholds tuned the same way.
  ``scores``: the probabilities fused, the verifier's (``verifier``) and/or the gold labels (``oracle``: the bound
  through this fusion).
- ``speed``: notes/s of the coder alone and with the verifier scoring its band candidates, on a 400-word dev note.

The candidates' sentences and the oracle's band are the first verifier config's.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from icdcoder.config import StrictModel
from icdcoder.experiments import Experiment
from icdcoder.experiments.common import BENCHMARK_CODER, CODIESP, TASKS, fold_indices, number
from icdcoder.io import atomic_write, read_text
from icdcoder.ontology.labels import CODER_SYSTEMS

Stage = Literal["candidates", "oracle", "train", "score", "measure", "speed"]
GRID = [round(0.025 * i, 3) for i in range(1, 29)]
#: the verifier weights ``measure`` tunes among
WEIGHTS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8]
#: bands the oracle is also computed on, beside the config's: a wide one around the fusion trees' thresholds (D 0.35,
#: P 0.375 in the shipped coder), and every candidate
ORACLE_BANDS = {
    "wide": {"low": {"icd10cm": 0.05, "icd10pcs": 0.05}, "high": {"icd10cm": 0.8, "icd10pcs": 0.8}},
    "all candidates": {"low": {"icd10cm": 0.0, "icd10pcs": 0.0}, "high": {"icd10cm": 2.0, "icd10pcs": 2.0}},
}
SCORES_FILE = "dev_scores.jsonl"


class VerifierStudyConfig(StrictModel):
    data_dir: Path = CODIESP
    model: Path = BENCHMARK_CODER
    #: one verifier per config (a backbone each), named by the file's stem
    verifier_configs: list[Path] = Field(
        default_factory=lambda: [Path("configs/verifier/smollm2.yaml"), Path("configs/verifier/gemma3.yaml")],
        min_length=1,
    )
    #: overrides (``key=value``) for every verifier config, e.g. ``max_examples=500``
    verifier_set: list[str] = Field(default_factory=list)
    stages: tuple[Stage, ...] = ("candidates", "oracle", "train", "score", "measure", "speed")
    #: the notes the candidates stage codes
    candidate_splits: Literal["dev", "train", "both"] = "both"
    folds: int = Field(5, ge=2)
    #: per verifier config name, the adapter ``score`` and ``speed`` read in place of the one ``train`` writes
    #: (``runs_dir/<name>/adapter``), e.g. one trained by ``icdcoder train verifier``
    adapters: dict[str, Path] = Field(default_factory=dict)
    #: what ``measure`` fuses: the verifier's probabilities, the gold labels (a perfect verifier), or both
    scores: tuple[Literal["verifier", "oracle"], ...] = ("verifier", "oracle")
    threads: int = Field(2, ge=1)
    runs_dir: Path = Path("runs/experiments/verifier_study")


def verifier_settings(config: VerifierStudyConfig) -> dict[str, Any]:
    """Each verifier config by name (its file's stem), its adapter saved under ``runs_dir/<name>`` unless
    ``verifier_set`` says otherwise."""
    from icdcoder.errors import InputError
    from icdcoder.train.cli import parse_overrides
    from icdcoder.train.verifier import load_verifier_config

    names = [path.stem for path in config.verifier_configs]
    if len(set(names)) < len(names):
        raise InputError("verifier_configs: two configs share a file name (each names its runs folder)")
    if "oracle" in names:
        raise InputError("verifier_configs: 'oracle' names the perfect verifier's rows, not a config")
    return {
        path.stem: load_verifier_config(
            path,
            overrides={
                "output_dir": str(config.runs_dir / path.stem / "adapter"),
                **parse_overrides(config.verifier_set),
            },
        )
        for path in config.verifier_configs
    }


def load_notes(data_dir: Path, split: str) -> list:
    from icdcoder.data.codiesp import load_codiesp

    return load_codiesp(data_dir, split, language="es", with_translation=True)


def dev_and_counts(config: VerifierStudyConfig) -> tuple[list, Counter]:
    dev = load_notes(config.data_dir, "dev")
    train_counts = Counter(g.code for d in load_notes(config.data_dir, "train") for g in d.codes)
    return dev, train_counts


# ---------------------------------------------------------------------------------------------------- candidates


def run_candidates(config: VerifierStudyConfig, settings) -> list[dict[str, Any]]:
    """Dump the dev candidates (the coder) and/or the training notes' (cross-fitted), as ``candidate_splits`` says."""
    from icdcoder.train.config import DataSettings
    from icdcoder.train.verifier import cross_fitted_candidates, kind_counts, write_candidates

    config.runs_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    started = time.time()
    if config.candidate_splits in ("dev", "both"):
        rows.append(dev_candidates(config, settings))
    if config.candidate_splits in ("train", "both"):
        data_settings = DataSettings(data_dir=config.data_dir, split="train", lang="es")
        train = cross_fitted_candidates(
            config.model, load_notes(config.data_dir, "train"), data_settings, config.folds, settings.sentence_words
        )
        write_candidates(config.runs_dir / "train_candidates.jsonl", train)
        rows.append(
            {
                "split": "train",
                "folds": config.folds,
                "candidates": len(train),
                "kinds": kind_counts(train),
                "seconds": round(time.time() - started),
            }
        )
    return rows


def dev_candidates(config: VerifierStudyConfig, settings) -> dict[str, Any]:
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.train.verifier import coder_candidates, gold_codes, kind_counts, write_candidates

    started = time.time()
    trained = gold_codes(load_notes(config.data_dir, "train"))
    dev = coder_candidates(
        SpanPredictor.load(config.model), load_notes(config.data_dir, "dev"), settings.sentence_words, trained
    )
    write_candidates(config.runs_dir / "dev_candidates.jsonl", dev)
    return {"split": "dev", "candidates": len(dev), "kinds": kind_counts(dev), "seconds": round(time.time() - started)}


# ---------------------------------------------------------------------------------------------------- fusion


def threshold_of(candidate, thresholds: dict) -> float:
    untrained = candidate.untrained and candidate.system == "icd10cm"
    return thresholds["untrained"] if untrained else thresholds[candidate.system]


def as_predictions(doc_ids: list[str], candidates, scores: list[float], kept: list[bool]) -> list:
    """One :class:`DocumentPrediction` per note: the kept candidates as its decisions (scores and evidence), the others
    with a positive score as the rest of its ranking, which MAP reads as it reads the coder's."""
    from icdcoder.data.schema import Evidence
    from icdcoder.predictor import CodePrediction, DocumentPrediction

    by_doc = {doc_id: DocumentPrediction(doc_id=doc_id) for doc_id in doc_ids}
    for candidate, score, keep in zip(candidates, scores, kept):
        prediction = by_doc.get(candidate.doc_id)
        if prediction is None or score <= 0:
            continue
        if keep:
            evidence = [Evidence(pieces=((start, end),)) for start, end in candidate.evidence]
            prediction.codes.append(CodePrediction(candidate.code, candidate.system, score, evidence=evidence))
        else:
            prediction.candidates.append(CodePrediction(candidate.code, candidate.system, score))
    return list(by_doc.values())


def thresholded(candidates, scores: list[float], thresholds: dict) -> list[bool]:
    return [score > 0 and score >= threshold_of(c, thresholds) for c, score in zip(candidates, scores)]


def objective(docs, candidates, scores: list[float], kept: list[bool], system: str) -> float:
    """micro-F1 of the kept candidates + MAP of the whole ranking, of ``system`` on ``docs`` (what ``predict tune``
    maximises)."""
    from icdcoder.evaluate.metrics import mean_average_precision, micro_prf

    wanted = {d.id for d in docs}
    ranked: dict[str, list[tuple[float, str]]] = {d.id: [] for d in docs}
    decided: dict[str, list[tuple[float, str]]] = {d.id: [] for d in docs}
    for c, score, keep in zip(candidates, scores, kept):
        if score > 0 and c.system == system and c.doc_id in wanted:
            ranked[c.doc_id].append((-score, c.code))
            if keep:
                decided[c.doc_id].append((-score, c.code))
    truth = {d.id: d.code_set(system) for d in docs}
    decisions = {doc_id: [code for _, code in sorted(items)] for doc_id, items in decided.items()}
    ranking = {doc_id: [code for _, code in sorted(items)] for doc_id, items in ranked.items()}
    return micro_prf(truth, decisions)["micro_f1"] + mean_average_precision(truth, ranking)


def coder_thresholds(model: Path) -> dict[str, float]:
    """The coder's thresholds on Spanish notes: per system, and the untrained diagnoses' own (``untrained``)."""
    from icdcoder.infer.store import read_coder_record

    settings = read_coder_record(model)[1].for_language("es")
    thresholds = {system: settings.threshold[system] for system in ("icd10cm", "icd10pcs")}
    return thresholds | {"untrained": settings.untrained_threshold.get("icd10cm", thresholds["icd10cm"])}


def tuned_thresholds(docs, candidates, scores: list[float]) -> tuple[dict, dict[str, float]]:
    """Each system's threshold, then the untrained diagnosis codes' own, by micro-F1 + MAP on ``docs``; and each
    system's micro-F1 + MAP at them (a system's objective reads only its own candidates and thresholds)."""
    thresholds = {"icd10cm": GRID[0], "icd10pcs": GRID[0], "untrained": GRID[0]}
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
    return thresholds, {system: objective(docs, candidates, scores, kept, system) for system in CODER_SYSTEMS}


def scores_with_verdicts(candidates, probabilities: dict[int, float], weights: dict[str, float], band) -> list[float]:
    """Each candidate's fused score with the verifier's probability at its system's weight (0 where none is given)."""
    from icdcoder.models.verifier import fused_with_verdict

    return [
        fused_with_verdict(
            c.score,
            probabilities.get(i),
            weights.get(c.system, 0.0),
            band.low.get(c.system, 0.0),
            band.high.get(c.system, 1.0),
        )
        for i, c in enumerate(candidates)
    ]


def report(dev, predictions, train_counts: Counter) -> dict[str, float | None]:
    """D/P MAP, micro/macro-F1, unseen-code recall, and X F1 (both systems) of ``predictions``."""
    from icdcoder.evaluate.metrics import evaluate

    row: dict[str, float | None] = {}
    for system, task in TASKS:
        found = evaluate(dev, predictions, train_counts, systems={system})
        row |= {
            f"{task}_map": found["map"],
            f"{task}_f1": found["micro_f1"],
            f"{task}_macro_f1": found["macro_f1"],
            f"{task}_unseen_recall": found["unseen_recall"],
        }
    row["X_f1"] = evaluate(dev, predictions, train_counts)["evidence_f1"]
    return {name: None if value is None else round(value, 4) for name, value in row.items()}  # None: no unseen code


# ---------------------------------------------------------------------------------------------------- oracle


def run_oracle(config: VerifierStudyConfig, settings) -> list[dict[str, Any]]:
    """A perfect keep/drop of the dev band candidates, at fixed thresholds, against the coder alone."""
    from icdcoder.train.verifier import ScoreBand, kind_counts, read_candidates

    dev, train_counts = dev_and_counts(config)
    candidates = read_candidates(config.runs_dir / "dev_candidates.jsonl")
    doc_ids = [d.id for d in dev]
    scores = [c.score for c in candidates]
    thresholds = coder_thresholds(config.model)
    kept = thresholded(candidates, scores, thresholds)
    rows: list[dict[str, Any]] = [
        {
            "system": "coder alone",
            "thresholds": thresholds,
            **report(dev, as_predictions(doc_ids, candidates, scores, kept), train_counts),
        }
    ]
    bands = {"config": settings.band} | {name: ScoreBand(**band) for name, band in ORACLE_BANDS.items()}
    for name, band in bands.items():
        inside = [band.contains(c.system, c.score) for c in candidates]
        oracle = [bool(c.gold) if i else keep for c, keep, i in zip(candidates, kept, inside)]
        band_candidates = [c for c, i in zip(candidates, inside) if i]
        counts = {
            "in_band": len(band_candidates),
            "in_band_kinds": kind_counts(band_candidates),
            "in_band_above_threshold": sum(k for k, i in zip(kept, inside) if i),
        }
        row = report(dev, as_predictions(doc_ids, candidates, scores, oracle), train_counts)
        rows.append({"system": f"oracle keep/drop, {name} band", "band": band.model_dump(), **counts, **row})
    return rows


# ---------------------------------------------------------------------------------------------------- train, score


def run_train(config: VerifierStudyConfig, settings) -> dict[str, Any]:
    """Train the adapter on the training notes' band candidates (cross-fitted dump)."""
    from icdcoder.ontology import load_ontology
    from icdcoder.train.verifier import in_band, kind_counts, read_candidates, train_verifier, training_examples

    band = in_band(read_candidates(config.runs_dir / "train_candidates.jsonl"), settings.band)
    examples = training_examples(band, settings.max_examples, settings.seed)
    return {
        "train_band": len(band),
        "band_kinds": kind_counts(band),
        "examples": len(examples),
        "example_kinds": kind_counts(examples),
        "training": train_verifier(settings, examples, load_ontology()),
    }


def adapter_of(config: VerifierStudyConfig, name: str, settings) -> str:
    return str(config.adapters.get(name, settings.output_dir))


def scores_path(config: VerifierStudyConfig, name: str) -> Path:
    return config.runs_dir / name / SCORES_FILE


def run_score(config: VerifierStudyConfig, name: str, settings) -> dict[str, Any]:
    """The verifier's probability for every dev band candidate, keyed by its line in ``dev_candidates.jsonl``."""
    import torch

    from icdcoder.models.loading import compute_device
    from icdcoder.models.verifier import load_verifier
    from icdcoder.ontology import load_ontology
    from icdcoder.train.verifier import read_candidates

    torch.set_num_threads(config.threads)
    candidates = read_candidates(config.runs_dir / "dev_candidates.jsonl")
    positions = [i for i, c in enumerate(candidates) if settings.band.contains(c.system, c.score)]
    device = compute_device(settings.device)
    scorer = load_verifier(
        adapter_of(config, name, settings),
        dtype="auto" if device == "cuda" else "float32",
        max_prompt_tokens=settings.max_prompt_tokens,
        device=device,
    )
    started = time.time()
    found = scorer.score_candidates([candidates[i] for i in positions], load_ontology(), settings)
    seconds = time.time() - started
    with atomic_write(scores_path(config, name)) as handle:
        for local, probability in sorted(found.probabilities.items()):
            handle.write(json.dumps({"line": positions[local], "p": round(probability, 5)}) + "\n")
    return {
        "device": device,
        "scored": len(found.probabilities),
        "dropped": dict(found.dropped),
        "seconds": round(seconds, 1),
        "candidates_per_s": round(len(positions) / seconds, 2),
    }


def read_scores(path: Path) -> dict[int, float]:
    """The probabilities ``score`` wrote, keyed by candidate line."""
    return {record["line"]: record["p"] for record in map(json.loads, read_text(path).splitlines()) if record}


# ---------------------------------------------------------------------------------------------------- measure


def tuned_fusion(
    docs, candidates, probabilities: dict[int, float], band, weights: list[float]
) -> tuple[dict[str, float], dict]:
    """Per system, the verifier weight (among ``weights``) and thresholds with the best micro-F1 + MAP on ``docs``.

    A system's objective reads only its own candidates, whose scores only its own weight moves, so each system picks
    its weight apart: a verifier may help diagnoses and not procedures."""
    best: dict[str, tuple[float, float, dict]] = {}
    for weight in weights:
        scores = scores_with_verdicts(candidates, probabilities, dict.fromkeys(CODER_SYSTEMS, weight), band)
        thresholds, objectives = tuned_thresholds(docs, candidates, scores)
        for system in CODER_SYSTEMS:
            if system not in best or objectives[system] > best[system][0]:
                best[system] = (objectives[system], weight, thresholds)
    diagnoses, procedures = best["icd10cm"][2], best["icd10pcs"][2]
    thresholds = {"icd10cm": diagnoses["icd10cm"], "untrained": diagnoses["untrained"]}
    return {system: found[1] for system, found in best.items()}, thresholds | {"icd10pcs": procedures["icd10pcs"]}


def band_auc(labels: list[bool], values: list[float]) -> float | None:
    """ROC AUC of ``values`` for ``labels`` (ties count half); None when the band holds one class only."""
    positives = [v for v, y in zip(values, labels) if y]
    negatives = [v for v, y in zip(values, labels) if not y]
    if not positives or not negatives:
        return None
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


def run_measure(config: VerifierStudyConfig, verifiers: dict[str, Any]) -> dict[str, Any]:
    """LLM off against verifier on, weights and thresholds cross-fitted on dev folds, for each verifier of
    ``verifiers`` (its probabilities fused) and the ``oracle`` (the gold labels, on the first verifier's band), as
    ``scores`` asks. LLM off (weight 0) reads no probability: it is tuned once and heads every entry's rows."""
    from icdcoder.train.verifier import read_candidates

    dev, train_counts = dev_and_counts(config)
    candidates = read_candidates(config.runs_dir / "dev_candidates.jsonl")
    first = next(iter(verifiers.values()))
    probabilities_of: dict[str, tuple[Any, dict[int, float]]] = {}
    if "verifier" in config.scores:
        probabilities_of |= {
            name: (settings, read_scores(scores_path(config, name))) for name, settings in verifiers.items()
        }
    if "oracle" in config.scores:  # the bound through this fusion: a verifier that is always right on the band
        probabilities_of["oracle"] = (
            first,
            {i: float(bool(c.gold)) for i, c in enumerate(candidates) if first.band.contains(c.system, c.score)},
        )
    folds = fold_indices(len(dev), config.folds)
    off = cross_fitted_row("LLM off", dev, train_counts, candidates, {}, first.band, [0.0], folds)
    measured = {}
    for name, (settings, probabilities) in probabilities_of.items():
        on = cross_fitted_row(
            "verifier on", dev, train_counts, candidates, probabilities, settings.band, WEIGHTS, folds
        )
        band = [i for i, c in enumerate(candidates) if settings.band.contains(c.system, c.score) and i in probabilities]
        measured[name] = {
            "rows": [off, on],
            "band_auc": band_auc([bool(candidates[i].gold) for i in band], [probabilities[i] for i in band]),
            "coder_score_auc": band_auc([bool(candidates[i].gold) for i in band], [candidates[i].score for i in band]),
            "band_scored": len(band),
        }
    return measured


def cross_fitted_row(
    system: str, dev, train_counts: Counter, candidates, probabilities: dict[int, float], band, weights, folds
) -> dict[str, Any]:
    """Each dev fold scored with the verifier weights (per system, among ``weights``) and thresholds tuned on the other
    folds."""
    doc_ids = [d.id for d in dev]
    scores_out, kept_out, picked = [0.0] * len(candidates), [False] * len(candidates), []
    for fold in folds:
        held = {doc_ids[i] for i in fold}
        rest = [dev[i] for i in range(len(dev)) if i not in set(fold)]
        chosen, thresholds = tuned_fusion(rest, candidates, probabilities, band, weights)
        picked.append({"weight": chosen, **thresholds})
        scores = scores_with_verdicts(candidates, probabilities, chosen, band)
        kept = thresholded(candidates, scores, thresholds)
        for i, c in enumerate(candidates):
            if c.doc_id in held:
                scores_out[i], kept_out[i] = scores[i], kept[i]
    row = report(dev, as_predictions(doc_ids, candidates, scores_out, kept_out), train_counts)
    return {"system": system, "cross_fitted": row, "fold_settings": picked}


# ---------------------------------------------------------------------------------------------------- speed


def note_of_words(notes: list, words: int):
    """A dev note cut to ``words`` words (the longest notes first), as a fresh document."""
    from icdcoder.data.schema import Document

    longest = max(notes, key=lambda d: len(d.text.split()))
    cut = " ".join(longest.text.split()[:words])
    return Document(id="speed", text=cut, language=longest.language)


def run_speed(config: VerifierStudyConfig, name: str, settings) -> dict[str, Any]:
    """Seconds per 400-word note: the coder alone, and the coder plus the verifier on its band candidates."""
    import torch

    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.models.verifier import load_verifier
    from icdcoder.ontology import load_ontology
    from icdcoder.train.verifier import candidates_of, in_band, with_thresholds_lowered

    torch.set_num_threads(config.threads)
    note = note_of_words(load_notes(config.data_dir, "dev"), 400)
    coder = with_thresholds_lowered(SpanPredictor.load(config.model))
    scorer = load_verifier(
        adapter_of(config, name, settings), dtype="auto", max_prompt_tokens=settings.max_prompt_tokens
    )
    ontology = load_ontology()
    coder.predict([note])  # warm-up: caches, lazy indexes
    runs = []
    for _ in range(3):
        started = time.time()
        prediction = coder.predict([note])[0]
        coding = time.time() - started
        band = in_band(candidates_of(note, prediction, settings.sentence_words, labelled=False), settings.band)
        scorer.score_candidates(band, ontology, settings)
        runs.append((coding, time.time() - started, len(band)))
    coding, total, band_size = (min(run[i] for run in runs) for i in range(3))
    return {
        "words": len(note.text.split()),
        "threads": config.threads,
        "band_candidates": band_size,
        "coder_notes_per_s": round(1 / coding, 2),
        "with_verifier_notes_per_s": round(1 / total, 3),
        "load_average": os.getloadavg()[0],
    }


def run(config: VerifierStudyConfig) -> dict[str, Any]:
    verifiers = verifier_settings(config)
    first = next(iter(verifiers.values()))
    results: dict[str, Any] = {"split": "CodiEsp dev (Spanish + translation)"}
    for stage in config.stages:
        if stage == "candidates":
            results["candidates"] = run_candidates(config, first)
        elif stage == "oracle":
            results["oracle"] = run_oracle(config, first)
        elif stage == "train":
            results["train"] = {name: run_train(config, settings) for name, settings in verifiers.items()}
        elif stage == "score":
            results["score"] = {name: run_score(config, name, settings) for name, settings in verifiers.items()}
        elif stage == "measure":
            results["measure"] = run_measure(config, verifiers)
        else:
            results["speed"] = {name: run_speed(config, name, settings) for name, settings in verifiers.items()}
    return results


# ---------------------------------------------------------------------------------------------------- GPU run

#: the verifiers ``benchmarks/gpu_method.py`` trains on a GPU, one per backbone
GPU_CONFIGS = (Path("configs/verifier/gemma3_gpu.yaml"), Path("configs/verifier/smollm2_gpu.yaml"))


def tiny_overrides(tiny_lm: Path) -> list[str]:
    """The GPU configs shrunk for the CPU test of the GPU run: a random 2-layer model, a few examples, every
    candidate in the band (a tiny coder's scores rarely fall in a real one)."""
    return [
        f"backbone={tiny_lm}",
        "device=cpu",
        "lora.layers_to_transform=null",
        "max_examples=8",
        "batch_size=4",
        "max_seconds=60",
        *(f"band.{side}.{system}={value}" for side, value in (("low", 0), ("high", 2)) for system in CODER_SYSTEMS),
    ]


def gpu_stage(
    run_dir: Path, coder_dir: Path, data_dir: Path, tiny: bool, configs: Sequence[Path] = GPU_CONFIGS
) -> dict[str, Any]:
    """The verifier rung of ``benchmarks/gpu_method.py``: each verifier of ``configs`` trained, then scoring the dev
    band candidates, then LLM off against verifier on, cross-fitted (``measure``), in ``run_dir/verifier_study``.

    The candidate dumps take several minutes of CPU coding that a lent GPU's time should not pay for: make them first
    on the CPU machine (``icdcoder experiment run verifier_study --set 'stages=[candidates, oracle]' --set
    runs_dir=RUN/verifier_study``) and carry them; without them this stage codes the notes itself. The whole results
    go to ``gpu_results.json`` there; the summary returned holds the measured rows."""
    runs = run_dir / "verifier_study"
    carried = all((runs / f"{split}_candidates.jsonl").is_file() for split in ("train", "dev"))
    stages: tuple[Stage, ...] = ("train", "score", "measure")
    config = VerifierStudyConfig(
        data_dir=data_dir,
        model=coder_dir,
        verifier_configs=list(configs),
        verifier_set=tiny_overrides(run_dir / "tiny_lm") if tiny else [],
        stages=stages if carried else ("candidates", "oracle", *stages),
        folds=2 if tiny else 5,
        threads=os.cpu_count() or 1,
        runs_dir=runs,
    )
    results = run(config)
    with atomic_write(runs / "gpu_results.json") as handle:
        json.dump(results, handle, indent=2)
    return {
        "candidates": "carried" if carried else "coded here",
        "trained": {name: found["training"] for name, found in results["train"].items()},
        "measured": {
            name: {
                "LLM off": found["rows"][0]["cross_fitted"],
                "verifier on": found["rows"][1]["cross_fitted"],
                "band_auc": found["band_auc"],
                "coder_score_auc": found["coder_score_auc"],
            }
            for name, found in results["measure"].items()
        },
        "table": table(results),
    }


# ---------------------------------------------------------------------------------------------------- table

COLUMNS = ("D_map", "D_f1", "D_macro_f1", "D_unseen_recall", "P_map", "P_f1", "X_f1")
#: the table's name of a verifier config (the file's stem otherwise)
BACKBONE_NAMES = {"smollm2": "SmolLM2-135M", "gemma3": "Gemma-3-270M"}


def _row(label: str, scores: dict[str, float]) -> str:
    return f"| {label} | " + " | ".join(number(scores.get(column)) for column in COLUMNS) + " |"


#: the thresholds the oracle rows of runs before the fusion trees kept (they did not record them)
EARLIER_THRESHOLDS = {"icd10cm": 0.1, "icd10pcs": 0.15}


def table(results: dict[str, Any]) -> str:
    lines = [
        "| dev | D MAP | D micro-F1 | D macro-F1 | D unseen R | P MAP | P micro-F1 | X F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    measured = results.get("measure", {})
    for position, (name, found) in enumerate(measured.items()):
        off, on = found["rows"]
        if position == 0:
            lines.append(_row("cross-fitted: coder, LLM off", off["cross_fitted"]))
        label = (
            "a perfect verifier on the same band" if name == "oracle" else f"verifier {BACKBONE_NAMES.get(name, name)}"
        )
        lines.append(_row(f"cross-fitted: + {label}", on["cross_fitted"]))
    oracle = results.get("oracle", [])
    kept_at = oracle[0].get("thresholds", EARLIER_THRESHOLDS) if oracle else EARLIER_THRESHOLDS
    for row in oracle:
        system = row["system"].removesuffix(" (shipped thresholds)")  # the name earlier runs recorded
        lines.append(_row(f"thresholds D {kept_at['icd10cm']:g}, P {kept_at['icd10pcs']:g}: {system}", row))
    notes = [band_note(measured["oracle"])] if "oracle" in measured else []
    for name in dict.fromkeys([*measured, *results.get("train", {}), *results.get("speed", {})]):
        if name != "oracle":
            notes.append(verifier_note(BACKBONE_NAMES.get(name, name), name, results))
    return "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "") + "\n"


def band_note(oracle: dict[str, Any]) -> str:
    """One line on the band the perfect verifier read: its dev candidates, and how well the fused score ranks them."""
    return (
        f"- the band: {oracle['band_scored']:,} dev candidates; inside it the fused score separates right from wrong "
        f"codes with ROC AUC {number(oracle['coder_score_auc'])}, the bar a verifier must clear."
    )


def verifier_note(label: str, name: str, results: dict[str, Any]) -> str:
    """One line on a verifier: its band AUC, training, scoring and speed, as far as the results hold them."""
    parts = []
    if name in results.get("measure", {}):
        found = results["measure"][name]
        parts.append(
            f"inside the band ({found['band_scored']:,} candidates) ROC AUC {number(found['band_auc'])}, "
            f"the fused score's {number(found['coder_score_auc'])}"
        )
    if name in results.get("train", {}):
        trained = results["train"][name]["training"]
        parts.append(
            f"training {trained['examples']:,} examples, {trained['steps']} of {trained['planned_steps']} planned "
            f"steps, {trained['wall_seconds']:.0f} s{' on ' + trained['device'] if 'device' in trained else ''}, "
            f"adapter {trained['adapter_mb']:g} MB"
        )
    if name in results.get("score", {}):
        parts.append(f"scoring {results['score'][name]['candidates_per_s']:g} band candidates/s")
    if name in results.get("speed", {}):
        speed = results["speed"][name]
        parts.append(
            f"a {speed['words']}-word note on {speed['threads']} threads: coder {speed['coder_notes_per_s']:g} "
            f"notes/s, with the verifier on its {speed['band_candidates']} band candidates "
            f"{speed['with_verifier_notes_per_s']:g} notes/s"
        )
    return f"- {label}: " + "; ".join(parts) + "."


CAVEATS = """\
- Cross-fitted rows pick the verifier weight (per system since 2026-12-08, one for both before) and the thresholds on
  the other dev folds and score each fold, all folds together: estimates for unseen notes of the same distribution,
  not test-set scores. The oracle rows keep the coder's own thresholds for Spanish notes (tuned on dev; runs before
  the fusion trees kept D 0.1, P 0.15).
- The oracle and "perfect verifier" rows read the gold labels: they bound what a verifier on that band can add, they
  are not a system.
- CPU scale: SmolLM2-135M and Gemma-3-270M, each with LoRA on its top 8 layers, one seed, at most one epoch: training
  stops at the config's ``max_seconds`` (1,500 s), which on a busy machine comes first (the notes give the steps
  done). Training time, scoring rate and notes/s depend on the machine and on what else runs beside it.
"""

EXPERIMENT = Experiment(
    name="verifier_study",
    title="a span-level LLM verifier over the coder's own candidates",
    config=VerifierStudyConfig,
    run=run,
    table=table,
    caveats=CAVEATS,
    cost="about 2 hours on 2 CPU cores (cross-fitted candidates ~6 min; per backbone up to 25 min of LoRA training and ~10 min scoring the dev band)",
)
