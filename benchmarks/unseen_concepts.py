"""Would matching ICD-10-CM descriptions as bags of words on the English translation reach unseen codes?

    python benchmarks/unseen_concepts.py --data-dir ../shared/data/codiesp

The question behind it: unseen-code recall (codes of dev notes that no training note carries). The shipped
coder's English lexicon matches descriptions and inclusion terms as exact phrases, so "primary ovarian
carcinoma" never meets "Malignant neoplasm of unspecified ovary". Here each description is reduced to its
content words (:func:`icdcoder.spans.concepts.content_words`: qualifiers such as "unspecified" and "other"
dropped, site adjectives mapped to their nouns, "carcinoma"/"cancer"/"sarcoma" to "malignant neoplasm"), and a
code matches a translation sentence that holds all of its content words (at least two); only the most specific
matches of a sentence are kept.

Printed, one JSON line each: how precise the matches are (for codes seen and unseen in training), then, for
each weight, the shipped coder with the matches fused as one more signal (it borrows the LLM's slot: the
shipped coder runs with its LLM off) at D/P thresholds re-tuned on dev: D/P micro-F1 and MAP and D unseen
recall; ``unseen_only`` rows add the signal only to codes no training note carries.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from extra_signal import hit_report, load_coder_and_notes, parser_with_model, print_rows_with_hits

from icdcoder.spans.concepts import content_words, sentence_spans


class ConceptIndex:
    """ICD-10-CM descriptions and inclusion terms as sets of content words, indexed by their rarest word."""

    def __init__(self, ontology) -> None:
        entries = []
        for code in ontology.codes("icd10cm"):
            info = ontology.get(code, "icd10cm")
            for term in (info.description, *info.inclusion_terms):
                words = content_words(term)
                if len(words) >= 2:
                    entries.append((words, code))
        frequency = Counter(word for words, _ in entries for word in words)
        self.by_word: dict[str, list[tuple[frozenset[str], str]]] = defaultdict(list)
        for words, code in entries:
            self.by_word[min(words, key=lambda w: (frequency[w], w))].append((words, code))

    def codes_in(self, text: str) -> set[str]:
        """Codes whose content words all occur in one sentence of ``text``; the most specific of each sentence."""
        found = set()
        for start, end in sentence_spans(text):
            words = content_words(text[start:end])
            matched = [(need, code) for word in words for need, code in self.by_word.get(word, ()) if need <= words]
            found.update(code for need, code in matched if not any(need < other for other, _ in matched))
        return found


def main() -> None:
    args = parser_with_model(__doc__.splitlines()[0], weights=[0.0, 0.25, 0.5, 1.0, 2.0]).parse_args()
    coder, dev, train_counts = load_coder_and_notes(args, "concept")
    index = ConceptIndex(coder.ontology)
    hits = {document.id: index.codes_in(document.translation) for document in dev}
    print(json.dumps({"matches": hit_report(dev, hits, "icd10cm", train_counts)}), flush=True)
    print_rows_with_hits(coder, dev, hits, "icd10cm", train_counts, args.weights)


if __name__ == "__main__":
    main()
