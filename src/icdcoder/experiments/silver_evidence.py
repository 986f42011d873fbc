"""How well evidence located from a code's ICD terms (``data.silver_evidence``) finds the gold evidence.

MIMIC-IV codes come without evidence offsets, and the span coder's answers quote evidence, so such notes teach the
LLM nothing unless evidence is located for them (:mod:`icdcoder.spans.silver`). CodiEsp's English notes carry
evidence projected from the Spanish offsets (whole sentences), so they can grade it: every gold code's offsets are
dropped, evidence is located from the ontology alone, and the located span is compared with the gold pieces.

Per code system and ``min_share``: how many gold codes got evidence (``located``), how many of those overlap a gold
piece of the same code (``on_gold``, and its share of the located: ``precision``; of all codes: ``recall``), and the
located spans' mean length in words against the gold pieces'.
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any

from pydantic import Field

from icdcoder.config import StrictModel
from icdcoder.experiments import Experiment
from icdcoder.experiments.common import CODIESP


class SilverEvidenceConfig(StrictModel):
    data_dir: Path = CODIESP
    #: train or dev (nothing is tuned here)
    split: str = "train"
    #: the share of a term's words a sentence must hold to locate it (``data.silver_min_share``)
    min_share: list[float] = Field(default_factory=lambda: [0.5], min_length=1)


def _overlaps(span: tuple[int, int], gold) -> bool:
    return any(start < span[1] and span[0] < end for evidence in gold.evidence for start, end in evidence.pieces)


def _words(text: str, span: tuple[int, int]) -> int:
    return len(text[span[0] : span[1]].split())


def system_row(golds: list, terms: dict, system: str, min_share: float) -> dict[str, Any]:
    """What locating evidence finds for the gold codes of ``system``."""
    from icdcoder.spans.silver import locate_evidence

    found = [
        (text, gold, locate_evidence(text, terms[(gold.code, gold.system)], min_share))
        for text, gold in golds
        if gold.system == system
    ]
    located = [(text, gold, span) for text, gold, span in found if span is not None]
    on_gold = sum(_overlaps(span, gold) for _, gold, span in located)
    gold_words = [
        _words(text, piece) for text, gold, _ in found for evidence in gold.evidence for piece in evidence.pieces
    ]
    return {
        "system": system,
        "min_share": min_share,
        "codes": len(found),
        "located": len(located),
        "on_gold": on_gold,
        "precision": round(on_gold / max(len(located), 1), 3),
        "recall": round(on_gold / max(len(found), 1), 3),
        "located_words": round(mean(_words(text, span) for text, _, span in located), 1) if located else None,
        "gold_words": round(mean(gold_words), 1) if gold_words else None,
    }


def run(config: SilverEvidenceConfig) -> dict[str, Any]:
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.ontology import load_ontology
    from icdcoder.spans.silver import code_terms

    ontology = load_ontology()
    documents = load_codiesp(config.data_dir, config.split, language="en")
    golds = [(document.text, gold) for document in documents for gold in document.codes if gold.evidence]
    terms = {(gold.code, gold.system): code_terms(ontology, gold.code, gold.system) for _, gold in golds}
    rows = [
        {"split": config.split, **system_row(golds, terms, system, min_share)}
        for min_share in config.min_share
        for system in ("icd10cm", "icd10pcs")
    ]
    return {"split": f"CodiEsp {config.split} (English notes)", "rows": rows}


def _words_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| system | min share | gold codes | located | on gold | precision | recall | located words | gold words |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['system']} | {row['min_share']:g} | {row['codes']:,} | {row['located']:,} | {row['on_gold']:,} "
            f"| {row['precision']:.3f} | {row['recall']:.3f} | {_words_cell(row['located_words'])} "
            f"| {_words_cell(row['gold_words'])} |"
        )
    return "\n".join(lines) + "\n"


CAVEATS = """\
- The gold evidence of the English notes is projected from the Spanish offsets onto whole translated sentences, so a
  located span "on gold" is one inside the right sentence, not one that matches the annotated words.
- Nothing is tuned here; the English notes are CodiEsp's machine translation, not notes written in English.
"""

EXPERIMENT = Experiment(
    name="silver_evidence",
    title="evidence located from ICD terms against CodiEsp's gold evidence",
    config=SilverEvidenceConfig,
    run=run,
    table=table,
    caveats=CAVEATS,
    cost="about a minute",
)
