"""How much of the shipped coder's dev score is the dev tuning itself: its weights re-tuned by cross-fitting on dev.

    python benchmarks/tuning_holdout.py --data-dir ../shared/data/codiesp [--lang en] [--folds 5] [--variants ...]

The shipped weights and thresholds are tuned on the same dev notes they are scored on (CodiEsp has no other labelled
split besides train and the held-out test), so their dev numbers are optimistic. Here the dev notes are cut into
``--folds`` folds; each fold is coded with the weights and thresholds ``predict tune``'s grid picks on the other folds,
and the held-out predictions of all folds are scored together. Stage 1 runs once.

Printed, one JSON line per variant: the in-sample score (tuned and scored on all dev notes) and the cross-fitted one
(D/P micro-F1 and MAP, D/P unseen-code recall), and the weights each fold picked. Variants drop one signal from
stage 1 before tuning (``without_concept``, ``without_procedure``, ``without_quantity``), to tell whether its gain
survives held-out tuning; ``--variants`` runs some of them (each tunes the grid ``--folds`` + 1 times).
"""

from __future__ import annotations

import json
from dataclasses import replace

from extra_signal import load_coder_for_language, parser_with_language, prediction_scores

from icdcoder.infer.coder import aggregate, collect_signals
from icdcoder.infer.tuning import GRID_WEIGHTS, tune_fusion

#: stage-1 signals a variant drops before tuning
VARIANTS = {"shipped": None, "without_concept": "concept", "without_procedure": "procedure", "without_quantity": "quantity"}


def tuned_predictions(coder, train_notes, train_outputs, scored_outputs) -> tuple[list, dict]:
    """``scored_outputs`` aggregated with the weights and thresholds tuned on ``train_notes``."""
    best = tune_fusion(train_outputs, train_notes, coder.settings)["best_settings"]
    settings = coder.settings.model_copy(update=best)
    predictions = [aggregate(note, settings, collect_signals(note)) for note in scored_outputs]
    return predictions, {name: best[name] for name in GRID_WEIGHTS if best[name]} | {"threshold": best["threshold"]}


def main() -> None:
    parser = parser_with_language(__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    coder, dev, train_counts = load_coder_for_language(args, "holdout")
    stage1 = coder.segment_outputs(dev)
    folds = [list(range(start, len(dev), args.folds)) for start in range(args.folds)]
    for variant in args.variants:
        dropped = VARIANTS[variant]
        outputs = stage1 if dropped is None else [
            replace(note, scored=[replace(item, **{dropped: 0.0}) for item in note.scored]) for note in stage1
        ]
        in_sample, _ = tuned_predictions(coder, dev, outputs, outputs)
        held_out, picked = [], []
        for fold in folds:
            kept = sorted(set(range(len(dev))) - set(fold))
            predictions, weights = tuned_predictions(
                coder, [dev[i] for i in kept], [outputs[i] for i in kept], [outputs[i] for i in fold]
            )
            held_out.extend(predictions)
            picked.append(weights)
        print(json.dumps({
            "lang": args.lang,
            "variant": variant,
            "in_sample": prediction_scores(dev, in_sample, train_counts),
            "cross_fitted": prediction_scores(dev, held_out, train_counts),
            "fold_weights": picked,
        }), flush=True)


if __name__ == "__main__":
    main()
