"""Candidates in the prompt: the shipped span recipe trained and scored with and without retrieved candidates.

The ``span_vs_document`` protocol on two variants: ``default`` (4 retrieved candidates in every prompt) and
``span_nocand_cpu`` (``data.candidates_k: 0``, and a coder that shows none either), both trained from scratch and
scored in fp32 on the first 60 dev notes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from icdcoder.experiments import Experiment
from icdcoder.experiments.span_vs_document import SupervisionConfig, run, table


class CandidatesConfig(SupervisionConfig):
    variants: list[str] = Field(default_factory=lambda: ["default", "span_nocand_cpu"])
    dtype: Literal["auto", "float32", "bfloat16"] | None = "float32"
    runs_dir: Path = Path("runs/experiments/candidates")


CAVEATS = """\
- CPU scale, one seed, 60 dev notes: at 100 steps a 135M adapter picks candidates it was trained on; whether a
  GPU-trained adapter uses candidates to reach unseen codes is not measured here.
- Thresholds are tuned on the notes scored; the fused columns are the best fusion on those notes.
"""

EXPERIMENT = Experiment(
    name="candidates",
    title="retrieved candidates in the prompt: with and without (CPU scale)",
    config=CandidatesConfig,
    run=run,
    table=table,
    caveats=CAVEATS,
    cost="about 1.5 hours on one CPU core (two SFT runs, then scoring with the LLM on)",
)
