"""What each signal of a tuned coder adds: the best row of each group of the grid that ``predict tune`` recorded.

``icdcoder predict tune`` records every row of its grid in the coder's ``coder.json`` (thresholds re-tuned per
row). Per set of signals (retrieval always counts; rows that weigh the LLM belong to no group) the row with the
highest D+P micro-F1 + MAP is shown; last, the best weights with the untrained codes' own thresholds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from icdcoder.config import StrictModel
from icdcoder.errors import InputError
from icdcoder.experiments import Experiment
from icdcoder.experiments.common import BENCHMARK_CODER, TASKS
from icdcoder.io import read_text

#: (label, the weights that must be > 0; every other weight must be 0), in the order signals were added
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("retrieval only", ()),
    ("+ Spanish lexicon", ("lexical_weight",)),
    ("+ English lexicon on the translation", ("lexical_weight", "english_weight", "ontology_weight")),
    ("+ composed procedures", ("lexical_weight", "english_weight", "ontology_weight", "procedure_weight")),
    (
        "+ matched concepts",
        ("lexical_weight", "english_weight", "ontology_weight", "procedure_weight", "concept_weight"),
    ),
    (
        "+ measured values",
        (
            "lexical_weight",
            "english_weight",
            "ontology_weight",
            "procedure_weight",
            "concept_weight",
            "quantity_weight",
        ),
    ),
]
TABLES = {"tuning": "Spanish (+ translation)", "tuning_en": "English"}


class AblationConfig(StrictModel):
    model: Path = BENCHMARK_CODER
    #: the tuning tables of ``coder.json`` to read: ``tuning`` (Spanish notes), ``tuning_en`` (English notes)
    tables: tuple[Literal["tuning", "tuning_en"], ...] = ("tuning", "tuning_en")


def best_rows(grid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best row of each group that the grid has rows for, labelled."""
    from icdcoder.infer.tuning import GRID_WEIGHTS, objective

    found = []
    for label, positive in GROUPS:
        rows = [row for row in grid if all((row.get(name, 0.0) > 0) == (name in positive) for name in GRID_WEIGHTS)]
        if rows:
            best = max(rows, key=objective)
            weights = {name.removesuffix("_weight"): best[name] for name in GRID_WEIGHTS if best.get(name, 0.0) > 0}
            found.append(
                {"signals": label, "weights": weights, **{k: best[k] for k in ("D_f1", "D_map", "P_f1", "P_map")}}
            )
    return found


def untrained_row(record: dict[str, Any]) -> dict[str, Any] | None:
    """The grid's best row with the untrained codes' own thresholds, when the tuning recorded them."""
    from icdcoder.infer.tuning import objective

    untrained = record.get("untrained_threshold")
    if not untrained:
        return None
    table: list[dict[str, Any]] = record["table"]
    best = max(table, key=lambda row: objective(row))
    row = {
        "signals": "+ own threshold for untrained codes",
        "weights": {},
        **{k: best[k] for k in ("D_f1", "D_map", "P_f1", "P_map")},
    }
    for system, task in TASKS:
        if system in untrained:
            row |= {f"{task}_f1": untrained[system]["f1"], f"{task}_map": untrained[system]["map"]}
            row["weights"][f"{task} untrained threshold"] = untrained[system]["threshold"]
    return row


def run(config: AblationConfig) -> dict[str, Any]:
    path = Path(config.model) / "coder.json"
    coder = json.loads(read_text(path))
    rows = []
    for name in config.tables:
        if name not in coder:
            raise InputError(f"no '{name}' table: run icdcoder predict tune on this coder first", path=path)
        found = best_rows(coder[name]["table"]) + [row for row in [untrained_row(coder[name])] if row]
        rows += [{"notes": TABLES[name], **row} for row in found]
    return {"split": "CodiEsp dev (the coder's tuning grid)", "model": str(config.model), "rows": rows}


def table(results: dict[str, Any]) -> str:
    lines = ["| notes | signals | weights | D micro-F1 | D MAP | P micro-F1 | P MAP |", "|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        weights = ", ".join(f"{name} {value:g}" for name, value in row["weights"].items()) or "-"
        lines.append(
            f"| {row['notes']} | {row['signals']} | {weights} | {row['D_f1']:.3f} | {row['D_map']:.3f} "
            f"| {row['P_f1']:.3f} | {row['P_map']:.3f} |"
        )
    return "\n".join(lines) + "\n"


CAVEATS = """\
- Every row is tuned and scored on the dev notes (thresholds re-tuned per row): it ranks signals, it does not estimate
  held-out scores (see `tuning_holdout`, which drops one signal at a time with cross-fitted tuning).
- The grid maximises D+P micro-F1 + MAP together; a signal can buy MAP at a little micro-F1.
- This reads the grid recorded in the coder's `coder.json` by its last `icdcoder predict tune`; to re-measure, run
  `icdcoder predict tune` on a copy of the coder and point `model` at it.
"""

EXPERIMENT = Experiment(
    name="signal_ablation",
    title="what each signal of the shipped coder adds (its dev tuning grid)",
    config=AblationConfig,
    run=run,
    table=table,
    caveats=CAVEATS,
    cost="seconds (reads the coder's recorded grid)",
)
