"""What the code-validity layer costs per note, and what it finds, on a predictions file.

    icdcoder predict codiesp --data-dir ../shared/data/codiesp --split dev --out-dir P --profile codiesp
    nice -n 10 python benchmarks/perf/validity_speed.py P/predictions.jsonl

Times :func:`icdcoder.infer.profiles.add_validity` and :func:`~icdcoder.infer.profiles.flag_integral_symptoms` over
every record (the first note, which loads the code sets, reported apart; then the best of three passes), and counts the
codes by validity problem, the codes in an Excludes1 pair and the symptoms flagged integral. Prints one JSON object.
Not a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path, help="A predictions JSONL file (predict jsonl / predict codiesp).")
    args = parser.parse_args()
    from icdcoder.infer.profiles import add_validity, flag_integral_symptoms

    records = [json.loads(line) for line in args.predictions.read_text(encoding="utf-8").splitlines() if line.strip()]
    start = time.perf_counter()
    add_validity(records[0]["codes"])
    first_s = time.perf_counter() - start
    passes = []
    for _ in range(3):
        start = time.perf_counter()
        for record in records:
            add_validity(record["codes"])
            flag_integral_symptoms(record["codes"])
        passes.append(time.perf_counter() - start)
    codes = [code for record in records for code in record["codes"]]
    problems = Counter(code["validity"]["problem"] or "billable" for code in codes)
    print(
        json.dumps(
            {
                "notes": len(records),
                "codes": len(codes),
                "first_note_s": round(first_s, 3),
                "ms_per_note": round(min(passes) * 1000 / len(records), 2),
                "validity": dict(problems.most_common()),
                "codes_in_excludes1_pairs": sum(bool(code["validity"]["excludes1"]) for code in codes),
                "integral_symptoms": sum(bool(code.get("integral_to")) for code in codes),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
