"""The post-training ladder on CodiEsp: prompting -> SFT -> SFT+GRPO -> SFT+GRPO+PHI, several seeds.

Every rung uses the same backbone, the same prompt format (``icdcoder.prompt``)
and the same evaluation: ``icdcoder.evaluate.metrics.evaluate`` with the label
space taken from the TRAINING split (off-label predictions stay false
positives in micro scores; macro F1 is averaged over training codes).

    python benchmarks/ladder.py --data-dir ../shared/data/codiesp --split dev \
        --sft src/icdcoder/models/default --seeds 0 1 2 --runs-dir runs/ladder \
        [--max-docs 40] [--set max_steps=30] [--set phi.steps_per_round=10] [--rungs prompting sft grpo phi]
        [--span-eval 64 [--skip-notes]] [--dtype auto|float32|bfloat16]

The GRPO and PHI rungs are trained from the SFT coder folder with
``configs/rl/grpo.yaml`` / ``configs/rl/phi.yaml`` (plus ``--set`` overrides,
applied to both) into ``runs-dir/<rung>/seed<k>``; an existing finished run is
reused (``--retrain`` to train again). The SFT rung has one checkpoint per
``--sft`` folder (give several folders for an SFT seed spread). Prints a table
(mean +- standard deviation over seeds) and writes ``runs-dir/ladder_<split>_<notes>.json`` (one file per evaluated note set).
A rung's rows from earlier invocations with the same ``--set`` overrides are kept for the seeds this one
did not run (the file is re-read just before it is written), so seeds can run as separate processes, one per core.
``--span-eval N`` adds the RL objective on held-out data: greedy hint-free answers
on N dev span prompts scored with :func:`icdcoder.rl.rewards.score_completion`.
Coders are loaded with their LLM on (the shipped settings switch it off), in their saved precision
(``auto``: bfloat16 only on a CPU that computes it natively) or the one ``--dtype`` names; results in another
precision than the saved one go to ``ladder_<split>_<notes>_<dtype>.json``. Note-level
scores of the SFT, GRPO and PHI rungs read the LLM's answers alone, each system's
threshold tuned on the evaluated notes (the fused coder's retrieval and lexicons
would hide what post-training changed); stage-1 outputs are cached under
``runs-dir/note_outputs`` so an interrupted evaluation resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from icdcoder.io import atomic_write

RUNGS = ("prompting", "sft", "grpo", "phi")
COLUMNS = [
    ("D MAP", "d_map"),
    ("D micro-F1", "d_micro_f1"),
    ("D macro-F1", "d_macro_f1"),
    ("P MAP", "p_map"),
    ("unseen R", "unseen_recall"),
    ("rare R", "rare_recall"),
    ("X F1", "x_f1"),
    ("span F1", "span_plain_f1"),
    ("span ground", "span_grounding"),
    ("train s", "train_seconds"),
    ("predict s/note", "predict_seconds_per_note"),
]


def parse_args(argv=None) -> argparse.Namespace:
    from icdcoder.infer.coder import INFERENCE_DTYPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/codiesp"))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--lang", default="es", choices=["es", "en"])
    parser.add_argument("--sft", type=Path, nargs="+", default=[Path("src/icdcoder/models/default")], help="SFT coder folder(s)")
    parser.add_argument("--grpo-config", type=Path, default=Path("configs/rl/grpo.yaml"))
    parser.add_argument("--phi-config", type=Path, default=Path("configs/rl/phi.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rungs", nargs="+", default=list(RUNGS), choices=RUNGS)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/ladder"))
    parser.add_argument("--max-docs", type=int, default=None, help="evaluate on the first N notes of the split (state it when reporting)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="RL config override a.b=value (repeatable)")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--span-eval", type=int, default=0, help="also score greedy answers on N dev span prompts (RL reward terms)")
    parser.add_argument("--skip-notes", action="store_true", help="only the span evaluation (note-level coding is slow on CPU)")
    parser.add_argument("--dtype", choices=INFERENCE_DTYPES, default=None, help="evaluate the LLMs in this precision")
    return parser.parse_args(argv)


def scores(gold_docs, predictions, train_counts, label_space) -> dict:
    """The ladder's columns from H4's ``evaluate`` (D = icd10cm, P = icd10pcs, X over both)."""
    from icdcoder.evaluate.metrics import evaluate

    diagnoses = evaluate(gold_docs, predictions, train_counts=train_counts, label_space=label_space, systems=["icd10cm"])
    procedures = evaluate(gold_docs, predictions, train_counts=train_counts, label_space=label_space, systems=["icd10pcs"])
    both = evaluate(gold_docs, predictions, train_counts=train_counts, label_space=label_space)
    return {
        "d_map": diagnoses["map"],
        "d_micro_f1": diagnoses["micro_f1"],
        "d_macro_f1": diagnoses["macro_f1"],
        "p_map": procedures["map"],
        "unseen_recall": both.get("unseen_recall"),
        "rare_recall": both.get("rare_recall"),
        "x_f1": both.get("evidence_f1"),
    }


def span_scores(coder, dev_docs, config, ontology, limit: int) -> dict:
    """Greedy, hint-free answers on ``limit`` dev span prompts, scored like the RL reward (cheap on CPU)."""
    import random

    from icdcoder.models.generation import HFGenerator
    from icdcoder.rl.grpo import build_rl_examples, code_resolver
    from icdcoder.rl.rewards import score_completion

    examples = build_rl_examples(dev_docs, config, ontology, coder.retriever)
    examples = random.Random(0).sample(examples, min(limit, len(examples)))
    generator = HFGenerator(coder.model, coder.tokenizer, batch_size=16, max_new_tokens=config.max_completion_length)
    resolve = code_resolver(ontology)
    breakdowns = [
        score_completion(g.text, e.text, e.gold_codes, e.gold_spans, resolve, config.reward)
        for g, e in zip(generator.generate([e.prompt() for e in examples]), examples)
    ]
    n = max(len(breakdowns), 1)
    return {f"span_{name}": sum(getattr(b, name) for b in breakdowns) / n for name in ("plain_f1", "format", "validity", "grounding")}


def predict_timed(coder, documents) -> tuple[list, float]:
    started = time.time()
    predictions = coder.predict(documents)
    return predictions, (time.time() - started) / max(len(documents), 1)


def rl_settings(config_path: Path, sft: Path, seed: int, output_dir: Path, overrides: list[str], threads: int):
    from icdcoder.config import load_config
    from icdcoder.rl.config import GrpoConfig
    from icdcoder.train.cli import parse_overrides

    assignments = [f"init={sft}", f"seed={seed}", f"output_dir={output_dir}", f"threads={threads}", *overrides]
    return load_config(config_path, GrpoConfig, overrides=parse_overrides(assignments))


def train_rl_rung(rung: str, args, seed: int, train_docs, ontology) -> tuple[Path, float]:
    """Train (or reuse) the GRPO/PHI run of one seed; returns its folder and training wall time."""
    from icdcoder.rl.grpo import run_grpo
    from icdcoder.rl.phi import run_phi

    output_dir = args.runs_dir / rung / f"seed{seed}"
    meta = output_dir / "run_meta.json"
    if meta.is_file() and not args.retrain:
        return output_dir, json.loads(meta.read_text())["wall_seconds"]
    config_path = args.grpo_config if rung == "grpo" else args.phi_config
    settings = rl_settings(config_path, args.sft[0], seed, output_dir, args.overrides, args.threads)
    runner = run_grpo if rung == "grpo" else run_phi
    report = runner(settings, resume=output_dir.exists() and not args.retrain, ontology=ontology)
    return output_dir, report.wall_seconds


def sft_train_seconds(folder: Path) -> float | None:
    meta = folder / "run_meta.json"
    return json.loads(meta.read_text()).get("wall_seconds") if meta.is_file() else None


def llm_alone_predictions(coder, dev_docs, cache: Path) -> tuple[list, float | None]:
    """The span coder's LLM answers alone (thresholds tuned on these notes), and seconds per note.

    Stage-1 outputs go to ``cache`` as they are made, so an interrupted evaluation resumes;
    a resumed evaluation is not timed (None).
    """
    from icdcoder.infer.coder import aggregate
    from icdcoder.infer.tuning import llm_alone, with_tuned_thresholds

    cache.parent.mkdir(parents=True, exist_ok=True)
    resumed = cache.is_file()
    started = time.time()
    outputs = coder.segment_outputs(dev_docs, cache=cache)
    per_note = None if resumed else (time.time() - started) / max(len(dev_docs), 1)
    settings = with_tuned_thresholds(outputs, dev_docs, llm_alone(coder.settings))
    return [aggregate(o, settings) for o in outputs], per_note


def evaluate_coder(coder, args, dev_docs, train_counts, label_space, ontology, label: str) -> dict:
    """Note-level CodiEsp scores (a span coder's LLM alone) and, when asked, span-level reward terms."""
    from icdcoder.infer.coder import SpanLLMPredictor

    row: dict = {}
    if not args.skip_notes:
        if isinstance(coder, SpanLLMPredictor):
            precision = f"-{args.dtype}" if args.dtype else ""
            cache = args.runs_dir / "note_outputs" / f"{label}-{args.split}-{len(dev_docs)}{precision}.jsonl"
            if args.retrain:  # a retrained model's answers differ from the cached ones
                cache.unlink(missing_ok=True)
            predictions, per_note = llm_alone_predictions(coder, dev_docs, cache)
        else:
            predictions, per_note = predict_timed(coder, dev_docs)
        row = {"predict_seconds_per_note": per_note, **scores(dev_docs, predictions, train_counts, label_space)}
    if args.span_eval and getattr(coder, "retriever", None) is not None:
        config = rl_settings(args.grpo_config, args.sft[0], 0, args.runs_dir / "span_eval", args.overrides, args.threads)
        row.update(span_scores(coder, dev_docs, config, ontology, args.span_eval))
    return row


def run_rung(rung: str, args, dev_docs, train_docs, train_counts, label_space, ontology) -> list[dict]:
    """One row per seed (per SFT folder for the SFT rung)."""
    from icdcoder.infer.coder import SpanLLMPredictor

    rows = []
    if rung == "sft":
        for folder in args.sft:
            coder = SpanLLMPredictor.load(folder, use_llm=True, dtype=args.dtype)
            rows.append({"seed": str(folder), "train_seconds": sft_train_seconds(folder), "dtype": getattr(coder, "llm_dtype", None),
                         **evaluate_coder(coder, args, dev_docs, train_counts, label_space, ontology, f"sft-{folder.name}")})
        return rows
    for seed in args.seeds:
        if rung == "prompting":
            from icdcoder.baselines.prompt import PromptPredictor, PromptSettings

            coder = PromptPredictor(PromptSettings(seed=seed))
            train_seconds = coder.fit(train_docs).wall_seconds
        else:
            folder, train_seconds = train_rl_rung(rung, args, seed, train_docs, ontology)
            coder = SpanLLMPredictor.load(folder, use_llm=True, dtype=args.dtype)
        rows.append({"seed": seed, "train_seconds": train_seconds, "dtype": getattr(coder, "llm_dtype", None),
                     **evaluate_coder(coder, args, dev_docs, train_counts, label_space, ontology, f"{rung}-seed{seed}")})
    return rows


def mean_and_spread(rows: list[dict], key: str) -> str:
    values = [row[key] for row in rows if row.get(key) is not None]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.3f}" if mean < 10 else f"{mean:.0f}"
    spread = statistics.stdev(values)
    return f"{mean:.3f}±{spread:.3f}" if mean < 10 else f"{mean:.0f}±{spread:.0f}"


