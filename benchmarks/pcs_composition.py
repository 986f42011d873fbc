"""What the composed ICD-10-PCS codes (the coder's ``procedure`` signal) are worth on dev.

    python benchmarks/pcs_composition.py --data-dir ../shared/data/codiesp [--lang en]

CodiEsp codes procedures as often at 4-character ICD-10-PCS prefixes as at full codes, and 23% of dev procedure
codes never occur in train. :class:`icdcoder.spans.procedures.ProcedureComposer` proposes a prefix when one
sentence of the note's English text (its translation, or the English note) names its root operation and its
whole body part, and writes it at the level the training notes code that operation.

Printed, one JSON line each: how precise the proposals are for codes seen and unseen in training (exact match,
and how many are the prefix of a gold full code), as prefixes and at the training level; then the coder with
``procedure_weight`` at each of ``--weights`` (default: 0, the coder's own weight, and neighbours), other weights as
tuned, at D/P thresholds re-tuned on dev: D/P micro-F1 and MAP and D/P unseen-code recall.
"""

from __future__ import annotations

from extra_signal import load_coder_for_language, parser_with_language, print_hit_report, print_rows_around_own_weight


def main() -> None:
    args = parser_with_language(__doc__.splitlines()[0]).parse_args()
    coder, dev, train_counts = load_coder_for_language(args, "procedure")
    composed = {document.id: coder.procedure_composer.compose(document.translation or document.text) for document in dev}
    prefixes = {doc_id: {item.prefix for item in found} for doc_id, found in composed.items()}
    print_hit_report(args.lang, "proposals", dev, prefixes, "icd10pcs", train_counts)
    coded = {doc_id: {item.code for item in found} for doc_id, found in composed.items()}
    print_hit_report(args.lang, "proposals_at_training_level", dev, coded, "icd10pcs", train_counts)
    print_rows_around_own_weight(coder, dev, train_counts, "procedure_weight", args.lang, args.weights, args.one_threshold)


if __name__ == "__main__":
    main()
