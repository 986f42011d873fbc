"""Peak memory and time of MIMIC-IV preprocessing on a synthetic, MIMIC-IV-shaped corpus.

Writes made-up ``note/discharge.csv.gz`` and ``hosp/{diagnoses,procedures}_icd.csv.gz``
in the real column schema (random filler text, Zipf-distributed ICD-9/ICD-10
codes, ~1.7 notes per patient), then runs :func:`icdcoder.data.mimic.prepare_mimic4`
in a child process and reports its peak RSS (``ru_maxrss`` of the child) and
wall time as one JSON object::

    nice -n 10 python benchmarks/perf/mimic_memory.py --notes 200000 --chars 2000

Memory depends on the number of notes, admissions and codes, not on note
length (text is streamed), so ``--chars`` only changes the run time.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NOTE_HEADER = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]
CODE_HEADER = ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"]
WORDS = (
    "patient admitted with chest pain fever cough history of hypertension diabetes denies nausea plan follow".split()
)


def _code_vocabulary(rng: random.Random, size: int) -> dict[str, list[tuple[str, str]]]:
    """Made-up undotted ICD-9 and ICD-10 diagnosis and procedure codes (``(code, kind)``)."""
    icd9 = [(f"{rng.randrange(1, 999):03d}{rng.randrange(0, 99):02d}", "dx") for _ in range(size)]
    icd9 += [(f"{rng.randrange(0, 99):02d}{rng.randrange(0, 99):02d}", "px") for _ in range(size // 5)]
    letters = "ABCDEIJKMNRZ"
    icd10 = [(f"{rng.choice(letters)}{rng.randrange(0, 99):02d}{rng.randrange(0, 999)}", "dx") for _ in range(size)]
    icd10 += [(f"0{rng.choice('BDFHJ')}{rng.randrange(1000, 9999)}Z", "px") for _ in range(size // 5)]
    return {"9": icd9, "10": icd10}


def _zipf_pick(rng: random.Random, items: list, count: int) -> list:
    """``count`` items, frequent ones far more often (index ~ exponential)."""
    return [items[min(int(rng.expovariate(1 / (len(items) / 20))), len(items) - 1)] for _ in range(count)]


def generate(folder: Path, notes: int, chars: int, seed: int) -> None:
    rng = random.Random(seed)
    filler = " ".join(rng.choice(WORDS) for _ in range(chars // 3 + 2000))
    vocabulary = _code_vocabulary(rng, 15000)
    (folder / "note").mkdir(parents=True, exist_ok=True)
    (folder / "hosp").mkdir(parents=True, exist_ok=True)
    open_gz = lambda name: gzip.open(folder / name, "wt", encoding="utf-8", newline="", compresslevel=1)  # noqa: E731
    with (
        open_gz("note/discharge.csv.gz") as nf,
        open_gz("hosp/diagnoses_icd.csv.gz") as df,
        open_gz("hosp/procedures_icd.csv.gz") as pf,
    ):
        note_writer, dx_writer, px_writer = csv.writer(nf), csv.writer(df), csv.writer(pf)
        note_writer.writerow(NOTE_HEADER)
        dx_writer.writerow(CODE_HEADER)
        px_writer.writerow(CODE_HEADER)
        subject = 10_000_000
        for index in range(notes):
            if rng.random() < 0.6:
                subject += 1
            hadm = 20_000_000 + index
            start = rng.randrange(0, len(filler) - chars)
            text = f"Note {index}.\n" + filler[start : start + chars]
            note_writer.writerow([f"{subject}-DS-{index}", subject, hadm, "DS", 1, "2180-01-01 00:00:00", "", text])
            version = "9" if rng.random() < 0.55 else "10"
            for seq, (code, kind) in enumerate(_zipf_pick(rng, vocabulary[version], rng.randint(5, 25)), start=1):
                (dx_writer if kind == "dx" else px_writer).writerow([subject, hadm, seq, code, version])


def run_child(folder: Path) -> dict:
    """Preprocess in a child process so its peak RSS is measured alone."""
    code = (
        "import json, sys\nfrom icdcoder.data.mimic import prepare_mimic4\n"
        f"s = prepare_mimic4({str(folder / 'note')!r}, {str(folder / 'hosp')!r}, {str(folder / 'out')!r})\n"
        "json.dump(s['counts'], sys.stdout)\n"
    )
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak_kb / 1024, 1), "counts": json.loads(result.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=200_000)
    parser.add_argument("--chars", type=int, default=2000, help="characters of text per note")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the synthetic files here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mimic_memory_") as tmp:
        folder = args.workdir or Path(tmp)
        started = time.perf_counter()
        generate(folder, args.notes, args.chars, args.seed)
        generated = time.perf_counter() - started
        gz_mb = (folder / "note" / "discharge.csv.gz").stat().st_size / 2**20
        report = {
            "notes": args.notes,
            "chars_per_note": args.chars,
            "discharge_gz_mb": round(gz_mb, 1),
            "generate_seconds": round(generated, 1),
            **run_child(folder),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
