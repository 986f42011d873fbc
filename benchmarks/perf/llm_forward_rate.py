"""How far the coder's LLM is from 1 note/s: tokens it reads per note, and the rate the CPU runs the model at.

    python benchmarks/perf/llm_forward_rate.py [--model DIR] [--notes 4] [--threads 1] [--llm-mode score|generate]
                                          [--dtype auto|float32|bfloat16] [--int8]

Codes ~400-word notes (as coder_speed.py does) with the LLM on and times every forward pass of the LLM: the tokens each
pass processes (padding included), the seconds spent in them, and the arithmetic rate that implies (one multiply-add,
2 FLOPs, per weight per token, the embedding tables left out; so are attention and the output layer, so the rate is a
lower bound).
``--int8`` swaps the linear layers for PyTorch's dynamically quantized int8 ones (fp32 activations): a measurement of
what int8 would buy, not a coder setting.

Prints one JSON line: notes/s, LLM tokens and forward seconds per note, tokens/s (also the most tokens a note could send
at 1 note/s), GFLOP/s (the model's and its matrix products').
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_note.txt"


def sample_notes(count: int) -> list:
    """``count`` copies of the sample note repeated to about 400 words (a typical CodiEsp case report)."""
    from icdcoder.data.schema import Document

    text = SAMPLE.read_text(encoding="utf-8")
    repeats = max(1, round(400 / max(len(text.split()), 1)))
    note = "\n".join([text.strip()] * repeats)
    return [Document(id=f"note{i}", text=note, language="es") for i in range(count)]


class ForwardTimer:
    """Counts the tokens and seconds of every forward pass of a model (through pre/post forward hooks)."""

    def __init__(self, model) -> None:
        self.tokens = 0
        self.seconds = 0.0
        self._started = 0.0
        model.register_forward_pre_hook(self._before, with_kwargs=True)
        model.register_forward_hook(self._after)

    def _before(self, module, args, kwargs) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        self.tokens += int(input_ids.numel()) if input_ids is not None else 0
        self._started = time.perf_counter()

    def _after(self, module, args, output) -> None:
        self.seconds += time.perf_counter() - self._started

    def reset(self) -> None:
        self.tokens, self.seconds = 0, 0.0


def weights_outside_embeddings(model) -> int:
    """Parameters every token's forward pass multiplies by: all but the embedding tables (the output layer runs only
    where logits are kept, the last prompt position here)."""
    tables = {id(model.get_input_embeddings().weight), id(model.get_output_embeddings().weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in tables)


def matmul_gflop_per_second(coder, document) -> float | None:
    """The rate of the matrix products while ``coder`` codes ``document``: profiler-counted FLOPs over their CPU time
    (None under ``--int8``, whose quantized products the profiler does not count)."""
    from torch.profiler import profile

    with profile(with_flops=True) as profiler:
        coder.segment_outputs([document])
    products = [e for e in profiler.key_averages() if e.key in ("aten::mm", "aten::addmm", "aten::bmm") and e.flops]
    if not products:
        return None
    return round(sum(e.flops for e in products) / sum(e.self_cpu_time_total for e in products) / 1e3, 1)


def square_matmul_gflop_per_second(dtype, size: int = 2048, repeats: int = 5) -> float:
    """What PyTorch's matrix product reaches on large square operands: the ceiling the model's products run against."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return round(repeats * 2 * size**3 / (time.perf_counter() - started) / 1e9, 1)


def main() -> None:
    import torch

    from icdcoder.infer.cli import DEFAULT_MODEL_DIR
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.settings import INFERENCE_DTYPES, LLM_MODES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--notes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--llm-mode", choices=LLM_MODES, default="score")
    parser.add_argument("--dtype", choices=INFERENCE_DTYPES, default=None, help="LLM precision (default: as saved)")
    parser.add_argument(
        "--int8", action="store_true", help="dynamically quantized int8 linear layers (fp32 activations)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    documents = sample_notes(args.notes)
    dtype = "float32" if args.int8 else args.dtype
    coder = SpanPredictor.load(args.model, use_llm=True, llm_mode=args.llm_mode, dtype=dtype)
    weights = weights_outside_embeddings(coder.model)
    if args.int8:
        coder.model = torch.ao.quantization.quantize_dynamic(coder.model, {torch.nn.Linear}, dtype=torch.qint8)
        coder._generator = None
    timer = ForwardTimer(coder.model)
    coder.predict(documents[:1])  # warm-up
    timer.reset()
    started = time.perf_counter()
    coder.segment_outputs(documents)
    elapsed = time.perf_counter() - started
    tokens, seconds = timer.tokens, timer.seconds
    tokens_per_second = tokens / seconds
    matmul_rate = matmul_gflop_per_second(coder, documents[0])
    ceiling = None if args.int8 else square_matmul_gflop_per_second(coder.model.dtype)
    print(
        json.dumps(
            {
                "threads": args.threads,
                "llm_mode": coder.settings.llm_mode,
                "dtype": "int8-dynamic" if args.int8 else coder.llm_dtype,
                "notes_per_second": round(len(documents) / elapsed, 3),
                "llm_tokens_per_note": round(tokens / len(documents)),
                "llm_seconds_per_note": round(seconds / len(documents), 2),
                "llm_share_of_time": round(seconds / elapsed, 3),
                "llm_tokens_per_second": round(tokens_per_second),
                "gflop_per_second": round(2 * weights * tokens_per_second / 1e9, 1),
                "matmul_gflop_per_second": matmul_rate,
                "square_matmul_gflop_per_second": ceiling,
            }
        )
    )


if __name__ == "__main__":
    main()
