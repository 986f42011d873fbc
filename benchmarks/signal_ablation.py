"""What each signal of a tuned coder adds: the best row of each group of its tuning table.

    python benchmarks/signal_ablation.py [--model src/icdcoder/models/default] [--table tuning|tuning_en]

``icdcoder predict tune`` records every row of its grid in ``coder.json`` (thresholds re-tuned per row). This reads
that table and prints, as a markdown table, the row with the highest D+P micro-F1 + MAP among those using exactly
each set of signals (retrieval always counts); rows that weigh the LLM belong to no group. Last, when the tuning
recorded one, the best weights with the untrained codes' own thresholds (tuned after the grid).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from icdcoder.infer.tuning import GRID_WEIGHTS, objective

REPO = Path(__file__).resolve().parent.parent
#: (label, the weights that must be > 0; every other weight must be 0)
GROUPS = [
    ("retrieval only", ()),
    ("+ Spanish lexicon", ("lexical_weight",)),
    ("+ English lexicon (trained forms and ontology terms)", ("english_weight", "ontology_weight")),
    ("+ English lexicon + composed procedures", ("english_weight", "ontology_weight", "procedure_weight")),
    ("+ Spanish lexicon + English trained forms", ("lexical_weight", "english_weight")),
    ("+ Spanish lexicon + English ontology terms", ("lexical_weight", "ontology_weight")),
    ("+ Spanish lexicon + English lexicon", ("lexical_weight", "english_weight", "ontology_weight")),
    ("+ Spanish lexicon + English lexicon + composed procedures", ("lexical_weight", "english_weight", "ontology_weight", "procedure_weight")),
    ("+ English lexicon + composed procedures + matched concepts", ("english_weight", "ontology_weight", "procedure_weight", "concept_weight")),
    (
        "+ Spanish lexicon + English lexicon + composed procedures + matched concepts",
        ("lexical_weight", "english_weight", "ontology_weight", "procedure_weight", "concept_weight"),
    ),
    (
        "+ English lexicon + composed procedures + matched concepts + measured values",
        ("english_weight", "ontology_weight", "procedure_weight", "concept_weight", "quantity_weight"),
    ),
    (
        "+ Spanish lexicon + English lexicon + composed procedures + matched concepts + measured values",
        ("lexical_weight", "english_weight", "ontology_weight", "procedure_weight", "concept_weight", "quantity_weight"),
    ),
]


def best_rows(table: list[dict]) -> list[tuple[str, dict]]:
    """The best row of each group that the table has rows for."""
    found = []
    for label, positive in GROUPS:
        rows = [row for row in table if all((row.get(name, 0.0) > 0) == (name in positive) for name in GRID_WEIGHTS)]
        if rows:
            found.append((label, max(rows, key=objective)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "src/icdcoder/models/default"))
    parser.add_argument("--table", default="tuning", help="tuning (Spanish notes) or tuning_en (English notes)")
    args = parser.parse_args()
    record = json.loads((Path(args.model) / "coder.json").read_text(encoding="utf-8"))
    if args.table not in record:
        raise SystemExit(f"{args.model}/coder.json has no '{args.table}' table (run icdcoder predict tune first)")
    print("| signals | weights | D micro-F1 | D MAP | P micro-F1 | P MAP |")
    print("|---|---|---|---|---|---|")
    for label, row in best_rows(record[args.table]["table"]):
        weights = ", ".join(f"{name.removesuffix('_weight')} {row[name]:g}" for name in GRID_WEIGHTS if row.get(name, 0.0) > 0) or "-"
        print(f"| {label} | {weights} | {row['D_f1']:.3f} | {row['D_map']:.3f} | {row['P_f1']:.3f} | {row['P_map']:.3f} |")
    untrained = record[args.table].get("untrained_threshold")
    if untrained:  # the best row of the grid, its systems with their own threshold for untrained codes re-scored
        row = dict(max(record[args.table]["table"], key=objective))
        for system, task in (("icd10cm", "D"), ("icd10pcs", "P")):
            if system in untrained:
                row.update({f"{task}_f1": untrained[system]["f1"], f"{task}_map": untrained[system]["map"]})
        thresholds = ", ".join(f"{'D' if system == 'icd10cm' else 'P'} {found['threshold']:g}" for system, found in untrained.items())
        print(
            f"| + own threshold for untrained codes | {thresholds} | {row['D_f1']:.3f} | {row['D_map']:.3f} "
            f"| {row['P_f1']:.3f} | {row['P_map']:.3f} |"
        )


if __name__ == "__main__":
    main()
