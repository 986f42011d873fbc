"""Training tokens per second of the SFT setup (LoRA via TRL) for a few thread/precision settings.

    python benchmarks/sft_throughput.py --data-dir ../shared/data/codiesp --steps 10

Runs ``icdcoder train sft --config configs/sft/default.yaml`` for ``--steps`` steps per setting and
prints tokens/s from run_meta.json (train_tokens / wall_seconds, data preparation included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETTINGS = ({"threads": 1, "bf16": True}, {"threads": 1, "bf16": False}, {"threads": 2, "bf16": True})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "sft_throughput")
    args = parser.parse_args()
    for setting in SETTINGS:
        out = args.out / f"threads{setting['threads']}_bf16{setting['bf16']}"
        command = [
            sys.executable, "-m", "icdcoder.cli", "train", "sft", "--config", "configs/sft/default.yaml",
            "--set", f"output_dir={out}", "--set", f"data.data_dir={args.data_dir}", "--set", f"max_steps={args.steps}",
            "--set", f"threads={setting['threads']}", "--set", f"bf16={str(setting['bf16']).lower()}",
            "--set", "max_wall_minutes=null", "--set", "data.max_examples=400",
        ]
        subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
        meta = json.loads((out / "run_meta.json").read_text())
        print(json.dumps({**setting, "steps": meta["steps"], "train_tokens": meta["train_tokens"],
                          "wall_seconds": meta["wall_seconds"], "tokens_per_second": round(meta["train_tokens"] / meta["wall_seconds"], 1)}))


if __name__ == "__main__":
    main()
