"""How deep a prediction's ranking should go: MAP and ranking recall of the shipped coder at several depths.

MAP reads a prediction's ranking (its decisions, then its candidates, best first, at most ``max_codes_per_system``
codes per system). A gold code below the cut counts as never found, so a deeper ranking can only raise MAP and
recall; it costs bytes in every record and submission. The decisions (F1) do not depend on the depth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from icdcoder.config import StrictModel
from icdcoder.experiments import Experiment
from icdcoder.experiments.common import BENCHMARK_CODER, CODIESP, NOTES, TASKS, coder_and_notes, number

#: training-frequency bands of the gold codes (:func:`icdcoder.evaluate.metrics.frequency_band`)
BANDS = ("unseen", "rare", "frequent")


class RankingDepthConfig(StrictModel):
    data_dir: Path = CODIESP
    model: Path = BENCHMARK_CODER
    langs: tuple[Literal["es", "en"], ...] = ("es", "en")
    #: codes per system kept in the ranking
    depths: list[int] = Field(default_factory=lambda: [20, 40, 100, 250, 1000], min_length=1)


def ranking_recall(truth: dict[str, set[str]], ranked: dict[str, list[str]]) -> float:
    """Share of the gold codes that appear anywhere in their note's ranking."""
    gold = sum(len(codes) for codes in truth.values())
    found = sum(len(codes & set(ranked.get(doc_id, []))) for doc_id, codes in truth.items())
    return found / gold if gold else 0.0


def _rounded(value: float | int | None) -> float | None:
    return None if value is None else round(float(value), 4)


def language_rows(config: RankingDepthConfig, lang: str) -> list[dict[str, Any]]:
    from icdcoder.evaluate.metrics import frequency_band_recall, mean_average_precision
    from icdcoder.infer.fusion import aggregate, collect_signals

    coder, dev, train_counts = coder_and_notes(config.model, config.data_dir, lang)
    outputs = coder.segment_outputs(dev)
    collected = [collect_signals(note) for note in outputs]
    rows = []
    for depth in config.depths:
        settings = coder.settings.model_copy(update={"max_codes_per_system": depth})
        predictions = [aggregate(note, settings, found) for note, found in zip(outputs, collected)]
        row: dict[str, Any] = {"lang": lang, "depth": depth}
        for system, task in TASKS:
            truth = {document.id: document.code_set(system) for document in dev}
            ranked = {p.doc_id: [c.code for c in p.ranking({system})] for p in predictions}
            row[f"{task}_map"] = round(mean_average_precision(truth, ranked), 4)
            row[f"{task}_recall"] = round(ranking_recall(truth, ranked), 4)
            row[f"{task}_mean_length"] = round(sum(map(len, ranked.values())) / max(len(ranked), 1), 1)
            bands = frequency_band_recall(truth, ranked, train_counts)
            row[f"{task}_bands"] = {f"{band}_recall": _rounded(bands[f"{band}_recall"]) for band in BANDS}
        rows.append(row)
    return rows


def run(config: RankingDepthConfig) -> dict[str, Any]:
    return {"split": "CodiEsp dev", "rows": [row for lang in config.langs for row in language_rows(config, lang)]}


def table(results: dict[str, Any]) -> str:
    lines = [
        "| notes | codes per system | D MAP | D ranking recall | D: unseen / rare / frequent | D codes per note "
        "| P MAP | P ranking recall | P codes per note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {NOTES[row['lang']]} | {row['depth']} | {number(row['D_map'])} | {number(row['D_recall'])} "
            f"| {' / '.join(number(row['D_bands'][f'{band}_recall']) for band in BANDS)} "
            f"| {row['D_mean_length']:g} | {number(row['P_map'])} | {number(row['P_recall'])} "
            f"| {row['P_mean_length']:g} |"
        )
    return "\n".join(lines) + "\n"


CAVEATS = """\
- The fusion weights and thresholds are the shipped ones, tuned on these dev notes; only the depth varies, and MAP
  cannot fall as the depth grows, so the choice of depth is a trade of MAP against record size, not a fit to dev.
- "Ranking recall" is the share of gold codes anywhere in their note's ranking: the ceiling of what a reranker could
  reach without new candidates; by band, of the gold codes seen 0, 1-4 and 5 or more times in training.
"""

EXPERIMENT = Experiment(
    name="ranking_depth",
    title="how many codes per system the ranking keeps: MAP and ranking recall",
    config=RankingDepthConfig,
    run=run,
    table=table,
    caveats=CAVEATS,
    cost="a few minutes on 2 CPU cores (stage 1 once per language)",
)
