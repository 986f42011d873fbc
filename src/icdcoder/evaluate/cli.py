"""``icdcoder evaluate``: score prediction files against gold; prints one JSON object."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from icdcoder.data.schema import Document
    from icdcoder.predictor import DocumentPrediction

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
        Path | None,
        typer.Option("--train-dir", help="Training split folder, for unseen codes (default: DATA_DIR/train)."),
    ] = None,
    valid_codes_d: Annotated[
        Path | None, typer.Option("--valid-codes-d", help="Official valid diagnosis codes (TSV, code first).")
    ] = None,
    valid_codes_p: Annotated[
        Path | None, typer.Option("--valid-codes-p", help="Official valid procedure codes (TSV, code first).")
    ] = None,
) -> None:
    """Score a CodiEsp submission (D/P: MAP, P/R/F1; X: evidence P/R/F1) and print the JSON contract."""
    from icdcoder.evaluate.codiesp import score_submission, valid_code_sets

    valid = valid_code_sets((("D", valid_codes_d), ("P", valid_codes_p)))
    result = score_submission(data_dir, split, pred_dir, train_dir=train_dir, valid_codes=valid)
    typer.echo(json.dumps(result, ensure_ascii=False))


def _line_of(path: Path, doc_id: str, occurrence: int = 1) -> int | None:
    """The line of ``path`` (JSONL) holding the ``occurrence``-th record with this id: looked up only to name a
    failure, so a good file is read once."""
    from icdcoder.io import read_jsonl

    seen = 0
    for number, record in read_jsonl(path):
        if record.get("id") == doc_id:
            seen += 1
            if seen == occurrence:
                return number
    return None


def check_gold_documents(documents: Sequence[Document], path: Path) -> None:
    """A gold file holds each note once (a second record would silently replace the first)."""
    from icdcoder.errors import InputError

    seen: set[str] = set()
    for doc in documents:
        if doc.id in seen:
            raise InputError(
                f"note '{doc.id}' occurs twice in the gold file", path=path, line=_line_of(path, doc.id, 2)
            )
        seen.add(doc.id)


def check_predictions(documents: Sequence[Document], predictions: Sequence[DocumentPrediction], path: Path) -> None:
    """What a predictions file must satisfy beyond its own format, named by file, line and field:

    * every code names a known code system (:data:`~icdcoder.data.schema.CODE_SYSTEMS`): an unknown one (a typo,
      ``ICD10CM``) would otherwise be dropped from every per-system score without a word;
    * evidence of a note that is in the gold lies inside that note's text (offsets past its end cannot be a quote
      of it). Notes outside the gold have no text here and are not checked (they are not scored either).
    """
    from icdcoder.data.schema import CODE_SYSTEMS
    from icdcoder.errors import InputError

    lengths = {doc.id: len(doc.text) for doc in documents}
    for prediction in predictions:
        for index, code in enumerate(prediction.codes):
            if code.system not in CODE_SYSTEMS:
                raise InputError(
                    f"field 'codes.{index}.system': unknown code system {code.system!r} "
                    f"(expected one of {', '.join(CODE_SYSTEMS)})",
                    path=path,
                    line=_line_of(path, prediction.doc_id),
                )
            length = lengths.get(prediction.doc_id)
            if length is None:
                continue
            for kind in ("evidence", "sentence_evidence"):
                for number, evidence in enumerate(getattr(code, kind)):
                    if evidence.end > length or evidence.start > length:
                        raise InputError(
                            f"field 'codes.{index}.{kind}.{number}': offsets {evidence.start}-{evidence.end} run past "
                            f"the end of note '{prediction.doc_id}' ({length} chars)",
                            path=path,
                            line=_line_of(path, prediction.doc_id),
                        )


def codes_without_gold_system(predictions: Sequence[DocumentPrediction], ids: set[str], systems: Sequence[str]) -> dict:
    """Predicted codes of gold notes whose (known) system has no gold code at all: not scored, counted per system."""
    counts: dict[str, int] = {}
    for prediction in predictions:
        if prediction.doc_id in ids:
            for code in prediction.codes:
                if code.system not in systems:
                    counts[code.system] = counts.get(code.system, 0) + 1
    return dict(sorted(counts.items()))


@app.command("jsonl")
def jsonl(
    gold: Annotated[Path, typer.Option("--gold", help="Notes with their gold codes, canonical JSONL.")],
    pred: Annotated[Path, typer.Option("--pred", help="Predictions JSONL (`icdcoder predict jsonl`).")],
    train: Annotated[
        Path | None, typer.Option("--train", help="Training notes (canonical JSONL), for seen/unseen code bands.")
    ] = None,
) -> None:
    """Score a predictions file against gold notes, per code system: micro/macro P/R/F1, MAP, P@k/R@k, AUC,
    frequency bands with --train, evidence P/R/F1 (CodiEsp-X rule) where the gold has evidence.

    Codes of a system the gold has no code of are not scored; they are counted in 'codes_in_systems_without_gold'.
    """
    from icdcoder.data.schema import load_documents
    from icdcoder.errors import InputError
    from icdcoder.evaluate.metrics import code_frequencies, evaluate
    from icdcoder.infer.records import read_predictions

    documents = load_documents(gold)
    check_gold_documents(documents, gold)
    systems = sorted({code.system for doc in documents for code in doc.codes})
    if not systems:
        raise InputError("no gold codes: nothing to score", path=gold)
    predictions = read_predictions(pred)
    check_predictions(documents, predictions, pred)
    counts = code_frequencies(load_documents(train)) if train is not None else None
    ids = {doc.id for doc in documents}
    result = {
        "documents": len(documents),
        "predicted_documents": sum(1 for p in predictions if p.doc_id in ids),
        "predictions_outside_gold": sum(1 for p in predictions if p.doc_id not in ids),
        "codes_in_systems_without_gold": codes_without_gold_system(predictions, ids, systems),
        "by_system": {
            system: evaluate(documents, predictions, train_counts=counts, systems=[system]) for system in systems
        },
    }
    typer.echo(json.dumps(result, ensure_ascii=False))
