"""Document vs span vs mixed vs mixed+expansion SFT at a small, equal token budget.

    python benchmarks/span_vs_document.py --data-dir ../shared/data/codiesp --steps 150 --dev-notes 60

Each variant (configs/sft/{document,span,mixed,mixed_expansion}.yaml) trains for the same number of
optimizer steps and batch size, then is tuned and scored on the first ``--dev-notes`` dev notes with
the same fusion grid (``icdcoder predict tune``). Prints one JSON line per variant (train tokens, wall
time, best D/P micro-F1 and MAP from the tuning table, with and without the LLM). Each command's
log goes to ``<out>/<variant>/<command>.log``.

A batch is ``--micro-batch`` examples at a time, accumulated: 640-token document examples in
micro-batches of 8 took ~19 GB of RAM in fp32 on CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("document", "span", "mixed", "mixed_expansion")


def run(command: list[str], log: Path) -> dict:
    """Run an icdcoder command (stderr to ``log``) and parse the JSON summary it prints last."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as stderr:
        result = subprocess.run([sys.executable, "-m", "icdcoder.cli", *command], stdout=subprocess.PIPE, stderr=stderr,
                                text=True, cwd=REPO, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def best_rows(coder_dir: Path) -> dict:
    """Best tuned D/P scores with the LLM and without it (llm_weight = 0)."""
    table = json.loads((coder_dir / "coder.json").read_text())["tuning"]["table"]

    def score(row: dict) -> float:
        return row["D_f1"] + row["D_map"] + row["P_f1"] + row["P_map"]

    with_llm = max(table, key=score)
    without = max((row for row in table if row["llm_weight"] == 0), key=score)
    keys = ("D_f1", "D_map", "P_f1", "P_map", "llm_weight")
    return {"fused": {k: with_llm[k] for k in keys}, "retrieval_only": {k: without[k] for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--dev-notes", type=int, default=60)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "span_vs_document")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = parser.parse_args()
    for variant in args.variants:
        out = args.out / variant
        trained = run([
            "train", "sft", "--config", f"configs/sft/{variant}.yaml",
            "--set", f"output_dir={out}", "--set", f"data.data_dir={args.data_dir}",
            "--set", f"max_steps={args.steps}", "--set", f"per_device_batch_size={args.micro_batch}",
            "--set", f"gradient_accumulation_steps={max(1, args.batch // args.micro_batch)}", "--set", "threads=1",
        ], out / "train.log")
        tuned = run([
            "predict", "tune", "--model", str(out), "--data-dir", args.data_dir, "--split", "dev",
            "--limit", str(args.dev_notes), "--threads", "1",
        ], out / "tune.log")
        print(json.dumps({
            "variant": variant,
            "train_tokens": trained["train_tokens"],
            "wall_seconds": trained["wall_seconds"],
            "dev_notes": tuned["documents"],
            **best_rows(out),
        }), flush=True)


if __name__ == "__main__":
    main()
