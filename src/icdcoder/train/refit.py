"""Refit a saved coder's retriever and signals on more coded notes, keeping its settings, trees and thresholds.

The coder whose scores the experiments report learns from the CodiEsp training notes alone, so that the dev notes can
score it. Once its recipe is fixed, a coder for new notes should learn from every coded note there is: refitted on the
training and dev notes, its retriever, lexicons, concept counts, value templates, glossary and phrase words know the
dev notes' codes and wordings too. Its fusion trees and thresholds stay those fitted and tuned for the benchmarked
coder: ``benchmarks/more_training_notes.py`` measures that recipe on dev, each dev note coded by a coder refitted
without it.

The LLM adapter (switched off in the shipped coder) is copied as it is: refitting does not train it.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from icdcoder.data.schema import Document
from icdcoder.errors import InputError

#: the record ``coder.json`` keeps of a refit
REFIT_RECORD = "refit"
#: a coder folder's description, which belongs to the folder rather than to the coder it holds
README = "README.md"


def codiesp_notes(data_dir: Path, splits: Sequence[str]) -> tuple[list[Document], list[Document]]:
    """The Spanish notes of ``splits`` (with their translations) and their English versions, where a split ships
    them; a note in two splits is refused."""
    from icdcoder.data.codiesp import load_codiesp, split_dir

    if "test" in splits:
        raise InputError("the test split is never trained on", path="--splits")
    notes: list[Document] = []
    english: list[Document] = []
    for split in splits:
        notes.extend(load_codiesp(data_dir, split, with_translation=True))
        if (split_dir(data_dir, split) / "text_files_en").is_dir():
            english.extend(load_codiesp(data_dir, split, language="en"))
    repeated = len(notes) - len({note.id for note in notes})
    if repeated:
        raise InputError(f"{repeated} notes are in more than one of the splits {', '.join(splits)}", path=data_dir)
    return notes, english


def refit_coder(model: Path, out: Path, notes: Sequence[Document], english: Sequence[Document], source: dict) -> dict:
    """Write to ``out`` a copy of the coder in ``model`` whose retriever and signals are fitted on ``notes`` (and
    their English versions ``english``); returns what was refitted. ``out`` is replaced whole or not at all: the copy
    is built beside it and renamed into place. ``out``'s own ``README.md``, if any, is kept (not ``model``'s)."""
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.signals.base import TrainingNotes
    from icdcoder.infer.store import RETRIEVER_DIR, write_coder_record
    from icdcoder.train.fusion_trees import coder_fitted_on

    started = time.monotonic()
    coder = SpanPredictor.load(model, check_files=False)
    if coder.settings.use_llm:
        raise InputError("refitting keeps the LLM adapter as it is: refit a coder whose LLM is off", path=model)
    languages = {note.language for note in notes}
    if languages != {coder.settings.language}:
        raise InputError(
            f"the coder learns from '{coder.settings.language}' notes; these are {', '.join(sorted(languages))}",
            path=model,
        )
    fitted = coder_fitted_on(coder, TrainingNotes(list(notes), list(english), coder.settings.language, True))
    record = {
        **source,
        "from": model.name,
        "notes": len(notes),
        "english_notes": len(english),
        "wall_seconds": round(time.monotonic() - started),
        "kept": "settings, fusion trees and thresholds of the coder refitted",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        copy = staging / out.name
        shutil.copytree(model, copy, ignore=shutil.ignore_patterns(README))
        if (out / README).is_file():  # it says where this folder is shipped, not what it was refitted from
            shutil.copy2(out / README, copy / README)
        fitted.fitted_retriever.save(copy / RETRIEVER_DIR)
        fitted.save_signals(copy)
        write_coder_record(copy, coder.settings, {REFIT_RECORD: record})
        replace_folder(copy, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def replace_folder(new: Path, old: Path) -> None:
    """Put the folder ``new`` where ``old`` is (``old`` may not exist): ``old`` is moved aside first, put back if
    ``new`` cannot take its place, and removed only once ``new`` is in place."""
    aside = old.with_name(f".{old.name}.old")
    shutil.rmtree(aside, ignore_errors=True)  # left by a run that was killed between the two renames
    if old.exists():
        old.rename(aside)
    try:
        new.rename(old)
    except OSError:
        if aside.exists():
            aside.rename(old)
        raise
    shutil.rmtree(aside, ignore_errors=True)
