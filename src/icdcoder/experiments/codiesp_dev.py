"""Every system on CodiEsp dev (Spanish notes): the shipped coder against the baselines, under one protocol.

Each system is trained on the training split (thresholds and model selection on ``tune_split``) or loaded from a
saved model, codes the evaluated split, and is scored by the official-style CodiEsp scorer
(:mod:`icdcoder.evaluate.bench` does the work, each system in its own process). A finished system's record is kept
under ``output_dir/<name>/`` and reused by the next run unless ``force`` (or ``only`` names it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from icdcoder.config import StrictModel
from icdcoder.evaluate.bench import BenchConfig, SystemSpec
from icdcoder.experiments import Experiment
from icdcoder.experiments.common import BENCHMARK_CODER, CODIESP

SYSTEMS = [
    SystemSpec(name="span", system="span", model=BENCHMARK_CODER),
    SystemSpec(name="dictionary", system="dictionary", config=Path("configs/baselines/dictionary.yaml")),
    SystemSpec(
        name="dictionary_phrases", system="dictionary", config=Path("configs/baselines/dictionary_phrases.yaml")
    ),
    SystemSpec(name="tfidf", system="tfidf", config=Path("configs/baselines/tfidf.yaml")),
    SystemSpec(name="laat", system="laat", config=Path("configs/baselines/laat.yaml")),
    SystemSpec(name="plm", system="plm", config=Path("configs/baselines/plm.yaml")),
    SystemSpec(name="prompt", system="prompt"),
]


class SystemsConfig(StrictModel):
    data_dir: Path = CODIESP
    split: str = "dev"
    train_split: str = "train"
    #: split given to ``fit`` for thresholds and model selection (None: none)
    tune_split: str | None = "dev"
    lang: Literal["es", "en"] = "es"
    systems: list[SystemSpec] = Field(default_factory=lambda: list(SYSTEMS))
    #: each system's record goes to ``output_dir/<experiment>/<system>.json`` (reused unless ``force``)
    output_dir: Path = Path("results")
    #: trained models and submission files (large, git-ignored)
    work_dir: Path = Path("runs/experiments")
    force: bool = False
    #: run only these systems (the others' stored records are still tabulated)
    only: list[str] = Field(default_factory=list)
    #: run each system in a fresh process (its own peak RAM; a crash is a table row)
    isolate: bool = True


def run_systems(name: str, config: SystemsConfig) -> dict[str, Any]:
    """Train or load, predict and score every system (reusing stored records); the bench's records, in order."""
    from icdcoder.errors import InputError
    from icdcoder.evaluate.bench import _result_for, _stored_result, caption

    settings = BenchConfig(name=name, **config.model_dump(exclude={"force", "only"}))
    names = [spec.name for spec in settings.systems]
    if len(set(names)) != len(names):
        raise InputError("field 'systems': system names must be unique")
    unknown = set(config.only) - set(names)
    if unknown:
        raise InputError(f"field 'only' names unknown systems: {', '.join(sorted(unknown))}")
    folder = Path(settings.output_dir) / name
    records = []
    for spec in settings.systems:
        cache = folder / f"{spec.name}.json"
        records.append(_stored_result(cache, _result_for(spec, settings, cache, config.force, config.only)))
    return {"split": f"CodiEsp {config.split} ({config.lang})", "caption": caption(settings), "systems": records}


def table(results: dict[str, Any]) -> str:
    from icdcoder.evaluate.bench import results_table

    return results_table(results["systems"]) + "\n" + results["caption"] + "\n"


CAVEATS = """\
- Thresholds, fusion weights and model selection are tuned on the dev notes these rows score (CodiEsp has no other
  labelled split to spare; the test split is held out and never used), so every row is optimistic. How much of the
  shipped coder's score is that tuning: the `tuning_holdout` experiment (cross-fitted on dev folds).
- `span` is the benchmarked coder (`src/icdcoder/models/benchmark`, fitted on the training notes alone), whose LLM is
  switched off: its numbers come from retrieval and lexicons fused by trees; its `train s` and `train tokens` are those
  of its unused LoRA adapter (see the model card). The shipped coder (`src/icdcoder/models/default`) is it refitted on
  the training and dev notes (`icdcoder train refit`), so its own dev scores would be in-sample; what the refit is
  worth on notes it never saw: `python benchmarks/more_training_notes.py` (model card, "Training").
- X F1 reads each decision's evidence spans. `span` grows its spans by the words the training annotators keep with a
  mention and narrows a diagnosis found in the translation to the note's words that translate it (model card);
  `dictionary` keeps its matched words, `dictionary_phrases` grows them as `span` does: the same X step on both sides.
- `laat` and `plm` stop at the wall-clock caps of their configs on a CPU: far below what these architectures reach with
  GPU-length training on MIMIC. `prompt` is 2-shot SmolLM2-135M-Instruct with no training.
- `notes/s` and `peak RAM MB` depend on the machine and on what else ran on it; compare them only roughly.
- A system's record is reused by later runs unless `--set force=true` (or `--set only=[NAME]`): rows can come from
  different runs of this experiment.
"""

EXPERIMENT = Experiment(
    name="codiesp_dev",
    title="every system on CodiEsp dev, Spanish notes",
    config=SystemsConfig,
    run=lambda config: run_systems("codiesp_dev", config),
    table=table,
    caveats=CAVEATS,
    cost=(
        "minutes for the shipped coder and the simple baselines; 15-30 minutes each for laat and plm, and about "
        "100 minutes for prompt, on 2 CPU cores"
    ),
)
