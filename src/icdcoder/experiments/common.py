"""What several experiments share: the CodiEsp notes a coder is scored on, the D/P scores of its predictions, the
fusion re-tuned on some notes, and the records that training and tuning leave in a coder folder."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from icdcoder.errors import InputError
from icdcoder.io import read_text

#: the coder's systems and the CodiEsp task each is scored as
TASKS = (("icd10cm", "D"), ("icd10pcs", "P"))
BENCHMARK_CODER = Path("src/icdcoder/models/benchmark")
CODIESP = Path("../shared/data/codiesp")


#: how a table names the notes of each language
NOTES = {"es": "Spanish (+ translation)", "en": "English"}


def coder_and_notes(model: Path, data_dir: Path, lang: str, limit: int | None = None) -> tuple[Any, list, Counter]:
    """The coder (set to its fusion for ``lang`` as a weighted mean, whose weights the experiments study: where it
    fuses by trees, the mean as ``predict tune`` last tuned it, from ``coder.json``; its LLM as saved), the dev notes
    (Spanish with their translations, or English), and how often each code occurs in the training notes."""
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.infer.coder import SpanPredictor

    coder = SpanPredictor.load(model)
    coder.settings = weighted_mean_settings(model, coder.settings, lang)
    train = load_codiesp(data_dir, "train")
    dev = load_codiesp(data_dir, "dev", language=lang, with_translation=lang == "es")[:limit]
    return coder, dev, Counter(gold.code for document in train for gold in document.codes)


def weighted_mean_settings(model: Path, settings, lang: str):
    """``settings`` for ``lang`` notes fused by their weighted mean: as tuned, or, where they fuse by trees, with the
    weights and thresholds of the grid's last tuning (``coder.json``'s ``tuning`` record for the training language,
    ``tuning_<lang>`` for another)."""
    from icdcoder.infer.store import read_coder_record

    settings = settings.for_language(lang)
    if settings.fusion == "mean":
        return settings
    record = read_coder_record(model)[0].get("tuning" if lang == settings.language else f"tuning_{lang}")
    if not record:
        raise InputError(f"the coder fuses {lang} notes by trees and has no tuning of its weighted mean", path=model)
    return settings.model_copy(update={**record["best_settings"], "fusion": "mean"})


def fold_indices(count: int, folds: int) -> list[list[int]]:
    """``folds`` folds of ``range(count)``: item ``i`` in fold ``i % folds``."""
    return [list(range(start, count, folds)) for start in range(folds)]


def prediction_scores(dev: list, predictions: list, train_counts: Counter) -> dict[str, float | None]:
    """D/P micro-F1, macro-F1 and unseen-code recall of the decisions of ``predictions`` for the ``dev`` notes, and
    the MAP of their rankings."""
    from icdcoder.evaluate.metrics import (
        frequency_band_recall,
        macro_prf,
        mean_average_precision,
        micro_prf,
    )

    row: dict[str, float | None] = {}
    for system, task in TASKS:
        decided = {p.doc_id: [c.code for c in p.ranked({system})] for p in predictions}
        ranked = {p.doc_id: [c.code for c in p.ranking({system})] for p in predictions}
        truth = {document.id: document.code_set(system) for document in dev}
        row[f"{task}_f1"] = round(micro_prf(truth, decided)["micro_f1"], 4)
        row[f"{task}_map"] = round(mean_average_precision(truth, ranked), 4)
        row[f"{task}_macro_f1"] = round(macro_prf(truth, decided)["macro_f1"], 4)
        unseen = frequency_band_recall(truth, decided, train_counts)["unseen_recall"]  # None: no unseen gold code
        row[f"{task}_unseen_recall"] = None if unseen is None else round(unseen, 4)
    return row


def run_cli(arguments: list[str], log: Path, cwd: Path | None = None) -> dict[str, Any]:
    """Run an ``icdcoder`` command in a fresh process (stderr to ``log``) and parse the JSON summary it prints last."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w", encoding="utf-8") as stderr:
        result = subprocess.run(
            [sys.executable, "-m", "icdcoder.cli", *arguments],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=cwd,
            check=False,
        )
    if result.returncode != 0:
        raise InputError(
            f"'icdcoder {' '.join(arguments[:2])}' failed (exit {result.returncode}); see the log", path=log
        )
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def tune_args(
    *,
    model: Path,
    data_dir: Path,
    cache: Path,
    threads: int,
    llm: bool | None = None,
    lang: str | None = None,
    limit: int | None = None,
    dtype: str | None = None,
) -> list[str]:
    """``predict tune`` arguments: tune ``model`` on the CodiEsp dev notes of ``data_dir``, caching stage-1 outputs in
    ``cache``. ``None``: the command's default (``llm``: the coder's saved ``use_llm``)."""
    arguments = ["predict", "tune", "--model", str(model), "--data-dir", str(data_dir), "--split", "dev"]
    arguments += ["--lang", lang] if lang is not None else []
    arguments += ["--cache", str(cache), "--threads", str(threads)]
    arguments += [] if llm is None else ["--llm" if llm else "--no-llm"]
    arguments += ["--limit", str(limit)] if limit is not None else []
    arguments += ["--dtype", dtype] if dtype is not None else []
    return arguments


def sets(overrides: dict[str, Any]) -> list[str]:
    """``--set key=value`` arguments for the overrides that have a value."""
    return [part for key, value in overrides.items() if value is not None for part in ("--set", f"{key}={value}")]


