"""What the matched ICD-10-CM concepts (the coder's ``concept`` signal) are worth on dev.

    python benchmarks/unseen_concepts.py --data-dir ../shared/data/codiesp [--lang en] [--weights ...]

The question behind it: unseen-code recall (codes of dev notes that no training note carries). The English
lexicon matches descriptions and inclusion terms as exact phrases, so "primary ovarian carcinoma" never meets
"Malignant neoplasm of unspecified ovary". :class:`icdcoder.spans.concepts.ConceptIndex` reduces each title and
inclusion term to its content words (qualifiers such as "unspecified" and "other" dropped, site adjectives mapped
to their nouns, "carcinoma" to "malignant neoplasm", "bronchus and lung" read as either) and matches a code in a
sentence of the note's English text (its translation, or the English note) that holds all of them.

Printed, one JSON line each: how precise the matches are for codes seen and unseen in training (exact match,
and how many are the prefix of a gold code), as the index names them and as the coder names them (an untrained
category by its default specific code); then the coder with ``concept_weight`` at each of ``--weights``
(default: 0, the coder's own weight, and neighbours), other weights as tuned, at D/P thresholds re-tuned on dev:
D/P micro-F1 and MAP and D/P unseen-code recall.
"""

from __future__ import annotations

from extra_signal import load_coder_for_language, parser_with_language, print_hit_report, print_rows_around_own_weight


def main() -> None:
    args = parser_with_language(__doc__.splitlines()[0]).parse_args()
    coder, dev, train_counts = load_coder_for_language(args, "concept")
    matched = {document.id: coder.concept_index.matches(document.translation or document.text) for document in dev}
    named = {doc_id: {match.code for match in found} for doc_id, found in matched.items()}
    print_hit_report(args.lang, "matches", dev, named, "icd10cm", train_counts)
    coded = {doc_id: {coder.specific_code(code, "icd10cm") for code in codes} for doc_id, codes in named.items()}
    print_hit_report(args.lang, "matches_as_coded", dev, coded, "icd10cm", train_counts)
    print_rows_around_own_weight(coder, dev, train_counts, "concept_weight", args.lang, args.weights, args.one_threshold)


if __name__ == "__main__":
    main()
