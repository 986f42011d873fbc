"""What an adapter adds to the coder when it generates answers and when it scores the shown candidates.

Each run is a ``mode`` (``CoderSettings.llm_mode``: ``generate``, the LLM writes answer lines; ``score``, one forward
pass per segment reads how likely the answer opens with each shown candidate) and a ``gate`` (``min_retrieval_score``:
the best retrieval score a segment needs to reach the LLM). The coder is loaded with its LLM on and codes the dev notes
once per run (stage-1 outputs cached under ``runs_dir``: an interrupted run resumes); then, per LLM weight, the other
weights as saved, D/P thresholds re-tuned on dev as ``predict tune`` tunes them (each system's, then the untrained
diagnosis codes'). The "alone" row, the LLM at weight 1 with every other signal at 0, is what the LLM's output alone is
worth. ``adapter`` puts another LLM (e.g. ``runs/sft/default_en/model``, the same recipe trained on English notes) in
the coder's place.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from icdcoder.config import StrictModel
from icdcoder.experiments import Experiment
from icdcoder.experiments.common import BENCHMARK_CODER, CODIESP, coder_and_notes, number, weight_rows
from icdcoder.infer.settings import LlmMode


class LlmRun(StrictModel):
    """One way of reading the segments: the LLM's mode and the retrieval score a segment needs to reach it."""

    mode: LlmMode
    gate: float = Field(0.0, ge=0.0, le=1.0)


class LlmModesConfig(StrictModel):
    data_dir: Path = CODIESP
    model: Path = BENCHMARK_CODER
    lang: Literal["es", "en"] = "es"
    runs: list[LlmRun] = Field(
        default_factory=lambda: [
            LlmRun(mode="generate", gate=0.9),
            LlmRun(mode="score", gate=0.9),
            LlmRun(mode="score", gate=0.0),
        ],
        min_length=1,
    )
    #: the LLM weights tried, the other weights as saved
    weights: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0], min_length=1)
    #: an LLM folder used in place of the coder's own ``model/`` (None: the coder's own)
    adapter: Path | None = None
    threads: int = Field(1, ge=1)
    #: where each run's stage-1 outputs are cached
    runs_dir: Path = Path("runs/experiments/llm_modes")


def adapter_tag(adapter: Path | None) -> str:
    """What tells one adapter's cached outputs from another's: its folder, less the usual trailing ``model``."""
    if adapter is None:
        return ""
    parts = [part for part in adapter.resolve().parts if part != "model"]
    return "_" + parts[-1]


def run_rows(config: LlmModesConfig, llm_run: LlmRun, dev: list, train_counts) -> list[dict[str, Any]]:
    """One row per LLM weight, then the LLM alone, for one mode and gate."""
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.tuning import llm_alone

    coder = SpanPredictor.load(
        config.model, adapter=config.adapter, use_llm=True, llm_mode=llm_run.mode, min_retrieval_score=llm_run.gate
    )
    coder.settings = coder.settings.for_language(config.lang)
    cache = config.runs_dir / f"{config.lang}_{llm_run.mode}_gate{llm_run.gate:g}{adapter_tag(config.adapter)}.jsonl"
    fresh = not cache.is_file()
    started = time.perf_counter()
    outputs = coder.segment_outputs(dev, cache=cache)
    seconds = round(time.perf_counter() - started, 1) if fresh else None
    described = {
        "lang": config.lang,
        "adapter": str(config.adapter or "shipped"),
        "mode": llm_run.mode,
        "gate": llm_run.gate,
        "llm_segments": sum(o.llm_segments for o in outputs),
        "stage1_s": seconds,
    }
    rows = [
        {**described, "llm_weight": row.pop("weight"), **row}
        for row in weight_rows(coder, dev, outputs, train_counts, config.weights, "llm_weight")
    ]
    coder.settings = llm_alone(coder.settings)
    (alone,) = weight_rows(coder, dev, outputs, train_counts, [1.0], "llm_weight")
    rows.append({**described, "llm_weight": "alone", **{k: v for k, v in alone.items() if k != "weight"}})
    return rows


def run(config: LlmModesConfig) -> dict[str, Any]:
    import torch

    torch.set_num_threads(config.threads)
    _, dev, train_counts = coder_and_notes(config.model, config.data_dir, config.lang)
    rows = [row for llm_run in config.runs for row in run_rows(config, llm_run, dev, train_counts)]
    notes = "Spanish + translation" if config.lang == "es" else "English"
    return {"split": f"CodiEsp dev ({notes})", "rows": rows}


def table(results: dict[str, Any]) -> str:
    lines = [
        (
            "| adapter | mode, gate | segments to the LLM | stage 1 | LLM weight | D micro-F1 | D MAP | D unseen R "
            "| P micro-F1 | P MAP | sum F1 + MAP |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        stage1 = "cached" if row["stage1_s"] is None else f"{row['stage1_s']:.0f} s"
        weight = row["llm_weight"] if isinstance(row["llm_weight"], str) else f"{row['llm_weight']:g}"
        total = "" if weight == "alone" else number(row["D_f1"] + row["D_map"] + row["P_f1"] + row["P_map"])
        lines.append(
            f"| {row['adapter']} | {row['mode']}, {row['gate']:g} | {row['llm_segments']:,} | {stage1} | {weight} "
            f"| {number(row['D_f1'])} | {number(row['D_map'])} | {number(row['D_unseen_recall'])} "
            f"| {number(row['P_f1'])} | {number(row['P_map'])} | {total} |"
        )
    return "\n".join(lines) + '\n\n"alone": the LLM\'s signal at weight 1, every other weight at 0.\n'


CAVEATS = """\
- Thresholds are re-tuned on the dev notes for every row and the other weights are the saved ones, themselves tuned on
  dev: the rows compare LLM weights and modes, they do not estimate held-out scores.
- In `score` mode "alone" ranks every shown candidate: a reranker of retrieval's candidates, not only what training
  taught the LLM.
- Stage-1 time depends on the CPU and on what else runs beside it; "cached" rows read outputs an earlier run stored.
"""

EXPERIMENT = Experiment(
    name="llm_modes",
    title="what the adapter adds in fusion, generating or scoring candidates",
    config=LlmModesConfig,
    run=run,
    table=table,
    caveats=CAVEATS,
    cost="about 45 minutes on one CPU core (stage 1 with the LLM on, once per run; cached afterwards)",
)
