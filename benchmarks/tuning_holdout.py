"""How much of the shipped coder's dev score is the dev tuning itself: its weights re-tuned by cross-fitting on dev.

    python benchmarks/tuning_holdout.py --data-dir ../shared/data/codiesp [--lang en] [--folds 5] [--variants ...]

The shipped weights and thresholds are tuned on the same dev notes they are scored on (CodiEsp has no other labelled
split besides train and the held-out test), so their dev numbers are optimistic. Here the dev notes are cut into
``--folds`` folds; each fold is coded with the weights and thresholds ``predict tune``'s grid picks on the other folds,
and the held-out predictions of all folds are scored together. Stage 1 runs once.

Printed, per variant: the in-sample score (tuned and scored on all dev notes) and the cross-fitted one
(D/P micro-F1, MAP and macro-F1, D/P unseen-code recall), and the weights each fold picked; each variant twice: as
tuned, and with one threshold per system (the untrained codes' own thresholds left out). Variants drop one signal from
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


def tuned_settings(coder, train_notes, train_outputs) -> tuple:
    """The settings tuned on ``train_notes`` and the weights and thresholds that tuning picked."""
    best = tune_fusion(train_outputs, train_notes, coder.settings)["best_settings"]
    picked = {name: best[name] for name in GRID_WEIGHTS if best[name]}
    return coder.settings.model_copy(update=best), picked | {"threshold": best["threshold"], "untrained_threshold": best["untrained_threshold"]}


def coded(outputs, settings, shared_threshold: bool = False) -> list:
    """``outputs`` aggregated with ``settings``; ``shared_threshold``: without the untrained codes' own thresholds."""
    settings = settings.model_copy(update={"untrained_threshold": {}}) if shared_threshold else settings
    return [aggregate(note, settings, collect_signals(note)) for note in outputs]


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
        in_sample, _ = tuned_settings(coder, dev, outputs)
        tuned_folds = []
        for fold in folds:
            kept = sorted(set(range(len(dev))) - set(fold))
            settings, picked = tuned_settings(coder, [dev[i] for i in kept], [outputs[i] for i in kept])
            tuned_folds.append((fold, settings, picked))
        for shared_threshold in (False, True):
            held_out = [p for fold, settings, _ in tuned_folds for p in coded([outputs[i] for i in fold], settings, shared_threshold)]
            print(json.dumps({
                "lang": args.lang,
                "variant": variant + (" (one threshold per system)" if shared_threshold else ""),
                "in_sample": prediction_scores(dev, coded(outputs, in_sample, shared_threshold), train_counts),
                "cross_fitted": prediction_scores(dev, held_out, train_counts),
                "fold_weights": [picked for _, _, picked in tuned_folds],
            }), flush=True)


if __name__ == "__main__":
    main()
