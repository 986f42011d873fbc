"""Shared by the benchmarks that weigh one signal of the shipped coder (translation_embeddings.py, specificity.py,
pcs_composition.py, unseen_concepts.py, value_templates.py; tuning_holdout.py and unseen_threshold.py score with it too): a signal the coder lacks borrows the LLM's slot (the shipped coder runs with
its LLM off), one it has is weighed by its own weight field, and each weight is scored at D/P thresholds re-tuned on dev:
each system's threshold, then its untrained codes' own (``--one-threshold``: one threshold per system, as the README's
tables measured before the untrained codes got their own)."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: the coder's systems and the CodiEsp task each is scored as
TASKS = (("icd10cm", "D"), ("icd10pcs", "P"))


def parser_with_model(description: str, weights: list[float]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default=str(REPO / "src/icdcoder/models/default"))
    parser.add_argument("--weights", type=float, nargs="*", default=weights)
    parser.add_argument(
        "--one-threshold", action="store_true",
        help="one threshold per system, as before the codes no training note carries got their own",
    )
    return parser


def parser_with_language(description: str) -> argparse.ArgumentParser:
    """:func:`parser_with_model` with no default weights, plus ``--lang es|en`` (the notes read)."""
    parser = parser_with_model(description, weights=[])
    parser.add_argument("--lang", choices=("es", "en"), default="es")
    return parser


def load_coder_for_language(args: argparse.Namespace, signal: str):
    """:func:`load_coder_and_notes` for the notes of ``args.lang``, the coder set to its fusion for them."""
    coder, dev, train_counts = load_coder_and_notes(args, signal, lang=args.lang)
    coder.settings = coder.settings.for_language(args.lang)
    return coder, dev, train_counts


def load_coder_and_notes(args: argparse.Namespace, signal: str, lang: str = "es"):
    """The coder (its LLM off), the dev notes (Spanish with their translations, or English), and training counts
    of diagnosis and procedure codes (the two systems' codes never coincide)."""
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.infer.coder import SpanLLMPredictor

    coder = SpanLLMPredictor.load(args.model)
    if coder.settings.use_llm:
        raise SystemExit(f"the {signal} signal borrows the LLM's slot: use a coder with use_llm false")
    train = load_codiesp(args.data_dir, "train")
    dev = load_codiesp(args.data_dir, "dev", language=lang, with_translation=lang == "es")
    train_counts = Counter(gold.code for document in train for gold in document.codes)
    return coder, dev, train_counts


def rows_by_weight(
    coder, dev, outputs, train_counts: Counter, weights: list[float], weight_name: str = "llm_weight", one_threshold: bool = False
) -> Iterator[dict]:
    """Per value of ``weight_name`` (the borrowed LLM slot unless named): D/P micro-F1 and MAP at re-tuned
    thresholds (those of the codes training notes carry, and of the others unless ``one_threshold``), D/P unseen-code
    recall, and those thresholds."""
    from icdcoder.infer.coder import aggregate, collect_signals
    from icdcoder.infer.tuning import with_tuned_thresholds

    collected = [collect_signals(note) for note in outputs]
    for weight in weights:
        tuned = with_tuned_thresholds(outputs, dev, coder.settings.model_copy(update={weight_name: weight}), untrained=not one_threshold)
        predictions = [aggregate(note, tuned, found) for note, found in zip(outputs, collected)]
        thresholds = {f"{task}_threshold": tuned.threshold[system] for system, task in TASKS}
        thresholds |= {f"{task}_untrained_threshold": tuned.untrained_threshold[system] for system, task in TASKS if system in tuned.untrained_threshold}
        yield {"weight": weight, **prediction_scores(dev, predictions, train_counts), **thresholds}


def prediction_scores(dev, predictions, train_counts: Counter) -> dict:
    """D/P micro-F1, MAP, macro-F1 and unseen-code recall of ``predictions`` for the ``dev`` notes."""
    from icdcoder.evaluate.metrics import frequency_band_recall, macro_prf, mean_average_precision, micro_prf

    row = {}
    for system, task in TASKS:
        ranked = {p.doc_id: [c.code for c in p.ranked({system})] for p in predictions}
        truth = {document.id: document.code_set(system) for document in dev}
        row[f"{task}_f1"] = round(micro_prf(truth, ranked)["micro_f1"], 4)
        row[f"{task}_map"] = round(mean_average_precision(truth, ranked), 4)
        row[f"{task}_macro_f1"] = round(macro_prf(truth, ranked)["macro_f1"], 4)
        row[f"{task}_unseen_recall"] = round(frequency_band_recall(truth, ranked, train_counts)["unseen_recall"], 4)
    return row


def print_rows_around_own_weight(
    coder, dev, train_counts: Counter, weight_name: str, lang: str, weights: list[float], one_threshold: bool = False
) -> None:
    """One JSON line per value of ``weight_name``: ``weights``, else 0, the coder's own value, its half and its double."""
    import json

    own = getattr(coder.settings, weight_name)
    weights = weights or sorted({0.0, own / 2, own, own * 2} if own else {0.0, 0.5, 1.0, 2.0})
    outputs = coder.segment_outputs(dev)
    for row in rows_by_weight(coder, dev, outputs, train_counts, weights, weight_name=weight_name, one_threshold=one_threshold):
        print(json.dumps({"lang": lang, weight_name: row.pop("weight"), **row}), flush=True)


def print_hit_report(lang: str, label: str, dev, hits: dict[str, set[str]], system: str, train_counts: Counter) -> None:
    """One JSON line: :func:`hit_report` of ``hits`` under ``label``."""
    import json

    print(json.dumps({"lang": lang, label: hit_report(dev, hits, system, train_counts)}), flush=True)


def hit_report(dev, hits: dict[str, set[str]], system: str, train_counts: Counter) -> dict:
    """How many ``hits`` on codes seen and unseen in training are gold, and how many are a gold code's prefix."""
    counts = Counter()
    for document in dev:
        gold = document.code_set(system)
        for code in hits[document.id]:
            band = "unseen" if train_counts[code] == 0 else "seen"
            counts[f"{band}_hits"] += 1
            counts[f"{band}_correct"] += code in gold
            counts[f"{band}_prefix_of_gold"] += any(other != code and other.startswith(code) for other in gold)
    precision = {f"{band}_precision": round(counts[f"{band}_correct"] / max(counts[f"{band}_hits"], 1), 3) for band in ("seen", "unseen")}
    return {**counts, **precision}
