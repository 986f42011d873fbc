"""Span vs document (vs mixed, vs mixed + expansion) SFT: the experiment the span-centric method is about.

On a GPU, the four configs of the paper's table at one step budget:

    python benchmarks/span_vs_document.py --data-dir ../shared/data/codiesp --steps 150

On the 2-core CPU, the shipped model's recipe (configs/sft/default.yaml, span examples) against the same
recipe on whole-note examples (configs/sft/document_cpu.yaml), reusing the shipped adapter for the span side:

    python benchmarks/span_vs_document.py --data-dir ../shared/data/codiesp \\
        --variants default document_cpu --reuse default=src/icdcoder/models/default

Each variant is trained (``icdcoder train sft --config configs/sft/<variant>.yaml``) or reused, and
tuned on dev with its LLM on (``icdcoder predict tune --llm``, stage-1 outputs cached per variant so an
interrupted run resumes). Printed per variant, one JSON line: training tokens and wall time; the LLM's
answers alone (D/P micro-F1 and MAP at their best threshold: what training taught; D recall on codes that
training notes carry 0, 1-4 and >= 5 times, at those thresholds; how many codes it answered, and which most);
the best fusion with the retrieval and lexicon signals; and the best fusion without the LLM.
``<out>/table.md`` tabulates them.
Each command's log goes to ``<out>/<variant>/<command>.log``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("document", "span", "mixed", "mixed_expansion")
SCORES = ("D_f1", "D_map", "P_f1", "P_map")


def run(command: list[str], log: Path) -> dict:
    """Run an icdcoder command (stderr to ``log``) and parse the JSON summary it prints last."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as stderr:
        result = subprocess.run([sys.executable, "-m", "icdcoder.cli", *command], stdout=subprocess.PIPE, stderr=stderr,
                                text=True, cwd=REPO, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def train(variant: str, out: Path, args: argparse.Namespace) -> None:
    overrides = {"output_dir": out, "data.data_dir": args.data_dir, "max_steps": args.steps}
    if args.micro_batch:
        overrides["per_device_batch_size"] = args.micro_batch
        overrides["gradient_accumulation_steps"] = max(1, args.batch // args.micro_batch)
    sets = [part for key, value in overrides.items() if value is not None for part in ("--set", f"{key}={value}")]
    run(["train", "sft", "--config", f"configs/sft/{variant}.yaml", *sets, "--resume"], out / "train.log")


def reuse(source: Path, out: Path) -> None:
    """Copy a trained coder folder (its tuning records are replaced by this run's; a stage-1 cache already in
    ``out`` is kept)."""
    shutil.copytree(source, out, dirs_exist_ok=True)


def training_cost(coder_dir: Path) -> dict:
    """Tokens and wall time from ``run_meta.json`` (train sft) or ``meta.json`` (a shipped model)."""
    run_meta = coder_dir / "run_meta.json"
    if run_meta.is_file():
        meta = json.loads(run_meta.read_text())  # RL runs record no training tokens
        return {"train_tokens": meta.get("train_tokens"), "wall_seconds": meta["wall_seconds"], "steps": meta.get("steps")}
    report = json.loads((coder_dir / "meta.json").read_text())["fit_report"]
    return {"train_tokens": report["train_tokens"], "wall_seconds": report["wall_seconds"], "steps": None}


def scores(tuning: dict) -> dict:
    """LLM alone, best fusion, best fusion without the LLM (llm_weight 0)."""
    from icdcoder.infer.tuning import objective

    table = tuning["table"]

    def pick(row: dict) -> dict:
        return {key: row[key] for key in SCORES}

    fused = max(table, key=objective)
    without = max((row for row in table if row["llm_weight"] == 0), key=objective)
    return {
        "llm_alone": pick(tuning["llm_alone"]),
        "fused": {**pick(fused), "llm_weight": fused["llm_weight"]},
        "without_llm": pick(without),
    }


def llm_alone_details(coder_dir: Path, cache: Path, args: argparse.Namespace) -> dict:
    """Recall of the LLM's answers alone (at their tuned thresholds) on diagnosis codes that training notes
    carry 0 / 1-4 / >= 5 times (whether a variant reaches codes it never saw), how many codes it answered, and
    the ones it answered most. Read from the stage-1 cache."""
    from collections import Counter

    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.evaluate.metrics import frequency_band_recall
    from icdcoder.infer.coder import SpanLLMPredictor, aggregate
    from icdcoder.infer.tuning import llm_alone, with_tuned_thresholds

    coder = SpanLLMPredictor.load(coder_dir, use_llm=False)  # every note is cached: the LLM is not needed
    dev = load_codiesp(args.data_dir, "dev", with_translation=True)[: args.dev_notes]
    train = load_codiesp(args.data_dir, "train")
    outputs = coder.segment_outputs(dev, cache=cache)
    settings = with_tuned_thresholds(outputs, dev, llm_alone(coder.settings))
    ranked = {o.doc_id: [c.code for c in aggregate(o, settings).ranked({"icd10cm"})] for o in outputs}
    truth = {document.id: document.code_set("icd10cm") for document in dev}
    counts = Counter(gold.code for document in train for gold in document.codes if gold.system == "icd10cm")
    bands = frequency_band_recall(truth, ranked, counts)
    answered = Counter(item.code for note in outputs for item in note.scored if item.llm > 0)
    return {f"D_{band}_recall": bands[f"{band}_recall"] for band in ("unseen", "rare", "frequent")} | {
        "D_unseen_gold": bands["n_unseen"], "answered_codes": sum(answered.values()), "most_answered": answered.most_common(3)}


def _count(tokens: int | None) -> str:
    return "not recorded" if tokens is None else f"{tokens:,}"


def _recall(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _minutes(seconds: float | None) -> str:
    return "not recorded" if seconds is None else f"{seconds / 60:.0f} min"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| variant | train tokens | train time | answer lines dropped | LLM alone D F1 / MAP | LLM alone D recall unseen / rare | "
        "LLM alone P F1 / MAP | fused D F1 / MAP | fused P F1 / MAP | LLM weight |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        alone, fused = row["llm_alone"], row["fused"]
        lines.append(
            f"| {row['variant']} | {_count(row['train_tokens'])} | {_minutes(row['wall_seconds'])} | {row['dropped_lines']:,} "
            f"| {alone['D_f1']:.3f} / {alone['D_map']:.3f} | {_recall(alone['D_unseen_recall'])} / {_recall(alone['D_rare_recall'])} "
            f"| {alone['P_f1']:.3f} / {alone['P_map']:.3f} "
            f"| {fused['D_f1']:.3f} / {fused['D_map']:.3f} | {fused['P_f1']:.3f} / {fused['P_map']:.3f} | {fused['llm_weight']} |"
        )
    without = rows[0]["without_llm"] if rows else None
    if without:
        lines.append(f"\nWithout the LLM (retrieval + lexicons): D {without['D_f1']:.3f} / {without['D_map']:.3f}, "
                     f"P {without['P_f1']:.3f} / {without['P_map']:.3f}.")
    return "\n".join(lines) + "\n"


def main() -> None:
    from icdcoder.infer.coder import INFERENCE_DTYPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help="SFT config names under configs/sft/")
    parser.add_argument("--reuse", nargs="*", default=[], metavar="VARIANT=DIR", help="a trained coder folder instead of training")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps for every variant (default: each config's)")
    parser.add_argument("--batch", type=int, default=8, help="examples per step, with --micro-batch")
    parser.add_argument("--micro-batch", type=int, default=None, help="examples per forward pass (default: each config's)")
    parser.add_argument("--dev-notes", type=int, default=None, help="tune on the first N dev notes (default: all)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "span_vs_document")
    parser.add_argument("--dtype", choices=INFERENCE_DTYPES, default=None,
                        help="the LLM's precision when tuning (default: each coder's saved dtype); its stage-1 cache is kept apart")
    args = parser.parse_args()
    reused = dict(item.split("=", 1) for item in args.reuse)
    rows = []
    for variant in args.variants:
        out = args.out / variant
        if variant in reused:
            reuse(Path(reused[variant]), out)
        elif not (out / "coder.json").is_file():
            train(variant, out, args)
        limit = ["--limit", str(args.dev_notes)] if args.dev_notes else []
        precision = ["--dtype", args.dtype] if args.dtype else []
        cache = out / (f"stage1_{args.dtype}.jsonl" if args.dtype else "stage1.jsonl")
        tuned = run([
            "predict", "tune", "--model", str(out), "--data-dir", args.data_dir, "--split", "dev",
            "--cache", str(cache), "--threads", "1", "--llm", *limit, *precision,
        ], out / "tune.log")
        tuning = json.loads((out / "coder.json").read_text())["tuning"]
        row = {"variant": variant, **training_cost(out), "dtype": tuned["dtype"], "dev_notes": tuned["documents"],
               "llm_segments": tuned["llm_segments"],
               "dropped_lines": sum(tuned["dropped"].values()), **scores(tuning)}
        row["llm_alone"].update(llm_alone_details(out, cache, args))
        rows.append(row)
        print(json.dumps(row), flush=True)
    (args.out / "table.md").write_text(markdown(rows))


if __name__ == "__main__":
    main()
