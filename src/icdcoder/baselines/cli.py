"""``icdcoder train baseline``: train a registered baseline on CodiEsp or on notes as JSONL, and save it.

Heavy imports (scikit-learn, the coders) happen inside the command so that
``icdcoder --help`` stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

DEFAULT_DATA_DIR = Path(os.environ.get("ICDCODER_CODIESP_DIR", "../shared/data/codiesp"))


def train_baseline(
    name: str = typer.Argument(..., help="Registered system name: tfidf, dictionary, laat, plm, prompt."),
    config: Path | None = typer.Option(None, "--config", help="YAML settings of the system (configs/baselines/)."),
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="CodiEsp folder holding train/ and dev/."),
    lang: str = typer.Option("es", "--lang", help="es: Spanish notes; en: English machine translation."),
    train_split: str = typer.Option("train", "--train-split", help="Split to train on."),
    tune_split: str = typer.Option("dev", "--tune-split", help="Split for thresholds / model selection ('' = none)."),
    train_jsonl: Path | None = typer.Option(
        None, "--train-jsonl", help="Training notes as canonical JSONL, instead of --data-dir/--train-split."
    ),
    tune_jsonl: Path | None = typer.Option(
        None,
        "--tune-jsonl",
        help="Tuning notes as canonical JSONL, instead of --tune-split (with --train-jsonl: none unless given).",
    ),
    out: Path = typer.Option(..., "--out", help="Folder to save the trained system into."),
) -> None:
    """Train a baseline; prints {"system", "out", "fit_report"} as JSON. The --out folder is checked and locked
    before any work."""
    from icdcoder.baselines.base import build_predictor
    from icdcoder.errors import InputError
    from icdcoder.io import check_output_dir, output_lock
    from icdcoder.registry import predictor_class

    if lang not in ("es", "en"):
        raise InputError(f"--lang must be 'es' or 'en', not {lang!r}")
    predictor = build_predictor(predictor_class(name), config)  # settings only: a bad config fails here, cheaply
    inputs = [config, train_jsonl, tune_jsonl] + ([] if train_jsonl else [data_dir])
    with output_lock(check_output_dir(out, inputs=inputs)):
        _fit_and_save(predictor, name, data_dir, lang, train_split, tune_split, train_jsonl, tune_jsonl, out)


def _fit_and_save(predictor, name, data_dir, lang, train_split, tune_split, train_jsonl, tune_jsonl, out) -> None:
    from dataclasses import asdict

    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.data.schema import load_documents

    defaults = {"language": lang}
    train = load_documents(train_jsonl, defaults) if train_jsonl else load_codiesp(data_dir, train_split, language=lang)
    if tune_jsonl:
        tune = load_documents(tune_jsonl, defaults)
    elif tune_split and not train_jsonl:
        tune = load_codiesp(data_dir, tune_split, language=lang)
    else:
        tune = None
    report = predictor.fit(train, tune)
    predictor.save(out)
    typer.echo(json.dumps({"system": name, "out": str(out), "fit_report": asdict(report)}, ensure_ascii=False))
