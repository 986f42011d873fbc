"""Event-level scores of assertion traits: precision, recall and F1 per trait, over items with gold traits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def prf(tp: int, fp: int, fn: int) -> dict:
    """Precision, recall, F1 (0.0 where undefined) and the counts behind them."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"p": round(precision, 4), "r": round(recall, 4), "f1": round(f1, 4), "tp": tp, "fp": fp, "fn": fn}


def score_traits(gold: Sequence[Iterable[str]], predicted: Sequence[Iterable[str]], traits: Sequence[str]) -> dict:
    """Per-trait P/R/F1: an item counts for a trait where the gold or the prediction has it."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold items but {len(predicted)} predictions")
    out = {}
    for trait in traits:
        tp = fp = fn = 0
        for want, got in zip(gold, predicted):
            g, p = trait in want, trait in got
            tp += g and p
            fp += p and not g
            fn += g and not p
        out[trait] = prf(tp, fp, fn)
    return out
