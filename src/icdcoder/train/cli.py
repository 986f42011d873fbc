"""``icdcoder train sft``: supervised fine-tuning of the span coder from a YAML config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from icdcoder.errors import InputError


def parse_overrides(assignments: list[str]) -> dict:
    """``["a.b=3", "c=x"]`` -> ``{"a": {"b": 3}, "c": "x"}``; values are read as YAML scalars."""
    import yaml

    result: dict = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            raise InputError(f"override '{assignment}' must look like key.sub=value", path="--set")
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return result


def train_sft(
    config: Annotated[Path, typer.Option("--config", help="SFT config (configs/sft/*.yaml)")],
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint in output_dir")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a field: a.b=value (repeatable)")] = None,
    export_from: Annotated[
        Path | None, typer.Option("--export-from", help="only turn this checkpoint into a coder folder in output_dir")
    ] = None,
) -> None:
    """Fine-tune the span coder (LoRA via TRL); prints the run summary as JSON.

    The output folder is checked and locked before any work; --resume without a usable checkpoint is an error."""
    from icdcoder.config import load_config
    from icdcoder.train.coder_folder import export_checkpoint, train_coder
    from icdcoder.train.config import SftConfig

    if export_from is not None and resume:
        raise InputError("exports a checkpoint and trains nothing: it does not go with --resume", path="--export-from")
    settings = load_config(config, SftConfig, overrides=parse_overrides(set_ or []))
    if export_from is not None:
        typer.echo(
            json.dumps({"output_dir": str(export_checkpoint(settings, export_from)), "checkpoint": str(export_from)})
        )
        return
    report = train_coder(settings, resume=resume)
    summary = {
        "output_dir": str(settings.output_dir),
        "train_tokens": report.train_tokens,
        "wall_seconds": round(report.wall_seconds, 1),
        "peak_rss_mb": round(report.peak_rss_mb, 1),
        **report.extra,
    }
    typer.echo(json.dumps(summary))


def train_lexicons(
    model: Annotated[Path, typer.Option("--model", help="Saved span-coder folder; its lexicons are (re)built.")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="CodiEsp folder holding the training split.")] = Path(
        "../shared/data/codiesp"
    ),
    split: Annotated[str, typer.Option("--split", help="Training split (never dev or test).")] = "train",
    jsonl: Annotated[
        Path | None,
        typer.Option(
            "--jsonl", help="Training notes with gold codes as canonical JSONL, instead of --data-dir/--split."
        ),
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="Language of the training notes: es or en.")] = "es",
) -> None:
    """Build a coder's lexicons, concept reliabilities, value templates, glossary and phrase words from training notes
    (no LLM training); then re-tune with 'predict tune'."""
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.signals import (
        ConceptSignal,
        EnglishLexiconSignal,
        LexiconSignal,
        QuantitySignal,
    )
    from icdcoder.train.config import DataSettings
    from icdcoder.train.data import fit_coder_lexicons, load_training_documents

    if lang not in ("es", "en"):
        raise InputError(f"--lang must be es or en (got '{lang}')")
    coder = SpanPredictor.load(model, check_files=False)  # its lexicons are about to be rebuilt
    settings = DataSettings(data_dir=data_dir, split=split, documents_jsonl=jsonl, lang=lang)
    report = fit_coder_lexicons(coder, load_training_documents(settings), settings)
    coder.save_signals(model)
    lexicons = {
        "lexicon": coder.signal_of(LexiconSignal).index,
        "english_lexicon": coder.signal_of(EnglishLexiconSignal).index,
    }
    sizes = {name: len(lexicon) for name, lexicon in lexicons.items() if lexicon}
    templates = {language: len(found) for language, found in coder.signal_of(QuantitySignal).templates.items()}
    counted = {"concepts_counted": len(coder.signal_of(ConceptSignal).counts), "value_templates": templates}
    typer.echo(json.dumps({"model": str(model), "surface_forms": sizes, **counted, **report}))


def train_refit(
    model: Annotated[Path, typer.Option("--model", help="Saved span-coder folder to refit (its LLM off).")],
    out: Annotated[Path, typer.Option("--out", help="Where the refitted coder goes (replaced whole if it exists).")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="CodiEsp folder (official layout).")] = Path(
        "../shared/data/codiesp"
    ),
    splits: Annotated[
        str, typer.Option("--splits", help="Comma-separated splits whose notes it learns from (never test).")
    ] = "train,dev",
) -> None:
    """Refit a coder's retriever, lexicons and other signals on the notes of several splits, keeping its settings,
    fusion trees and thresholds (how the shipped coder is built from the benchmarked one); prints what was refitted
    as JSON."""
    from icdcoder.io import check_output_dir, output_lock
    from icdcoder.train.refit import codiesp_notes, refit_coder

    names = [name.strip() for name in splits.split(",") if name.strip()]
    if not names:
        raise InputError("name at least one split", path="--splits")
    check_output_dir(out, inputs=[model, data_dir])
    notes, english = codiesp_notes(data_dir, names)
    with output_lock(out):
        record = refit_coder(model, out, notes, english, {"splits": names})
    typer.echo(json.dumps({"out": str(out), **record}))
