"""A synthetic archive of discharge summaries for scale tests: MIMIC-IV-shaped notes made of real clinical sentences.

No MIMIC text is used. Each note has the section headings of a MIMIC-IV discharge summary, filled with English
sentences of CodiEsp clinical cases (the ``text_files_en`` translations of the splits named, train by default: never
the test split), drawn at random; its length in words follows a log-normal law with the median and spread of MIMIC-IV
discharge summaries (median ~1,900 words; most between ~900 and ~4,000). A seed fixes the archive, so that a benchmark
can be rerun on the same notes. The notes are canonical JSONL records (``id``, ``text``, ``language: en``): any coding
command reads them.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

from icdcoder.errors import InputError
from icdcoder.io import atomic_write, iter_lines

#: median words of a note, and the spread (sigma of the log) of the log-normal law of note lengths
MEDIAN_WORDS = 1900
LOG_SPREAD = 0.45
#: note lengths are kept within these bounds (words)
MIN_WORDS, MAX_WORDS = 300, 9000
#: the splits a generator may read: never test
ALLOWED_SPLITS = ("train", "dev", "background")
#: the sections of a MIMIC-IV discharge summary, in order, with the share of the note's words each gets
SECTIONS = (
    ("Chief Complaint", 0.02),
    ("Major Surgical or Invasive Procedure", 0.03),
    ("History of Present Illness", 0.22),
    ("Past Medical History", 0.08),
    ("Social History", 0.02),
    ("Family History", 0.02),
    ("Physical Exam", 0.10),
    ("Pertinent Results", 0.14),
    ("Brief Hospital Course", 0.27),
    ("Medications on Admission", 0.03),
    ("Discharge Medications", 0.03),
    ("Discharge Diagnosis", 0.02),
    ("Discharge Instructions", 0.02),
)
#: the heading block MIMIC-IV notes open with (their de-identified fields are ``___``)
HEADER = "Name:  ___                     Unit No:   ___\n\nAdmission Date:  ___              Discharge Date:   ___\n\nSex:   {sex}\n\nService: MEDICINE\n"


def english_sentences(codiesp_dir: str | Path, splits: Sequence[str] = ("train",)) -> list[str]:
    """The English sentences (one per line of ``text_files_en``) of the named CodiEsp splits, with at least 4 words."""
    sentences: list[str] = []
    for split in splits:
        if split not in ALLOWED_SPLITS:
            raise InputError(f"the synthetic archive reads {', '.join(ALLOWED_SPLITS)} only (got '{split}')")
        folder = Path(codiesp_dir) / split / "text_files_en"
        if not folder.is_dir():
            raise InputError("no English translations here (text_files_en)", path=folder)
        for path in sorted(folder.glob("*.txt")):
            sentences.extend(line.strip() for _, line in iter_lines(path) if len(line.split()) >= 4)
    if not sentences:
        raise InputError("no English sentences found", path=Path(codiesp_dir))
    return sentences


def note_lengths(count: int, seed: int) -> list[int]:
    """``count`` note lengths in words, log-normal around ``MEDIAN_WORDS``."""
    rng = random.Random(seed)
    return [
        min(MAX_WORDS, max(MIN_WORDS, round(rng.lognormvariate(math.log(MEDIAN_WORDS), LOG_SPREAD))))
        for _ in range(count)
    ]


def synthetic_note(sentences: Sequence[str], words: int, rng: random.Random) -> str:
    """One discharge summary of about ``words`` words: the heading block, then each section filled to its share."""
    parts = [HEADER.format(sex=rng.choice("MF"))]
    for title, share in SECTIONS:
        budget = max(1, round(words * share))
        body: list[str] = []
        while budget > 0:
            sentence = rng.choice(sentences)
            body.append(sentence)
            budget -= len(sentence.split())
        parts.append(f"{title}:\n" + " ".join(body) + "\n")
    return "\n".join(parts)


def synthetic_archive(sentences: Sequence[str], count: int, seed: int = 0) -> Iterator[dict]:
    """``count`` canonical JSONL records (``id``, ``text``, ``language``), the same for the same seed."""
    rng = random.Random(seed + 1)
    for number, words in enumerate(note_lengths(count, seed), start=1):
        yield {"id": f"synthetic-{number:07d}", "text": synthetic_note(sentences, words, rng), "language": "en"}


def write_synthetic_archive(
    codiesp_dir: str | Path, out: str | Path, count: int, seed: int = 0, splits: Sequence[str] = ("train",)
) -> Path:
    """Write ``count`` synthetic notes to ``out`` (JSONL, atomically); returns ``out``."""
    if count < 1:
        raise InputError(f"the archive needs at least one note (got {count})")
    sentences = english_sentences(codiesp_dir, splits)
    with atomic_write(out) as handle:
        for record in synthetic_archive(sentences, count, seed):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return Path(out)
