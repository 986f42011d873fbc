"""What the threshold of the codes no training note carries trades on dev.

    python benchmarks/unseen_threshold.py --data-dir ../shared/data/codiesp [--lang en] [--thresholds 0.05 0.075 0.1 ...]

Codes seen in training get their scores mostly from the lexicons; codes never seen in training only from the
ontology, concept and value signals, so their fused scores sit lower. ``icdcoder predict tune`` gives them a threshold
of their own (``untrained_threshold``), picked by micro-F1 + MAP + macro-F1; this prints the whole trade. Per threshold
for the untrained codes (the coder's own threshold for the trained ones), one JSON line per system: micro-F1 and
precision, MAP, macro-F1 and unseen-code recall.
"""

from __future__ import annotations

import json

from icdcoder.experiments.common import TASKS, coder_and_notes, script_parser


def main() -> None:
    parser = script_parser(__doc__.splitlines()[0])
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.05, 0.075, 0.1, 0.125, 0.15, 0.2])
    args = parser.parse_args()
    from icdcoder.evaluate.metrics import (
        frequency_band_recall,
        macro_prf,
        mean_average_precision,
        micro_prf,
    )
    from icdcoder.infer.fusion import aggregate

    coder, dev, train_counts = coder_and_notes(args.model, args.data_dir, args.lang)
    outputs = coder.segment_outputs(dev)
    lowest = min(args.thresholds)
    for system, task in TASKS:
        trained_threshold = coder.settings.threshold[system]
        floor = min(lowest, trained_threshold)
        loose = coder.settings.model_copy(
            update={
                "threshold": {**coder.settings.threshold, system: floor},
                "untrained_threshold": {**coder.settings.untrained_threshold, system: floor},
            }
        )
        scored = {note.doc_id: aggregate(note, loose).ranked({system}) for note in outputs}
        truth = {document.id: document.code_set(system) for document in dev}
        for threshold in args.thresholds:
            ranked = {
                doc_id: [p.code for p in found if p.score >= (trained_threshold if train_counts[p.code] else threshold)]
                for doc_id, found in scored.items()
            }
            micro = micro_prf(truth, ranked)
            row = {
                "lang": args.lang,
                "task": task,
                "trained_threshold": trained_threshold,
                "untrained_threshold": threshold,
                "micro_f1": micro["micro_f1"],
                "micro_precision": micro["micro_precision"],
                "map": mean_average_precision(truth, ranked),
                "macro_f1": macro_prf(truth, ranked)["macro_f1"],
                "unseen_recall": frequency_band_recall(truth, ranked, train_counts)["unseen_recall"],
            }
            print(
                json.dumps({key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()})
            )


if __name__ == "__main__":
    main()
