"""Span vs document supervision: the same backbone and LoRA recipe trained on different examples, scored alike.

Each variant is an SFT config (``configs/sft/<variant>.yaml``), trained from scratch with ``icdcoder train sft``
into ``runs_dir/<variant>`` (a finished run there is reused; ``reuse`` points a variant at a coder folder instead),
then tuned on the first ``dev_notes`` dev notes with its LLM on (``icdcoder predict tune --llm``; stage-1 outputs
cached, so an interrupted run resumes). Per variant: training tokens and time; the LLM's answers alone (what
training taught it: D/P micro-F1 and MAP at their best thresholds, D recall on codes training carries 0 and 1-4
times, how many codes it answered and which most); the best fusion with retrieval and lexicons, and its LLM weight.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
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
    number,
    run_cli,
    training_cost,
    tune_args,
)
from icdcoder.io import read_text


class SupervisionConfig(StrictModel):
    data_dir: Path = CODIESP
    #: SFT config names under ``sft_config_dir``
    variants: list[str] = Field(default_factory=lambda: ["document_cpu", "default", "mixed_cpu", "mixed_expansion_cpu"])
    sft_config_dir: Path = Path("configs/sft")
    #: overrides (``key=value``) for every variant's training, e.g. ``max_steps=150`` or another backbone
    train_set: list[str] = Field(default_factory=list)
    #: overrides for one variant's training (the shipped recipe ran 100 steps: its config stops on wall time)
    variant_set: dict[str, list[str]] = Field(default_factory=lambda: {"default": ["max_steps=100"]})
    #: a trained coder folder to score instead of training the variant (empty: every variant is trained here)
    reuse: dict[str, Path] = Field(default_factory=dict)
    #: tune and score on the first N dev notes (None: all)
    dev_notes: int | None = Field(60, ge=1)
    #: the LLM's precision when scoring (None: each coder's saved dtype)
    dtype: Literal["auto", "float32", "bfloat16"] | None = None
    runs_dir: Path = Path("runs/experiments/span_vs_document")
    threads: int = 1


def train_variant(variant: str, out: Path, config: SupervisionConfig) -> None:
    """``icdcoder train sft`` for one variant into ``out`` (resuming a run that stopped)."""
    assignments = [
        f"output_dir={out}",
        f"data.data_dir={config.data_dir}",
        *config.train_set,
        *config.variant_set.get(variant, []),
    ]
    sets = [part for item in assignments for part in ("--set", item)]
    resume = ["--resume"] if (out / "checkpoints").is_dir() else []
    run_cli(
        ["train", "sft", "--config", str(config.sft_config_dir / f"{variant}.yaml"), *sets, *resume], out / "train.log"
    )


def coder_folder(variant: str, config: SupervisionConfig) -> Path:
    """The variant's coder folder: copied from ``reuse``, else trained here unless a finished run is there."""
    out = config.runs_dir / variant
    if variant in config.reuse:
        shutil.copytree(config.reuse[variant], out, dirs_exist_ok=True)
    elif not (out / "coder.json").is_file():
        train_variant(variant, out, config)
    return out


def llm_alone_details(folder: Path, cache: Path, config: SupervisionConfig) -> dict[str, Any]:
    """Recall of the LLM's answers alone on diagnosis codes training carries 0 / 1-4 / >= 5 times, and what it answered
    (read from the stage-1 cache: the LLM is not loaded)."""
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.evaluate.metrics import frequency_band_recall
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.fusion import aggregate
    from icdcoder.infer.tuning import llm_alone, with_tuned_thresholds

    coder = SpanPredictor.load(folder, use_llm=False)
    dev = load_codiesp(config.data_dir, "dev", with_translation=True)[: config.dev_notes]
    train = load_codiesp(config.data_dir, "train")
    outputs = coder.segment_outputs(dev, cache=cache)
    settings = with_tuned_thresholds(outputs, dev, llm_alone(coder.settings))
    ranked = {o.doc_id: [c.code for c in aggregate(o, settings).ranked({"icd10cm"})] for o in outputs}
    truth = {document.id: document.code_set("icd10cm") for document in dev}
    counts: Counter = Counter(gold.code for document in train for gold in document.codes if gold.system == "icd10cm")
    bands = frequency_band_recall(truth, ranked, counts)
    answered = Counter(item.code for note in outputs for item in note.scored if item.signals.get("llm", 0.0) > 0)
    return {f"D_{band}_recall": bands[f"{band}_recall"] for band in ("unseen", "rare", "frequent")} | {
        "answered_codes": sum(answered.values()),
        "most_answered": answered.most_common(3),
    }


