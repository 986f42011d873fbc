"""Notes per second of a saved coder on a ~400-word note (CPU, and GPU when one is present).

    python benchmarks/perf/coder_speed.py [--model DIR] [--notes 4] [--threads 1] [--llm | --no-llm] [--dtype auto|float32|bfloat16]
                                     [--llm-mode generate|score] [--min-retrieval-score X]

``--llm`` / ``--no-llm`` override the coder's saved ``use_llm`` (the shipped coder has its LLM off);
``--dtype`` overrides its saved precision (``auto``: bfloat16 only on a CPU that computes it natively);
``--llm-mode`` how the LLM reads a segment (writes answer lines, or scores the shown candidates);
``--min-retrieval-score`` the gate a segment's best retrieval score must pass to reach the LLM.

Prints one JSON line per device: notes/s, segments per note, segments sent to the LLM.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_note.txt"


def four_hundred_words(text: str) -> str:
    """Repeat the sample note until it holds about 400 words (a typical CodiEsp case report)."""
    words = text.split()
    repeats = max(1, round(400 / max(len(words), 1)))
    return "\n".join([text.strip()] * repeats)


def sample_notes(count: int) -> list:
    """``count`` copies of the ~400-word Spanish note the speed benchmarks code."""
    from icdcoder.data.schema import Document

    text = four_hundred_words(SAMPLE.read_text(encoding="utf-8"))
    return [Document(id=f"note{i}", text=text, language="es") for i in range(count)]


def main() -> None:
    import torch

    from icdcoder.infer.cli import DEFAULT_MODEL_DIR
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.settings import INFERENCE_DTYPES, LLM_MODES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--notes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--llm", action=argparse.BooleanOptionalAction, default=None, help="run the LLM (default: as saved)"
    )
    parser.add_argument("--dtype", choices=INFERENCE_DTYPES, default=None, help="LLM precision (default: as saved)")
    parser.add_argument("--llm-mode", choices=LLM_MODES, default=None, help="generate or score (default: as saved)")
    parser.add_argument("--min-retrieval-score", type=float, default=None, help="the LLM's gate (default: as saved)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    documents = sample_notes(args.notes)
    coder = SpanPredictor.load(
        args.model,
        use_llm=args.llm,
        dtype=args.dtype,
        llm_mode=args.llm_mode,
        min_retrieval_score=args.min_retrieval_score,
    )
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        if coder.model is not None:
            coder.model.to(device)
            coder._generator = None
        coder.predict(documents[:1])  # warm-up
        started = time.perf_counter()
        outputs = coder.segment_outputs(documents)
        elapsed = time.perf_counter() - started
        print(
            json.dumps(
                {
                    "device": device,
                    "threads": args.threads,
                    "llm": coder.settings.use_llm,
                    "dtype": coder.llm_dtype,
                    "llm_mode": coder.settings.llm_mode,
                    "min_retrieval_score": coder.settings.min_retrieval_score,
                    "words_per_note": len(documents[0].text.split()),
                    "notes_per_second": round(len(documents) / elapsed, 3),
                    "segments_per_note": sum(o.segments for o in outputs) / len(outputs),
                    "llm_segments_per_note": sum(o.llm_segments for o in outputs) / len(outputs),
                }
            )
        )


if __name__ == "__main__":
    main()