def print_table(results: dict[str, list[dict]], title: str) -> None:
    table = Table(title=title)
    table.add_column("rung")
    table.add_column("seeds")
    for header, _ in COLUMNS:
        table.add_column(header, justify="right")
    for rung, rows in sorted(results.items(), key=lambda item: RUNGS.index(item[0])):
        table.add_row(rung, str(len(rows)), *(mean_and_spread(rows, key) for _, key in COLUMNS))
    Console(width=200).print(table)


def earlier_results(path: Path, split: str, n_docs: int) -> tuple[dict[str, list[dict]], dict[str, list[str]]]:
    """Rows and ``--set`` overrides of each rung from earlier invocations on the same notes, so rungs can be run one at a time."""
    if not path.is_file():
        return {}, {}
    earlier = json.loads(path.read_text(encoding="utf-8"))
    if earlier.get("split") != split or earlier.get("n_docs") != n_docs:
        return {}, {}
    return earlier.get("results", {}), earlier.get("overrides", {})


def merged_rows(earlier: list[dict], new: list[dict]) -> list[dict]:
    """``new`` rows plus the ``earlier`` rows of other seeds, in seed order."""
    seeds = {row["seed"] for row in new}
    rows = [row for row in earlier if row["seed"] not in seeds] + new
    return sorted(rows, key=lambda row: (isinstance(row["seed"], str), row["seed"]))


