"""Does evidence located from ICD terms teach the LLM as gold evidence does?

Span SFT on CodiEsp's English training notes, once with their evidence (whole sentences projected from the Spanish
offsets: ``gold``) and once with the offsets dropped and ``data.silver_evidence`` on (``silver``), as a MIMIC-IV user
would train. Both variants use the shipped recipe (``sft_config``) on English notes for ``steps`` steps, trained into
``runs_dir/<variant>`` (a finished run there is reused); each is tuned on the first ``dev_notes`` English dev notes
with its LLM on (``predict tune --llm --lang en``, stage-1 outputs cached, so an interrupted run resumes). The recipe's
LLM gate (``min_retrieval_score`` 0.9: the LLM reads a segment only when every retrieval signal ranks the same code
first) lets almost no English segment through, and none without evidence surface forms, so the experiment sets it to
``llm_gate`` (default 0: the LLM reads every segment) before tuning. Per variant: training examples, tokens and wall
time; the LLM's answers alone (D/P micro-F1 and MAP at their best threshold); the best fusion with the other signals;
and the best fusion without the LLM.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from icdcoder.config import StrictModel
from icdcoder.experiments import Experiment
from icdcoder.experiments.common import (
    CODIESP,
    f1_and_map,
    fusion_scores,
    minutes,
    run_cli,
    sets,
    training_cost,
    tune_args,
)
from icdcoder.io import read_text

Variant = Literal["gold", "silver"]


class SilverSftConfig(StrictModel):
    data_dir: Path = CODIESP
    variants: tuple[Variant, ...] = ("gold", "silver")
    sft_config: Path = Path("configs/sft/default.yaml")
    steps: int = Field(60, ge=1)
    #: overrides (``key=value``) for both variants' training, e.g. another backbone
    train_set: list[str] = Field(default_factory=list)
    #: tune and score on the first N English dev notes
    dev_notes: int = Field(60, ge=1)
    #: the ``min_retrieval_score`` each trained coder is tuned with
    llm_gate: float = Field(0.0, ge=0.0, le=1.0)
    runs_dir: Path = Path("runs/experiments/silver_sft")


def notes_without_offsets(data_dir: Path, out: Path) -> Path:
    """CodiEsp's English training notes as JSONL, every code's evidence dropped."""
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.data.schema import save_documents

    path = out / "train_en_no_offsets.jsonl"
    if not path.is_file():
        documents = load_codiesp(data_dir, "train", language="en")
        bare = [
            doc.model_copy(update={"codes": tuple(gold.model_copy(update={"evidence": ()}) for gold in doc.codes)})
            for doc in documents
        ]
        save_documents(path, bare)
    return path


def train(variant: str, config: SilverSftConfig) -> None:
    """``icdcoder train sft`` for one variant into ``runs_dir/<variant>`` (resuming a run that stopped)."""
    overrides: dict[str, Any] = {
        "output_dir": config.runs_dir / variant,
        "data.data_dir": config.data_dir,
        "data.lang": "en",
        "max_steps": config.steps,
    }
    if variant == "silver":
        overrides |= {
            "data.documents_jsonl": notes_without_offsets(config.data_dir, config.runs_dir),
            "data.silver_evidence": "true",
        }
    extra = [part for item in config.train_set for part in ("--set", item)]
    run_cli(
        ["train", "sft", "--config", str(config.sft_config), *sets(overrides), *extra, "--resume"],
        config.runs_dir / variant / "train.log",
    )


def set_llm_gate(folder: Path, gate: float) -> None:
    """Record ``gate`` as the trained coder's ``min_retrieval_score``."""
    from icdcoder.infer.coder import SpanPredictor

    coder = SpanPredictor.load(folder, use_llm=False)
    coder.settings = coder.settings.model_copy(update={"min_retrieval_score": gate})
    coder.write_settings(folder)


def variant_row(variant: str, config: SilverSftConfig) -> dict[str, Any]:
    folder = config.runs_dir / variant
    if not (folder / "coder.json").is_file():
        train(variant, config)
    set_llm_gate(folder, config.llm_gate)
    cache = folder / f"stage1_gate{config.llm_gate:g}.jsonl"  # outputs under another gate are not these
    arguments = tune_args(
        model=folder, data_dir=config.data_dir, cache=cache, threads=1, llm=True, lang="en", limit=config.dev_notes
    )
    tuned = run_cli(arguments, folder / "tune.log")
    meta = json.loads(read_text(folder / "run_meta.json"))
    tuning = json.loads(read_text(folder / "coder.json"))["tuning"]
    return {
        "variant": variant,
        "llm_gate": config.llm_gate,
        **training_cost(folder),
        "examples": meta["examples"],
        "dev_notes": tuned["documents"],
        "llm_segments": tuned["llm_segments"],
        "dropped_lines": sum(tuned["dropped"].values()),
        **fusion_scores(tuning),
    }


def run(config: SilverSftConfig) -> dict[str, Any]:
    rows = [variant_row(variant, config) for variant in config.variants]
    return {"split": f"CodiEsp dev, first {config.dev_notes} English notes", "rows": rows}


def table(results: dict[str, Any]) -> str:
    lines = [
        (
            "| evidence | examples | train tokens | train time | LLM segments | LLM alone D F1 / MAP | LLM alone P F1 / MAP "
            "| fused D F1 / MAP | fused P F1 / MAP | LLM weight | without LLM D F1 / MAP |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        alone, fused = row["llm_alone"], row["fused"]
        lines.append(
            f"| {row['variant']} | {row['examples']:,} | {row['train_tokens'] or 0:,} | {minutes(row['wall_seconds'])} "
            f"| {row['llm_segments']:,} | {f1_and_map(alone, 'D')} | {f1_and_map(alone, 'P')} | {f1_and_map(fused, 'D')} "
            f"| {f1_and_map(fused, 'P')} | {fused['llm_weight']:g} | {f1_and_map(row['without_llm'], 'D')} |"
        )
    return "\n".join(lines) + "\n"


CAVEATS = """\
- CPU scale: one backbone, tens of steps, one seed, the first 60 English dev notes; the LLM reads every segment
  (`llm_gate` 0), which the shipped coder does not.
- "LLM alone" thresholds are tuned on the notes it is scored on, and "fused" is the best fusion on those notes: both
  are optimistic; compare the two variants, not their absolute values.
- The gold variant's evidence is CodiEsp's Spanish offsets projected onto whole English sentences.
"""

EXPERIMENT = Experiment(
    name="silver_sft",
    title="span SFT on evidence located from ICD terms against gold evidence (CPU scale)",
    config=SilverSftConfig,
    run=run,
    table=table,
    caveats=CAVEATS,
    cost="about an hour on one CPU core per variant (an SFT run, then tuning with the LLM on every segment)",
)
