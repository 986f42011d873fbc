"""The speed benchmarks on a GPU, when one is lent: SFT tokens/s for span vs document examples, and
the span coder's notes/s with the LLM on. Prints a short Markdown table (and the JSON rows with --json).

    python benchmarks/perf/gpu.py --data-dir ../shared/data/codiesp [--steps 20] [--notes 50]

Needs CUDA (exits with a one-line message otherwise) and TRL + datasets for the SFT part: the lent
machines have torch, transformers, peft and accelerate only, so carry the wheels
(``pip download trl datasets --no-deps -d wheels/`` here, ``pip install --no-deps wheels/*`` there).
Each SFT run uses ``configs/sft/{span,document}.yaml`` with bf16 and the batch sizes named below;
the coder run is the shipped default model with its LLM switched on for every segment.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VARIANTS = ("span", "document")


def sft_tokens_per_second(variant: str, data_dir: str, steps: int, batch: int, out: Path) -> dict:
    """Train ``configs/sft/<variant>.yaml`` for ``steps`` steps on the GPU; tokens/s from its run metadata."""
    command = [
        sys.executable,
        "-m",
        "icdcoder.cli",
        "train",
        "sft",
        "--config",
        f"configs/sft/{variant}.yaml",
        "--set",
        f"output_dir={out / variant}",
        "--set",
        f"data.data_dir={data_dir}",
        "--set",
        f"max_steps={steps}",
        "--set",
        f"per_device_batch_size={batch}",
        "--set",
        "gradient_accumulation_steps=1",
        "--set",
        "bf16=true",
        "--set",
        "save_steps=100000",
    ]
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, check=True)
    meta = json.loads((out / variant / "run_meta.json").read_text(encoding="utf-8"))
    return {
        "measure": f"SFT {variant}, batch {batch}",
        "value": round(meta["train_tokens"] / meta["wall_seconds"], 1),
        "unit": "training tokens/s (data preparation included)",
    }


def coder_notes_per_second(data_dir: str, notes: int, device: str = "cuda") -> dict:
    """The shipped coder with the LLM on every segment, on the first ``notes`` dev notes, on ``device``."""
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.infer.cli import DEFAULT_MODEL_DIR
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.signals.llm import load_for_inference

    coder = SpanPredictor.load(DEFAULT_MODEL_DIR)
    coder.settings = coder.settings.model_copy(update={"use_llm": True, "min_retrieval_score": 0.0, "batch_size": 256})
    model, tokenizer = load_for_inference(DEFAULT_MODEL_DIR / "model", "bfloat16")
    coder.attach(model.to(device), tokenizer, coder.retriever)
    documents = load_codiesp(data_dir, "dev", with_translation=True)[:notes]
    coder.segment_outputs(documents[:2])  # warm-up
    started = time.perf_counter()
    outputs = coder.segment_outputs(documents)
    elapsed = time.perf_counter() - started
    segments = sum(o.llm_segments for o in outputs)
    return {
        "measure": f"coder, LLM on ({segments / len(outputs):.1f} segments/note)",
        "value": round(len(outputs) / elapsed, 2),
        "unit": "notes/s",
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--notes", type=int, default=50)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gpu_bench")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA device: run this on a GPU machine")
    rows = [
        sft_tokens_per_second(variant, args.data_dir, args.steps, batch, args.out)
        for variant, batch in (("span", 64), ("document", 8))
    ]
    rows.append(coder_notes_per_second(args.data_dir, args.notes))
    device = torch.cuda.get_device_name(0)
    if args.json:
        for row in rows:
            print(json.dumps({"device": device, **row}))
        return
    print(f"| measure ({device}) | value | unit |\n|---|---|---|")
    for row in rows:
        print(f"| {row['measure']} | {row['value']} | {row['unit']} |")


if __name__ == "__main__":
    main()
