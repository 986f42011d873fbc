"""Inference speed of saved coders: notes per second on N notes of a CodiEsp split.

Usage (models saved by ``icdcoder train baseline`` or by the bench)::

    python benchmarks/perf/inference_throughput.py --model dictionary=results/codiesp_dev/models/dictionary \\
        --model tfidf=results/codiesp_dev/models/tfidf --notes 100 --repeats 3

Each system is loaded once (load time reported apart), then ``predict`` runs
``--repeats`` times over the same notes; the best run is reported (least
disturbed by other work on the machine). Prints a short table and, with
``--json``, one JSON object per system.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="SYSTEM=DIR",
                        help="registered system name and its saved folder (repeatable)")  # fmt: skip
    default_data = os.environ.get("ICDCODER_CODIESP_DIR", "../shared/data/codiesp")
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--lang", default="es", choices=("es", "en"))
    parser.add_argument("--notes", type=int, default=100, help="number of notes to code (first N by id)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (for torch-based coders)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per system instead of a table")
    return parser.parse_args()


def measure(system: str, model_dir: Path, notes: list, repeats: int) -> dict:
    """Load one saved system and time ``predict`` on ``notes``; the best of ``repeats`` runs."""
    from icdcoder.registry import predictor_class

    started = time.perf_counter()
    predictor = predictor_class(system).load(model_dir)
    load_seconds = time.perf_counter() - started
    best = float("inf")
    for _ in range(max(repeats, 1)):
        started = time.perf_counter()
        predictor.predict(notes)
        best = min(best, time.perf_counter() - started)
    return {
        "system": system,
        "model": str(model_dir),
        "notes": len(notes),
        "load_seconds": round(load_seconds, 3),
        "notes_per_second": round(len(notes) / best, 2) if best > 0 else None,
        "ms_per_note": round(1000 * best / len(notes), 2),
    }


def main() -> None:
    args = parse_args()
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.errors import InputError

    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    pairs = []
    for item in args.model:
        system, sep, folder = item.partition("=")
        if not sep or not system or not folder:
            raise SystemExit(f"error: --model expects SYSTEM=DIR, got {item!r}")
        pairs.append((system, Path(folder)))
    notes = load_codiesp(args.data_dir, args.split, language=args.lang)[: args.notes]
    if not notes:
        raise SystemExit(f"error: no notes in {args.data_dir}/{args.split}")
    rows = []
    for system, folder in pairs:
        try:
            rows.append(measure(system, folder, notes, args.repeats))
        except InputError as err:
            rows.append({"system": system, "model": str(folder), "error": str(err)})
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"{'system':<14}{'notes':>7}{'load s':>9}{'notes/s':>10}{'ms/note':>10}")
    for row in rows:
        if "error" in row:
            print(f"{row['system']:<14}  failed: {row['error']}")
            continue
        print(f"{row['system']:<14}{row['notes']:>7}{row['load_seconds']:>9.2f}"
              f"{row['notes_per_second']:>10.1f}{row['ms_per_note']:>10.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
