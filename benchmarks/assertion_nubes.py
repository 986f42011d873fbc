"""Event-level negation and uncertainty on NUBes (Lima Lopez et al., LREC 2020; CC BY-SA 3.0 ES).

Run: ``python benchmarks/assertion_nubes.py --data-dir ../shared/data/nubes``

Prints one JSON object: for each group of folders, negated and uncertain P/R/F1 of the Spanish rules
(``icdcoder/assertion/rules/es.json``) over

* ``events``: the annotated events (DISO/PROC/SUBS/BODY/OTHER entities in a marker's scope, and morphological
  negation markers, which are their own event): see :mod:`icdcoder.assertion.nubes`;
* ``with_affirmed``: the same plus the affirmed mentions (the corpus's event forms where they occur outside every
  annotation), which also measure over-triggering.

Groups: ``tuning`` (SAMPLE-001..005, the only folders the rules were edited on), ``heldout`` (every other SAMPLE-*
folder, each also on its own) and ``IULA+``. Affirmed mentions are looked up with the event forms of the group itself.

With ``--en-cases tests/data/assertion_en.jsonl`` it also scores the English rules on those hand-written cases, per
split (``dev``: the cases the rules were written against; ``heldout``: cases written afterwards) and per trait.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

TUNING = tuple(f"SAMPLE-00{i}" for i in range(1, 6))


def groups(data_dir: Path) -> dict[str, list[Path]]:
    samples = sorted(p for p in data_dir.iterdir() if p.is_dir() and re.fullmatch(r"SAMPLE-\d+", p.name))
    out: dict[str, list[Path]] = {
        "tuning": [p for p in samples if p.name in TUNING],
        "heldout": [p for p in samples if p.name not in TUNING],
    }
    for path in out["heldout"]:
        out[path.name] = [path]
    if (data_dir / "IULA+").is_dir():
        out["IULA+"] = [data_dir / "IULA+"]
    return {name: paths for name, paths in out.items() if paths}


def english_cases(path: Path) -> dict:
    """Per-split, per-trait P/R/F1 of the English rules on a cases file (lines: id, split, text, spans with traits)."""
    from icdcoder.assertion import TRAITS, assert_spans
    from icdcoder.assertion.scoring import score_traits

    by_split: dict[str, tuple[list, list]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="The NUBes folder (SAMPLE-*/ and IULA+/).")
    parser.add_argument("--en-cases", type=Path, help="English cases JSONL (spans with gold traits) to score too.")
    args = parser.parse_args()
    from icdcoder.assertion import rules_version
    from icdcoder.assertion.nubes import load_nubes, score_documents

    result: dict = {"rules_version": {"es": rules_version("es"), "en": rules_version("en")}, "groups": {}}
    start = time.perf_counter()
    for name, paths in groups(args.data_dir).items():
        scores = score_documents(load_nubes(paths), "es")
        scores["folders"] = [p.name for p in paths]
        result["groups"][name] = scores
    if args.en_cases is not None:
        result["english_cases"] = english_cases(args.en_cases)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
