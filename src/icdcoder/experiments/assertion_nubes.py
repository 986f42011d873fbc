"""Negated and uncertain findings: the Spanish assertion rules on NUBes, the English ones on our own cases.

NUBes (Lima et al., LREC 2020; CC BY-SA 3.0 ES) is scored at event level (:mod:`icdcoder.assertion.nubes`): the
annotated events in a marker's scope, and morphological negation markers, which are their own event. Groups:
``tuning`` (SAMPLE-001..005, the only folders the Spanish rules were edited on), ``heldout`` (every other SAMPLE-*
folder) and ``IULA+``. ``with_affirmed`` also counts the corpus's own event words outside every annotation as
affirmed items, so a negation that runs too far costs precision. The English rules are scored on the hand-written
cases of ``en_cases``, per split (``dev``: the cases the rules were written against; ``heldout``: written afterwards).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from icdcoder.config import StrictModel
from icdcoder.experiments import Experiment
from icdcoder.io import read_text

#: the folders the Spanish rules were written on
TUNING = tuple(f"SAMPLE-00{i}" for i in range(1, 6))


class AssertionConfig(StrictModel):
    data_dir: Path = Path("../shared/data/nubes")
    #: English cases (JSONL: id, split, text, spans with gold traits); None: Spanish only
    en_cases: Path | None = Path("tests/data/assertion_en.jsonl")


def nubes_groups(data_dir: Path) -> dict[str, list[Path]]:
    """The folder groups scored: tuning, held out (and each held-out folder alone), IULA+."""
    from icdcoder.errors import InputError

    if not Path(data_dir).is_dir():
        raise InputError("NUBes folder not found (SAMPLE-*/ and IULA+/)", path=data_dir)
    samples = sorted(p for p in Path(data_dir).iterdir() if p.is_dir() and re.fullmatch(r"SAMPLE-\d+", p.name))
    groups: dict[str, list[Path]] = {
        "tuning": [p for p in samples if p.name in TUNING],
        "heldout": [p for p in samples if p.name not in TUNING],
    }
    if (Path(data_dir) / "IULA+").is_dir():
        groups["IULA+"] = [Path(data_dir) / "IULA+"]
    return {name: paths for name, paths in groups.items() if paths}


def english_cases(path: Path) -> dict[str, Any]:
    """Per-split, per-trait P/R/F1 of the English rules on a cases file."""
    from icdcoder.assertion import TRAITS, assert_spans
    from icdcoder.assertion.scoring import score_traits

    by_split: dict[str, tuple[list, list]] = {}
    for line in read_text(path).splitlines():
        if not line.strip():
            continue
        case = json.loads(line)
        gold, predicted = by_split.setdefault(case.get("split", "all"), ([], []))
        gold += [span["traits"] for span in case["spans"]]
        predicted += assert_spans(case["text"], [(span["start"], span["end"]) for span in case["spans"]], "en")
    return {
        split: {"spans": len(gold), "scores": score_traits(gold, predicted, TRAITS)}
        for split, (gold, predicted) in by_split.items()
    }


def run(config: AssertionConfig) -> dict[str, Any]:
    from icdcoder.assertion import rules_version
    from icdcoder.assertion.nubes import load_nubes, score_documents

    groups = {}
    for name, paths in nubes_groups(config.data_dir).items():
        groups[name] = score_documents(load_nubes(paths), "es") | {"folders": [p.name for p in paths]}
    result: dict[str, Any] = {
        "split": "NUBes (Spanish) by folder group" + ("; English hand-written cases" if config.en_cases else ""),
        "rules_version": {"es": rules_version("es"), "en": rules_version("en")},
        "groups": groups,
    }
    if config.en_cases is not None:
        result["english_cases"] = english_cases(config.en_cases)
    return result


def _f1(scores: dict[str, Any], trait: str) -> str:
    return f"{scores[trait]['f1']:.3f}" if trait in scores else "-"


GROUP_LABELS = {
    "tuning": "SAMPLE-001..005 (rules written here)",
    "heldout": "other SAMPLE folders (held out)",
    "IULA+": "IULA+ (held out)",
}


def table(results: dict[str, Any]) -> str:
    lines = [
        "| corpus | items | negated F1 | uncertain F1 | with affirmed mentions: negated F1 | uncertain F1 |",
        "|---|---|---|---|---|---|",
    ]
    for name, group in results["groups"].items():
        lines.append(
            f"| NUBes {GROUP_LABELS.get(name, name)} | {group['items']['event'] + group['items']['morph']:,} "
            f"| {_f1(group['events'], 'negated')} | {_f1(group['events'], 'uncertain')} "
            f"| {_f1(group['with_affirmed'], 'negated')} | {_f1(group['with_affirmed'], 'uncertain')} |"
        )
    english = results.get("english_cases") or {}
    if english:
        traits = ("negated", "uncertain", "historical", "hypothetical", "family")
        lines += [
            "",
            "| English cases | spans | " + " | ".join(f"{t} F1" for t in traits) + " |",
            "|---|---|" + "---|" * len(traits),
        ]
        for split, found in english.items():
            lines.append(
                f"| {split} | {found['spans']} | " + " | ".join(_f1(found["scores"], t) for t in traits) + " |"
            )
    return "\n".join(lines) + "\n"


CAVEATS = """\
- The Spanish rules were written reading SAMPLE-001..005 only; the other folders and IULA+ are held out from rule
  writing (the same annotators and guidelines, so not an out-of-domain test).
- NUBes annotates negation and uncertainty only; historical, hypothetical and family are not scored on it.
- The English cases are our own (`tests/data/assertion_en.jsonl`); the `heldout` ones were seen once when scored, then
  general bugs were fixed, so they are no longer blind.
"""

EXPERIMENT = Experiment(
    name="assertion_nubes",
    title="negation and uncertainty of the assertion rules (NUBes; English cases)",
    config=AssertionConfig,
    run=run,
    table=table,
    caveats=CAVEATS,
    cost="about a minute",
)
