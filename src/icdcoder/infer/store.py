"""The files of a coder folder and of the stage-1 cache.

A coder folder holds ``coder.json`` (settings, and records such as ``files``), ``model/`` (the LLM adapter, optional),
``retriever/``, what each signal saves (``lexicon/``, ``lexicon_en/``, ``concepts.json``, ``quantities.json``;
see :mod:`icdcoder.infer.signals`) and, for a coder that fuses by trees, ``fusion_trees.json``
(:mod:`icdcoder.infer.trees`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from pydantic import ValidationError

from icdcoder.errors import InputError, first_invalid_field
from icdcoder.infer.settings import CoderSettings
from icdcoder.infer.signals import SIGNAL_FILES, SIGNALS, NoteOutputs, ScoredCode
from icdcoder.infer.trees import language_trees_file
from icdcoder.io import atomic_write, read_text, readable_json

CODER_FILE = "coder.json"
MODEL_DIR = "model"
RETRIEVER_DIR = "retriever"


def read_coder_record(directory: Path) -> tuple[dict, CoderSettings]:
    """``coder.json`` of a coder folder and the settings it holds."""
    settings_path = directory / CODER_FILE
    if not settings_path.is_file():
        raise InputError(f"not a coder folder (no {CODER_FILE})", path=directory)
    try:
        record = json.loads(read_text(settings_path))
        return record, CoderSettings.model_validate(record["settings"])
    except ValidationError as err:
        field, message = first_invalid_field(err)
        raise InputError(f"field 'settings.{field}': {message}", path=settings_path) from None
    except (json.JSONDecodeError, KeyError, ValueError) as err:
        raise InputError(f"malformed coder settings ({str(err).splitlines()[0]})", path=settings_path) from None


def with_overrides(settings: CoderSettings, overrides: dict[str, object]) -> CoderSettings:
    """``settings`` with ``overrides`` (a None keeps the saved value); a bad value is a one-line error."""
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if not overrides:
        return settings
    try:
        return CoderSettings.model_validate({**settings.model_dump(), **overrides})
    except ValidationError as err:
        field, message = first_invalid_field(err)
        raise InputError(f"{field}: {message}") from None


def write_coder_record(directory: Path, settings: CoderSettings, extra: dict | None = None) -> None:
    """Write ``coder.json``: the settings, keeping the file's other records; ``extra`` adds or replaces some."""
    path = directory / CODER_FILE
    previous = json.loads(read_text(path)) if path.is_file() else {}
    record = {**previous, **(extra or {}), "settings": json.loads(settings.model_dump_json())}
    with atomic_write(path) as handle:
        handle.write(readable_json(record) + "\n")


def check_coder_files(directory: Path, record: dict, settings: CoderSettings) -> None:
    """Raise on a coder folder that lacks a file it needs: the file of each signal its settings weigh, for any note
    language (:data:`~icdcoder.infer.signals.SIGNAL_FILES`), and each path its ``coder.json`` lists under ``files``
    (relative to the folder).

    A coder missing them would not fail, it would code with fewer signals (an install without the default coder's
    lexicons found 1 code of the sample note's 10)."""
    settings_path = directory / CODER_FILE
    named = record.get("files", [])
    if not isinstance(named, list) or not all(isinstance(name, str) and name for name in named):
        raise InputError("field 'files': expected a list of paths inside the coder folder", path=settings_path)
    needed: dict[str, str] = {}
    for language, fusion in ((settings.language, settings), *settings.by_language.items()):
        for weight, name in SIGNAL_FILES.items():
            value = getattr(fusion, weight)
            if value:
                needed.setdefault(name, f"its settings weigh the signal it feeds ({weight} {value})")
        if getattr(fusion, "fusion", None) == "trees":
            which = "" if language == settings.language else f" of '{language}' notes"
            needed.setdefault(
                language_trees_file(language, settings.language),
                f"its settings fuse signals{which} by trees (fusion trees)",
            )
    for name in named:
        needed.setdefault(name, f"{CODER_FILE} lists it under 'files'")
    for name, reason in needed.items():
        if not (directory / name).is_file():
            raise InputError(f"coder file missing: {reason}; the coder folder is incomplete", path=directory / name)


# --------------------------------------------------------------------------- stage-1 cache


def outputs_to_json(outputs: list[NoteOutputs]) -> list[dict]:
    """Stage-1 outputs as JSON records (cached to disk to re-tune without the LLM)."""
    return [{**asdict(o), "scored": [asdict(s) for s in o.scored], "dropped": dict(o.dropped)} for o in outputs]


def outputs_from_json(records: list[dict]) -> list[NoteOutputs]:
    """Stage-1 outputs from :func:`outputs_to_json` records; records written before the signals moved into
    ``signals`` (one field per signal) are read too."""
    return [
        NoteOutputs(
            doc_id=r["doc_id"],
            scored=[_scored_code(s) for s in r["scored"]],
            dropped=Counter(r["dropped"]),
            segments=r["segments"],
            llm_segments=r["llm_segments"],
        )
        for r in records
    ]


def _scored_code(record: dict) -> ScoredCode:
    if "signals" in record:
        return ScoredCode(**record)
    flat = {name: float(record.pop(name)) for name in SIGNALS if name in record}
    return ScoredCode(**record, signals={name: value for name, value in flat.items() if value})


def read_cache(path: Path) -> dict[str, NoteOutputs]:
    """Notes already coded in a stage-1 cache; a torn last line (interrupted write) is ignored."""
    if not path.is_file():
        return {}
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return {o.doc_id: o for o in outputs_from_json(records)}


def append_cache(path: Path, outputs: list[NoteOutputs]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for record in outputs_to_json(outputs):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
