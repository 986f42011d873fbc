"""Does evidence located from ICD terms teach the LLM as gold evidence does? Span SFT on CodiEsp's English training
notes, once with their evidence (whole sentences projected from the Spanish offsets) and once with the offsets
dropped and ``data.silver_evidence`` on, as a MIMIC-IV user would train.

    python benchmarks/silver_sft.py --data-dir ../shared/data/codiesp --variants gold silver --steps 60 --dev-notes 60

Both variants use the shipped recipe (``configs/sft/default.yaml``) on English notes; each is tuned on the first
``--dev-notes`` English dev notes with its LLM on (``predict tune --llm --lang en``, stage-1 outputs cached, so an
interrupted run resumes). The recipe's LLM gate (``min_retrieval_score`` 0.9: the LLM reads a segment only when every
retrieval signal ranks the same code first) lets almost no English segment through, and none without evidence surface
forms, so the benchmark sets it to ``--llm-gate`` (default 0: the LLM reads every segment) before tuning. Printed per
variant, one JSON line: training examples, tokens and wall time; the LLM's answers alone (D/P micro-F1 and MAP at their
best threshold); the best fusion with the other signals; and the best fusion without the LLM. Run the variants as two
processes to use both cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from icdcoder.experiments.common import run_cli
from icdcoder.experiments.span_vs_document import fusion_scores, training_cost

REPO = Path(__file__).resolve().parent.parent

VARIANTS = ("gold", "silver")


def notes_without_offsets(data_dir: str, out: Path) -> Path:
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


def train(variant: str, out: Path, args: argparse.Namespace) -> None:
    overrides = {
        "output_dir": out / variant,
        "data.data_dir": args.data_dir,
        "data.lang": "en",
        "max_steps": args.steps,
    }
    if variant == "silver":
        overrides |= {"data.documents_jsonl": notes_without_offsets(args.data_dir, out), "data.silver_evidence": "true"}
    sets = [part for key, value in overrides.items() for part in ("--set", f"{key}={value}")]
    run_cli(
        ["train", "sft", "--config", "configs/sft/default.yaml", *sets, "--resume"],
        out / variant / "train.log",
        cwd=REPO,
    )


def set_llm_gate(folder: Path, gate: float) -> None:
    """Record ``gate`` as the trained coder's ``min_retrieval_score``."""
    from icdcoder.infer.coder import SpanLLMPredictor

    coder = SpanLLMPredictor.load(folder, use_llm=False)
    coder.settings = coder.settings.model_copy(update={"min_retrieval_score": gate})
    coder.write_settings(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--variants", nargs="*", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--dev-notes", type=int, default=60)
    parser.add_argument("--llm-gate", type=float, default=0.0, help="min_retrieval_score while tuning")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "silver_sft")
    args = parser.parse_args()
    for variant in args.variants:
        folder = args.out / variant
        if not (folder / "coder.json").is_file():
            train(variant, args.out, args)
        set_llm_gate(folder, args.llm_gate)
        cache = folder / f"stage1_gate{args.llm_gate:g}.jsonl"  # outputs under another gate are not these
        tuned = run_cli(
            [
                "predict",
                "tune",
                "--model",
                str(folder),
                "--data-dir",
                args.data_dir,
                "--split",
                "dev",
                "--lang",
                "en",
                "--cache",
                str(cache),
                "--threads",
                "1",
                "--llm",
                "--limit",
                str(args.dev_notes),
            ],
            folder / "tune.log",
            cwd=REPO,
        )
        meta = json.loads((folder / "run_meta.json").read_text())
        tuning = json.loads((folder / "coder.json").read_text())["tuning"]
        row = {
            "variant": variant,
            "llm_gate": args.llm_gate,
            **training_cost(folder),
            "examples": meta["examples"],
            "dev_notes": tuned["documents"],
            "llm_segments": tuned["llm_segments"],
            "dropped_lines": sum(tuned["dropped"].values()),
            **fusion_scores(tuning),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
