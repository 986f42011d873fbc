"""``icdcoder export``: a predictions file (``predict jsonl``, ``predict codiesp``'s predictions.jsonl) as a FHIR
bundle, CodiEsp TSV or canonical JSONL. Every record is checked as ``evaluate`` checks it (a bad one is named by file,
line and field) before anything is written, and each output appears whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from icdcoder.errors import InputError
from icdcoder.io import (
    atomic_write,
    check_output_dir,
    check_output_file,
    write_jsonl,
)

app = typer.Typer(no_args_is_help=True, add_completion=False)

Predictions = Annotated[Path, typer.Option("--pred", help="Predictions JSONL (predict jsonl / code --json records).")]


@app.callback()
def export() -> None:
    """Export coded notes: FHIR R4, CodiEsp TSV, canonical JSONL."""


def read_records(path: Path) -> list[dict]:
    """The records of a predictions file, each validated; a note twice is an error."""
    from icdcoder.infer.records import read_prediction_records

    return [record for record, _ in read_prediction_records(path)]


@app.command("fhir")
def export_fhir(
    pred: Predictions,
    out: Annotated[Path, typer.Option("--out", help="The FHIR R4 Bundle (JSON) to write.")],
) -> None:
    """Write a FHIR R4 Bundle of Condition (ICD-10-CM) and Procedure (ICD-10-PCS) resources; prints counts as JSON."""
    from icdcoder.export.fhir import bundle

    check_output_file(out, inputs=[pred])
    document, left_out = bundle(read_records(pred))
    with atomic_write(out) as handle:
        json.dump(document, handle, ensure_ascii=False, indent=1)
    kinds = [entry["resource"]["resourceType"] for entry in document["entry"]]
    typer.echo(
        json.dumps(
            {
                "conditions": kinds.count("Condition"),
                "procedures": kinds.count("Procedure"),
                "left_out": left_out,
                "out": str(out),
            }
        )
    )


@app.command("codiesp")
def export_codiesp(
    pred: Predictions,
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where D.tsv, P.tsv and X.tsv are written.")],
) -> None:
    """Write the records' codes as CodiEsp D.tsv, P.tsv and X.tsv; prints row counts as JSON."""
    from icdcoder.evaluate.codiesp import write_submission
    from icdcoder.export.formats import as_prediction

    check_output_dir(out_dir, inputs=[pred])
    rows = write_submission(out_dir, [as_prediction(record) for record in read_records(pred)])
    typer.echo(json.dumps({"rows": rows, "out_dir": str(out_dir)}))


@app.command("jsonl")
def export_jsonl(
    pred: Predictions,
    notes: Annotated[
        Path, typer.Option("--notes", help="The notes that were coded (canonical JSONL: id, text, language).")
    ],
    out: Annotated[
        Path,
        typer.Option("--out", help="Canonical JSONL with the codes as gold (train sft / lexicons / predict tune)."),
    ],
    lang: Annotated[str, typer.Option("--lang", help="Language of notes whose record names none (es or en).")] = "es",
) -> None:
    """Write each coded note as a canonical training note, its codes and evidence as gold; prints counts as JSON."""
    from icdcoder.data.schema import iter_documents
    from icdcoder.export.formats import canonical_lines

    check_output_file(out, inputs=[pred, notes])
    texts = {document.id: document for document in iter_documents(notes, {"language": lang})}
    records = read_records(pred)
    missing = [record["id"] for record in records if record["id"] not in texts]
    if missing:
        raise InputError(
            f"note '{missing[0]}' of the predictions is not in the notes ({len(missing)} missing)", path=notes
        )
    joined = [
        {**record, "text": texts[record["id"]].text, "language": texts[record["id"]].language} for record in records
    ]
    lines = canonical_lines(joined)
    write_jsonl(out, lines)
    typer.echo(
        json.dumps({"documents": len(lines), "codes": sum(len(line["codes"]) for line in lines), "out": str(out)})
    )
