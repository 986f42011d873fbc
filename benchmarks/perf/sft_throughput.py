"""Training tokens per second of SFT (LoRA via TRL) on span vs document examples, fp32 vs bf16 autocast.

    python benchmarks/perf/sft_throughput.py --data-dir ../shared/data/codiesp --steps 5

Runs ``icdcoder train sft --config configs/sft/<variant>.yaml`` for ``--steps`` optimizer steps of
``--batch`` examples per setting (one torch thread) and prints one JSON line each: tokens/s of the
training steps alone and including data preparation (both from the run's run_meta.json), and whether
the CPU computes bf16 natively (without it, autocast emulates bf16 and is slower than fp32).
Document examples are long (up to 640 tokens): keep ``--batch`` small on a CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ("span", "document")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "sft_throughput")
    args = parser.parse_args()
    from icdcoder.models.loading import cpu_has_native_bf16

    native_bf16 = cpu_has_native_bf16()
    for variant in args.variants:
        for bf16 in (False, True):
            out = args.out / f"{variant}_bf16{bf16}"
            command = [
                sys.executable,
                "-m",
                "icdcoder.cli",
                "train",
                "sft",
                "--config",
                f"configs/sft/{variant}.yaml",
                "--set",
                f"output_dir={out}",
                "--set",
                f"data.data_dir={args.data_dir}",
                "--set",
                f"max_steps={args.steps}",
                "--set",
                f"per_device_batch_size={args.batch}",
                "--set",
                "gradient_accumulation_steps=1",
                "--set",
                "threads=1",
                "--set",
                f"bf16={str(bf16).lower()}",
                "--set",
                f"save_steps={args.steps}",
                "--set",
                "data.lexicons=false",
            ]
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, check=True)
            meta = json.loads((out / "run_meta.json").read_text(encoding="utf-8"))
            steps_seconds = meta["steps_seconds"]
            print(
                json.dumps(
                    {
                        "variant": variant,
                        "bf16": bf16,
                        "cpu_native_bf16": native_bf16,
                        "batch": args.batch,
                        "steps": meta["steps"],
                        "train_tokens": meta["train_tokens"],
                        "wall_seconds": meta["wall_seconds"],
                        "tokens_per_second": round(meta["train_tokens"] / steps_seconds, 1) if steps_seconds else None,
                        "tokens_per_second_with_data_prep": round(meta["train_tokens"] / meta["wall_seconds"], 1),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