def score_variant(variant: str, config: SupervisionConfig) -> dict[str, Any]:
    folder = coder_folder(variant, config)
    cache = folder / (f"stage1_{config.dtype}.jsonl" if config.dtype else "stage1.jsonl")
    arguments = tune_args(
        model=folder,
        data_dir=config.data_dir,
        cache=cache,
        threads=config.threads,
        llm=True,
        limit=config.dev_notes,
        dtype=config.dtype,
    )
    tuned = run_cli(arguments, folder / "tune.log")
    row = {
        "variant": variant,
        "reused": str(config.reuse[variant]) if variant in config.reuse else None,
        **training_cost(folder),
        "dtype": tuned.get("dtype"),
        "dev_notes": tuned.get("documents"),
        "llm_segments": tuned.get("llm_segments"),
        "dropped_lines": sum((tuned.get("dropped") or {}).values()),
        **fusion_scores(json.loads(read_text(folder / "coder.json"))["tuning"]),
    }
    row["llm_alone"].update(llm_alone_details(folder, cache, config))
    return row


def run(config: SupervisionConfig) -> dict[str, Any]:
    rows = [score_variant(variant, config) for variant in config.variants]
    notes = f"first {config.dev_notes}" if config.dev_notes else "all"
    return {"split": f"CodiEsp dev, {notes} notes (Spanish + translation)", "rows": rows}


def _count(value: int | None) -> str:
    return "not recorded" if value is None else f"{value:,}"


def table(results: dict[str, Any]) -> str:
    lines = [
        (
            "| variant | train tokens | train time | answer lines dropped | LLM alone D F1 / MAP | LLM alone D recall unseen / rare "
            "| LLM alone P F1 / MAP | fused D F1 / MAP | fused P F1 / MAP | LLM weight |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        alone, fused = row["llm_alone"], row["fused"]
        lines.append(
            f"| {row['variant']} | {_count(row['train_tokens'])} | {minutes(row['wall_seconds'])} | {row['dropped_lines']:,} "
            f"| {f1_and_map(alone, 'D')} | {number(alone.get('D_unseen_recall'))} / {number(alone.get('D_rare_recall'))} "
            f"| {f1_and_map(alone, 'P')} | {f1_and_map(fused, 'D')} "
            f"| {f1_and_map(fused, 'P')} | {fused['llm_weight']:g} |"
        )
    if results["rows"]:
        without = results["rows"][0]["without_llm"]
        lines.append(
            f"\nWithout the LLM (retrieval + lexicons): D {f1_and_map(without, 'D')}, P {f1_and_map(without, 'P')}."
        )
    return "\n".join(lines) + "\n"


CAVEATS = """\
- CPU scale: one backbone (SmolLM2-135M-Instruct), one LoRA recipe, tens of steps, one seed, 60 dev notes. Read the
  rows as what a small budget teaches, not as the method's ceiling; the GPU-scale version is the same experiment with
  `--set train_set='[max_steps=150]'` and the `document`, `span`, `mixed`, `mixed_expansion` variants.
- "LLM alone" thresholds are tuned on the notes it is scored on; "fused" is the best fusion on those notes (retrieval
  and lexicons included), so both are optimistic.
- Training time depends on the CPU (bf16 is emulated on CPUs without native bf16) and on what else runs beside it.
"""

EXPERIMENT = Experiment(
    name="span_vs_document",
    title="span vs document supervision of the LLM (CPU scale)",
    config=SupervisionConfig,
    run=run,
    table=table,
    caveats=CAVEATS,
    cost="about 3 hours on one CPU core (four SFT runs of 20-60 min, then scoring with the LLM on)",
)
