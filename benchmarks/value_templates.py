"""What the codes named by a measured value (the coder's ``quantity`` signal) are worth on dev.

    python benchmarks/value_templates.py --data-dir ../shared/data/codiesp [--lang en] [--weights ...]

ICD-10-CM names some diagnoses by a value written in their titles: weeks of gestation (Z3A), body mass index (Z68),
Glasgow coma score (R40.24), type of diabetes. :class:`icdcoder.spans.quantities.QuantityTemplates` learns from the
training notes the phrases written around such a value ("# semana gestacion", "imc #") and names the family's code
covering the value a note writes there, so "19,6 semanas de gestación" names Z3A.19 though no training note carries it.

Printed, one JSON line each: the templates the coder holds for the notes' language; how precise their codes are
for codes seen and unseen in training (exact match, and how many are the prefix of a gold code); then the coder with
``quantity_weight`` at each of ``--weights`` (default: 0, the coder's own weight, and neighbours), other weights as
tuned, at D/P thresholds re-tuned on dev: D/P micro-F1 and MAP and D/P unseen-code recall.
"""

from __future__ import annotations

import json

from extra_signal import load_coder_for_language, parser_with_language, print_hit_report, print_rows_around_own_weight


def main() -> None:
    args = parser_with_language(__doc__.splitlines()[0]).parse_args()
    coder, dev, train_counts = load_coder_for_language(args, "quantity")
    templates = coder.quantity_templates.get(args.lang)
    if templates is None:
        raise SystemExit(f"the coder has no value templates for '{args.lang}' notes: run icdcoder train lexicons")
    print(json.dumps({"lang": args.lang, "templates": len(templates), "families": sorted(templates.families)}), flush=True)
    named = {document.id: {match.code for match in templates.matches(document.text)} for document in dev}
    print_hit_report(args.lang, "matches", dev, named, "icd10cm", train_counts)
    print_rows_around_own_weight(coder, dev, train_counts, "quantity_weight", args.lang, args.weights, args.one_threshold)


if __name__ == "__main__":
    main()
