"""Spanish-English sentence alignment of CodiEsp (:mod:`icdcoder.data.align`): coverage and evidence carried over.

Per split (:func:`icdcoder.data.codiesp.alignment_report`): the notes whose sentences all align one to one, against
a naive split on periods; how often aligned pairs that hold a number agree on it (the aligner's pairs against the
naive zip); the share of gold evidence spans projected onto the English translation; and the kinds of beads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from icdcoder.config import StrictModel
from icdcoder.experiments import Experiment
from icdcoder.experiments.common import CODIESP


class AlignmentConfig(StrictModel):
    data_dir: Path = CODIESP
    splits: list[str] = Field(default_factory=lambda: ["train", "dev"], min_length=1)


def run(config: AlignmentConfig) -> dict[str, Any]:
    from icdcoder.data.codiesp import alignment_report

    rows = [alignment_report(config.data_dir, split) for split in config.splits]
    return {"split": "CodiEsp " + " and ".join(config.splits), "rows": rows}


def table(results: dict[str, Any]) -> str:
    lines = [
        (
            "| split | notes | all sentences 1-1 | naive period split, same count | numbers agree: aligned / naive zip "
            "| X spans projected | codes with evidence es / en | beads per note | filler lines |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['split']} | {row['documents']:,} | {row['docs_all_one_to_one']:.1%} "
            f"| {row['naive_period_split_same_count']:.1%} "
            f"| {row['numbers_agree_aligned']:.1%} / {row['numbers_agree_naive_zip']:.1%} "
            f"| {row['x_spans_projected']:.1%} of {row['x_spans']:,} "
            f"| {row['codes_with_evidence_es']:,} / {row['codes_with_evidence_en']:,} | {row['mean_beads_per_doc']:g} "
            f"| {row['filler_lines']:,} |"
        )
    for row in results["rows"]:
        beads = ", ".join(f"{kind} {share:.1%}" for kind, share in row["bead_fractions"].items())
        lines.append(f"\nBeads ({row['split']}, Spanish sentences-English lines): {beads}.")
    return "\n".join(lines) + "\n"


CAVEATS = """\
- The aligner's list of abbreviations that do not end a sentence was chosen on the training notes; the dev row is the
  check.
- "Numbers agree" counts only aligned pairs that hold a number on either side; it is a proxy for a right pairing.
"""

EXPERIMENT = Experiment(
    name="alignment_coverage",
    title="Spanish-English sentence alignment coverage of CodiEsp",
    config=AlignmentConfig,
    run=run,
    table=table,
    caveats=CAVEATS,
    cost="under a minute",
)
