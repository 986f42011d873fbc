"""``icdcoder evaluate``: score prediction files against gold; prints one JSON object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def evaluate() -> None:
    """Score predictions against gold annotations."""


@app.command("codiesp")
def codiesp(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="CodiEsp folder holding <split>/<split>{D,P,X}.tsv.")],
    split: Annotated[str, typer.Option("--split", help="Split to score against, e.g. dev.")],
    pred_dir: Annotated[Path, typer.Option("--pred-dir", help="Folder with D.tsv, P.tsv, X.tsv.")],
    train_dir: Annotated[
        Optional[Path],
        typer.Option("--train-dir", help="Training split folder, for unseen codes (default: DATA_DIR/train)."),
    ] = None,
    valid_codes_d: Annotated[
        Optional[Path], typer.Option("--valid-codes-d", help="Official valid diagnosis codes (TSV, code first).")
    ] = None,
    valid_codes_p: Annotated[
        Optional[Path], typer.Option("--valid-codes-p", help="Official valid procedure codes (TSV, code first).")
    ] = None,
) -> None:
    """Score a CodiEsp submission (D/P: MAP, P/R/F1; X: evidence P/R/F1) and print the JSON contract."""
    from icdcoder.evaluate.codiesp import score_submission, valid_code_sets

    valid = valid_code_sets((("D", valid_codes_d), ("P", valid_codes_p)))
    result = score_submission(data_dir, split, pred_dir, train_dir=train_dir, valid_codes=valid)
    typer.echo(json.dumps(result, ensure_ascii=False))


@app.command("jsonl")
def jsonl(
    gold: Annotated[Path, typer.Option("--gold", help="Notes with their gold codes, canonical JSONL.")],
    pred: Annotated[Path, typer.Option("--pred", help="Predictions JSONL (`icdcoder predict jsonl`).")],
    train: Annotated[
        Optional[Path], typer.Option("--train", help="Training notes (canonical JSONL), for seen/unseen code bands.")
    ] = None,
) -> None:
    """Score a predictions file against gold notes, per code system: micro/macro P/R/F1, MAP, P@k/R@k, AUC,
    frequency bands with --train, evidence P/R/F1 (CodiEsp-X rule) where the gold has evidence."""
    from icdcoder.data.schema import load_documents
    from icdcoder.errors import InputError
    from icdcoder.evaluate.metrics import code_frequencies, evaluate
    from icdcoder.infer.records import read_predictions

    documents = load_documents(gold)
    systems = sorted({code.system for doc in documents for code in doc.codes})
    if not systems:
        raise InputError("no gold codes: nothing to score", path=gold)
    predictions = read_predictions(pred)
    counts = code_frequencies(load_documents(train)) if train is not None else None
    ids = {doc.id for doc in documents}
    result = {
        "documents": len(documents),
        "predicted_documents": sum(1 for p in predictions if p.doc_id in ids),
        "predictions_outside_gold": sum(1 for p in predictions if p.doc_id not in ids),
        "by_system": {system: evaluate(documents, predictions, train_counts=counts, systems=[system]) for system in systems},
    }
    typer.echo(json.dumps(result, ensure_ascii=False))
