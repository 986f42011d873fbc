"""What naming untrained category codes by their default specific code (``specify_untrained``) is worth.

    python benchmarks/specificity.py --data-dir ../shared/data/codiesp [--lang en]

The shipped coder reaches codes no training note carries through ontology titles, and a title that matches
is often a category's ("Acute nephritic syndrome": N00), while the annotators code a specific code (N00.9).
With ``specify_untrained`` the coder names such a code by :meth:`Ontology.default_specific_code`.

Printed, one JSON line each: how many predicted diagnosis codes the step renames on dev and how many of those
are right before and after, then the coder with the step off and on, at D/P thresholds re-tuned on dev:
D/P micro-F1 and MAP and D unseen-code recall.
"""

from __future__ import annotations

import json

from icdcoder.experiments.common import coder_and_notes, script_parser, weight_rows


def renamed_report(coder, dev, raw, one_threshold: bool) -> dict:
    """Diagnosis codes the coder predicts without the step that the step renames, and how many are gold before and after."""
    from icdcoder.infer.fusion import aggregate

    settings = coder.settings.model_copy(update={"untrained_threshold": {}}) if one_threshold else coder.settings
    counts = {"renamed": 0, "gold_before": 0, "gold_after": 0}
    for document, before in zip(dev, raw):
        gold = document.code_set("icd10cm")
        kept = {c.code for c in aggregate(before, settings).codes if c.system == "icd10cm"}
        for code in kept:
            specific = coder.specific_code(code, "icd10cm")
            if specific != code:
                counts["renamed"] += 1
                counts["gold_before"] += code in gold
                counts["gold_after"] += specific in gold
    return counts


def main() -> None:
    args = script_parser(__doc__.splitlines()[0]).parse_args()
    coder, dev, train_counts = coder_and_notes(args.model, args.data_dir, args.lang)
    outputs = {}
    for specify in (False, True):
        coder.settings = coder.settings.model_copy(update={"specify_untrained": specify})
        outputs[specify] = coder.segment_outputs(dev)
    print(json.dumps({"lang": args.lang, **renamed_report(coder, dev, outputs[False], args.one_threshold)}), flush=True)
    for specify in (False, True):
        coder.settings = coder.settings.model_copy(update={"specify_untrained": specify})
        for row in weight_rows(
            coder, dev, outputs[specify], train_counts, [coder.settings.llm_weight], "llm_weight", args.one_threshold
        ):
            print(json.dumps({"lang": args.lang, "specify_untrained": specify, **row}), flush=True)


if __name__ == "__main__":
    main()