def main(argv=None) -> None:
    import torch

    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.evaluate.metrics import code_frequencies
    from icdcoder.ontology import load_ontology

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train_docs = load_codiesp(args.data_dir, "train", language=args.lang)
    dev_docs = load_codiesp(args.data_dir, args.split, language=args.lang, with_translation=args.lang != "en")
    if args.max_docs:
        dev_docs = dev_docs[: args.max_docs]
    train_counts = code_frequencies(train_docs)
    label_space = sorted(train_counts)
    ontology = load_ontology()
    suffix = f"_{args.dtype}" if args.dtype else ""
    results_path = args.runs_dir / f"ladder_{args.split}_{len(dev_docs)}{suffix}.json"
    for rung in args.rungs:
        rows = run_rung(rung, args, dev_docs, train_docs, train_counts, label_space, ontology)
        results, overrides = earlier_results(results_path, args.split, len(dev_docs))  # another process may have written
        same_settings = overrides.get(rung) == args.overrides
        results[rung] = merged_rows(results.get(rung, []) if same_settings else [], rows)
        overrides[rung] = args.overrides
        args.runs_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(results_path) as handle:
            json.dump({"split": args.split, "n_docs": len(dev_docs), "overrides": overrides, "results": results}, handle, indent=2)
    print_table(results, f"CodiEsp {args.split} ({len(dev_docs)} notes, {args.lang}); label space = train codes")


if __name__ == "__main__":
    main()