def mean_and_spread(values: list[float], digits: int = 3) -> str:
    """``mean`` for one value, ``mean ± sample standard deviation`` for more, ``-`` for none."""
    import statistics

    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def weight_rows(
    coder,
    dev: list,
    outputs: list,
    train_counts: Counter,
    weights: list[float],
    weight_name: str,
    one_threshold: bool = False,
) -> list[dict[str, Any]]:
    """Per value of the coder's ``weight_name``: D/P scores at thresholds re-tuned on ``dev`` (each system's, then its
    untrained codes' own unless ``one_threshold``), and those thresholds."""
    from icdcoder.infer.fusion import aggregate, collect_signals
    from icdcoder.infer.tuning import with_tuned_thresholds

    collected = [collect_signals(note) for note in outputs]
    rows = []
    for weight in weights:
        settings = coder.settings.model_copy(update={weight_name: weight})
        tuned = with_tuned_thresholds(outputs, dev, settings, untrained=not one_threshold)
        predictions = [aggregate(note, tuned, found) for note, found in zip(outputs, collected)]
        thresholds = {f"{task}_threshold": tuned.threshold[system] for system, task in TASKS}
        thresholds |= {
            f"{task}_untrained_threshold": tuned.untrained_threshold[system]
            for system, task in TASKS
            if system in tuned.untrained_threshold
        }
        rows.append({"weight": weight, **prediction_scores(dev, predictions, train_counts), **thresholds})
    return rows


def hit_report(dev: list, hits: dict[str, set[str]], system: str, train_counts: Counter) -> dict[str, Any]:
    """How many ``hits`` (codes per note) on codes seen and unseen in training are gold, and how many are the prefix
    of a gold code."""
    counts: Counter = Counter()
    for document in dev:
        gold = document.code_set(system)
        for code in hits[document.id]:
            band = "unseen" if train_counts[code] == 0 else "seen"
            counts[f"{band}_hits"] += 1
            counts[f"{band}_correct"] += code in gold
            counts[f"{band}_prefix_of_gold"] += any(other != code and other.startswith(code) for other in gold)
    precision = {
        f"{band}_precision": round(counts[f"{band}_correct"] / max(counts[f"{band}_hits"], 1), 3)
        for band in ("seen", "unseen")
    }
    return {**counts, **precision}


def number(value: float | None, digits: int = 3) -> str:
    """A score for a table cell; ``-`` where there is none (e.g. no unseen gold code)."""
    return "-" if value is None else f"{value:.{digits}f}"


def f1_and_map(scores: dict[str, float], task: str) -> str:
    """``micro-F1 / MAP`` of ``task`` (``D`` or ``P``) from a row of :func:`prediction_scores`, for a table cell."""
    return f"{scores[f'{task}_f1']:.3f} / {scores[f'{task}_map']:.3f}"


def minutes(seconds: float | None) -> str:
    """A training time for a table cell."""
    return "not recorded" if seconds is None else f"{seconds / 60:.0f} min"


def tuned_settings(settings, notes: list, outputs: list) -> tuple[Any, dict[str, Any]]:
    """The settings that ``predict tune``'s grid picks on ``notes``, and the weights and thresholds it picked."""
    from icdcoder.infer.tuning import GRID_WEIGHTS, tune_fusion

    best = tune_fusion(outputs, notes, settings)["best_settings"]
    picked = {name: best[name] for name in GRID_WEIGHTS if best[name]}
    return settings.model_copy(update=best), picked | {
        "threshold": best["threshold"],
        "untrained_threshold": best["untrained_threshold"],
    }


def coded(outputs: list, settings, one_threshold: bool, trees=None) -> list:
    """``outputs`` aggregated with ``settings``; ``one_threshold``: without the untrained codes' own thresholds;
    ``trees``: the fusion trees of settings that fuse by trees."""
    from icdcoder.infer.fusion import aggregate, collect_signals

    settings = settings.model_copy(update={"untrained_threshold": {}}) if one_threshold else settings
    return [aggregate(note, settings, collect_signals(note), trees) for note in outputs]


#: the D/P scores a ``predict tune`` record holds for each row
TUNED_SCORES = ("D_f1", "D_map", "P_f1", "P_map")


def training_cost(folder: Path) -> dict[str, Any]:
    """Tokens, wall time and steps from ``run_meta.json`` (train sft) or ``meta.json`` (a shipped model)."""
    if (folder / "run_meta.json").is_file():
        meta = json.loads(read_text(folder / "run_meta.json"))
        return {
            "train_tokens": meta.get("train_tokens"),
            "wall_seconds": meta.get("wall_seconds"),
            "steps": meta.get("steps"),
        }
    report = json.loads(read_text(folder / "meta.json")).get("fit_report") or {}
    return {"train_tokens": report.get("train_tokens"), "wall_seconds": report.get("wall_seconds"), "steps": None}


def fusion_scores(tuning: dict[str, Any]) -> dict[str, Any]:
    """The LLM alone, the best fusion, and the best fusion without the LLM, from a ``predict tune`` record."""
    from icdcoder.infer.tuning import objective

    table = tuning["table"]
    fused = max(table, key=objective)
    without = max((row for row in table if row["llm_weight"] == 0), key=objective)
    return {
        "llm_alone": {key: tuning["llm_alone"][key] for key in TUNED_SCORES},
        "fused": {**{key: fused[key] for key in TUNED_SCORES}, "llm_weight": fused["llm_weight"]},
        "without_llm": {key: without[key] for key in TUNED_SCORES},
    }
