"""What the shipped adapter adds to the coder when it generates answers and when it scores the shown candidates.

    python benchmarks/llm_modes.py --data-dir ../shared/data/codiesp [--lang es] [--runs generate:0.9 score:0.9 score:0]
        [--weights 0 0.25 0.5 1 2 4] [--adapter DIR] [--out runs/llm_modes]

Each run is ``MODE:GATE``: ``CoderSettings.llm_mode`` (``generate``: the LLM writes answer lines; ``score``: one forward
pass per segment reads how likely the answer opens with each shown candidate) and ``min_retrieval_score`` (the best
retrieval score a segment needs to reach the LLM). The shipped coder is loaded with its LLM on and coded on dev once per
run (cached under ``--out``: an interrupted run resumes); then, per LLM weight, the other weights as shipped, D/P
thresholds re-tuned on dev as ``predict tune`` tunes them (each system's, then the untrained diagnosis codes'). The
weight-1 row with every other signal at 0 is what the LLM's output alone is worth. ``--adapter`` puts another LLM
(e.g. ``runs/sft/default_en/model``, the same recipe trained on English notes) in the shipped coder's place.

Printed, one JSON line per run and weight: the run, the LLM segments, the seconds stage 1 took (null when it was read
from the cache), D/P micro-F1, MAP, macro-F1 and unseen-code recall.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from icdcoder.experiments.common import coder_and_notes, weight_rows

REPO = Path(__file__).resolve().parent.parent


def parse_run(text: str) -> tuple[str, float]:
    mode, _, gate = text.partition(":")
    return mode, float(gate or 0.0)


def adapter_tag(adapter: Path | None) -> str:
    """What tells one adapter's cached outputs from another's: its folder, less the usual trailing ``model``."""
    if adapter is None:
        return ""
    parts = [part for part in adapter.resolve().parts if part != "model"]
    return "_" + parts[-1]


def main() -> None:
    import argparse

    import torch

    from icdcoder.infer.coder import SpanLLMPredictor
    from icdcoder.infer.tuning import llm_alone

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default=str(REPO / "src/icdcoder/models/default"))
    parser.add_argument("--lang", choices=("es", "en"), default="es")
    parser.add_argument("--runs", nargs="+", default=["generate:0.9", "score:0.9", "score:0"])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--adapter", type=Path, help="an LLM folder used in place of the coder's own model/")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "llm_modes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, dev, train_counts = coder_and_notes(args.model, args.data_dir, args.lang)
    for mode, gate in map(parse_run, args.runs):
        coder = SpanLLMPredictor.load(
            args.model, adapter=args.adapter, use_llm=True, llm_mode=mode, min_retrieval_score=gate
        )
        coder.settings = coder.settings.for_language(args.lang)
        cache = args.out / f"{args.lang}_{mode}_gate{gate:g}{adapter_tag(args.adapter)}.jsonl"
        fresh = not cache.is_file()
        started = time.perf_counter()
        outputs = coder.segment_outputs(dev, cache=cache)
        seconds = round(time.perf_counter() - started, 1) if fresh else None
        run = {
            "lang": args.lang,
            "adapter": str(args.adapter or "shipped"),
            "mode": mode,
            "gate": gate,
            "llm_segments": sum(o.llm_segments for o in outputs),
            "stage1_s": seconds,
        }
        for row in weight_rows(coder, dev, outputs, train_counts, args.weights, "llm_weight"):
            print(json.dumps({**run, "llm_weight": row.pop("weight"), **row}), flush=True)
        coder.settings = llm_alone(coder.settings)
        (row,) = weight_rows(coder, dev, outputs, train_counts, [1.0], "llm_weight")
        print(json.dumps({**run, "llm_weight": "alone", **{k: v for k, v in row.items() if k != "weight"}}), flush=True)


if __name__ == "__main__":
    main()
