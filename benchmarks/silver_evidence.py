"""How well evidence located from a code's ICD terms (``data.silver_evidence``) finds the gold evidence.

    python benchmarks/silver_evidence.py --data-dir ../shared/data/codiesp [--split train]

MIMIC-IV codes come without evidence offsets, and the span coder's answers quote evidence, so such notes teach the
LLM nothing unless evidence is located for them (:mod:`icdcoder.spans.silver`). CodiEsp's English notes carry
evidence projected from the Spanish offsets (whole sentences), so they can grade it: every gold code's offsets are
dropped, evidence is located from the ontology alone, and the located span is compared with the gold pieces.

Printed, one JSON line per code system and ``--min-share``: how many gold codes got evidence (``located``), how many
of those overlap a gold piece of the same code (``on_gold``, and its share of the located: ``precision``; of all
codes: ``recall``), and the located spans' mean length in words against the gold pieces'.
"""

from __future__ import annotations

import argparse
import json
from statistics import mean

from icdcoder.data.codiesp import load_codiesp
from icdcoder.data.schema import GoldCode
from icdcoder.ontology import load_ontology
from icdcoder.spans.silver import code_terms, locate_evidence


def _overlaps(span: tuple[int, int], gold: GoldCode) -> bool:
    return any(start < span[1] and span[0] < end for evidence in gold.evidence for start, end in evidence.pieces)


def _words(text: str, span: tuple[int, int]) -> int:
    return len(text[span[0] : span[1]].split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--split", default="train", help="train or dev (no tuning happens here)")
    parser.add_argument("--min-share", type=float, nargs="+", default=[0.5])
    args = parser.parse_args()
    ontology = load_ontology()
    documents = load_codiesp(args.data_dir, args.split, language="en")
    golds = [(document.text, gold) for document in documents for gold in document.codes if gold.evidence]
    terms = {(gold.code, gold.system): code_terms(ontology, gold.code, gold.system) for _, gold in golds}
    for min_share in args.min_share:
        for system in ("icd10cm", "icd10pcs"):
            found = [
                (text, gold, locate_evidence(text, terms[(gold.code, gold.system)], min_share))
                for text, gold in golds
                if gold.system == system
            ]
            located = [(text, gold, span) for text, gold, span in found if span is not None]
            on_gold = sum(_overlaps(span, gold) for _, gold, span in located)
            gold_words = [
                _words(text, piece)
                for text, gold, _ in found
                for evidence in gold.evidence
                for piece in evidence.pieces
            ]
            print(
                json.dumps(
                    {
                        "split": args.split,
                        "system": system,
                        "min_share": min_share,
                        "codes": len(found),
                        "located": len(located),
                        "on_gold": on_gold,
                        "precision": round(on_gold / max(len(located), 1), 3),
                        "recall": round(on_gold / max(len(found), 1), 3),
                        "located_words": round(mean(_words(text, span) for text, _, span in located), 1)
                        if located
                        else None,
                        "gold_words": round(mean(gold_words), 1) if gold_words else None,
                    }
                )
            )


if __name__ == "__main__":
    main()
