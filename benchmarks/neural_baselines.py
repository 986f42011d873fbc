"""Train a neural baseline (``laat`` or ``plm``) on CodiEsp train, score it on dev.

Usage (from the repository root; long, so be nice to other jobs):

    nice -n 10 python benchmarks/neural_baselines.py laat configs/baselines/laat.yaml runs/baselines/laat
    nice -n 10 python benchmarks/neural_baselines.py plm configs/baselines/plm.yaml runs/baselines/plm

Writes the model to OUT_DIR, the dev predictions in CodiEsp submission format
to OUT_DIR/dev_submission, and the metrics (diagnoses = CodiEsp-D, procedures =
CodiEsp-P) to OUT_DIR/dev_metrics.json, which it also prints. Dev is used both
for early stopping / thresholds and for the score, so the score is optimistic.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from icdcoder.baselines.base import build_predictor
from icdcoder.data.codiesp import load_codiesp
from icdcoder.evaluate.codiesp import write_submission
from icdcoder.evaluate.metrics import code_frequencies, evaluate
from icdcoder.io import atomic_write
from icdcoder.registry import predictor_class

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "codiesp"
REPORTED = ("map", "micro_precision", "micro_recall", "micro_f1", "evidence_f1")


def main(system: str, config: str, out_dir: str, data_dir: Path = DATA_DIR) -> dict:
    torch.set_num_threads(1)
    train, dev = load_codiesp(data_dir, "train"), load_codiesp(data_dir, "dev")
    predictor = build_predictor(predictor_class(system), config)
    report = predictor.fit(train, dev)
    out = Path(out_dir)
    predictor.save(out)
    predictions = predictor.predict(dev)
    write_submission(out / "dev_submission", predictions)
    counts = code_frequencies(train)
    metrics = {"system": system, "config": config, "split": "dev", "fit_report": asdict(report)}
    for task, systems in (("D", {"icd10cm"}), ("P", {"icd10pcs"})):
        scores = evaluate(dev, predictions, train_counts=counts, systems=systems)
        metrics[task] = {name: scores[name] for name in REPORTED if name in scores}
    with atomic_write(out / "dev_metrics.json") as handle:
        json.dump(metrics, handle, indent=2)
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:4])
