"""What the signals that reach untrained codes are worth: composed procedures, matched concepts, measured values.

Per signal and note language: how often its matches on dev name a gold code, for codes seen and unseen in training
(``procedure``: ICD-10-PCS prefixes composed from an operation word and a body part in one English sentence;
``concept``: ICD-10-CM titles whose content words one English sentence holds, as the coder names them;
``quantity``: codes named by a measured value through the phrases learned around such values), then the coder with
that signal's weight at 0, half, its own value and double, the other weights as shipped, thresholds re-tuned on dev.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from icdcoder.config import StrictModel
from icdcoder.experiments import Experiment
from icdcoder.experiments.common import (
    BENCHMARK_CODER,
    CODIESP,
    NOTES,
    coder_and_notes,
    hit_report,
    number,
    weight_rows,
)

Signal = Literal["procedure", "concept", "quantity"]
SYSTEM = {"procedure": "icd10pcs", "concept": "icd10cm", "quantity": "icd10cm"}


class SignalWeightsConfig(StrictModel):
    data_dir: Path = CODIESP
    model: Path = BENCHMARK_CODER
    langs: tuple[Literal["es", "en"], ...] = ("es", "en")
    signals: tuple[Signal, ...] = ("procedure", "concept", "quantity")
    #: one threshold per system (the untrained codes' own thresholds left out)
    one_threshold: bool = False


def matched_codes(coder, dev: list, signal: str, lang: str) -> dict[str, set[str]]:
    """The codes the signal names in each dev note, as the coder writes them."""
    if signal == "procedure":
        composer = coder.signals["procedures"].composer(coder)
        return {d.id: {item.code for item in composer.compose(d.translation or d.text)} for d in dev}
    if signal == "concept":
        index = coder.signals["concepts"].index(coder)
        return {
            d.id: {coder.specific_code(m.code, "icd10cm") for m in index.matches(d.translation or d.text)} for d in dev
        }
    templates = coder.signals["quantities"].templates.get(lang)
    return {d.id: ({match.code for match in templates.matches(d.text)} if templates else set()) for d in dev}


def language_rows(config: SignalWeightsConfig, lang: str) -> list[dict[str, Any]]:
    coder, dev, train_counts = coder_and_notes(config.model, config.data_dir, lang)
    outputs = coder.segment_outputs(dev)
    rows = []
    for signal in config.signals:
        own = getattr(coder.settings, f"{signal}_weight")
        weights = sorted({0.0, own / 2, own, own * 2} if own else {0.0, 0.5, 1.0, 2.0})
        rows.append(
            {
                "lang": lang,
                "signal": signal,
                "own_weight": own,
                "hits": hit_report(dev, matched_codes(coder, dev, signal, lang), SYSTEM[signal], train_counts),
                "weights": weight_rows(
                    coder, dev, outputs, train_counts, weights, f"{signal}_weight", config.one_threshold
                ),
            }
        )
    return rows


def run(config: SignalWeightsConfig) -> dict[str, Any]:
    rows = [row for lang in config.langs for row in language_rows(config, lang)]
    return {"split": "CodiEsp dev", "rows": rows}


TASK = {"icd10cm": "D", "icd10pcs": "P"}


def table(results: dict[str, Any]) -> str:
    lines = [
        "| notes | signal | matches right, seen / unseen codes | weight | micro-F1 | MAP | unseen recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        hits = row["hits"]
        right = f"{hits.get('seen_correct', 0)} of {hits.get('seen_hits', 0)} / {hits.get('unseen_correct', 0)} of {hits.get('unseen_hits', 0)}"
        task = TASK[SYSTEM[row["signal"]]]
        for weight in row["weights"]:
            own = " (shipped)" if weight["weight"] == row["own_weight"] else ""
            lines.append(
                f"| {NOTES[row['lang']]} | {row['signal']} ({task}) | {right} | {weight['weight']:g}{own} "
                f"| {number(weight[f'{task}_f1'])} | {number(weight[f'{task}_map'])} | {number(weight[f'{task}_unseen_recall'])} |"
            )
    return "\n".join(lines) + "\n\nScores are for the signal's own system: D (ICD-10-CM) or P (ICD-10-PCS).\n"


CAVEATS = """\
- Thresholds are re-tuned on the dev notes for every weight; the other weights are the shipped ones, themselves tuned
  on dev. The rows compare weights; they do not estimate held-out scores (`tuning_holdout` does, per signal).
- The operation words, site adjectives and value phrases were chosen reading training notes only.
- Matches on the translation of a Spanish note have no evidence offsets in the note; those on an English note point
  at the sentence.
"""

EXPERIMENT = Experiment(
    name="signal_weights",
    title="composed procedures, matched concepts and measured values: matches and weights",
    config=SignalWeightsConfig,
    run=run,
    table=table,
    caveats=CAVEATS,
    cost="a few minutes on 2 CPU cores (stage 1 once per language)",
)
