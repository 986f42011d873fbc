"""``icdcoder data``: inspect and export datasets (machine-readable JSON on stdout)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from icdcoder.data.prepare_cli import prepare_app

app = typer.Typer(no_args_is_help=True, help="Inspect and export datasets.")
stats_app = typer.Typer(no_args_is_help=True, help="Print dataset statistics as one JSON object.")
export_app = typer.Typer(no_args_is_help=True, help="Write a dataset split as canonical JSONL.")
app.add_typer(stats_app, name="stats")
app.add_typer(export_app, name="export")
app.add_typer(prepare_app, name="prepare")

DataDir = typer.Option(..., "--data-dir", help="CodiEsp folder holding train/ and dev/.")
Split = typer.Option(..., "--split", help="Split name: train or dev.")


@stats_app.command("codiesp")
def stats_codiesp(data_dir: Path = DataDir, split: str = Split) -> None:
    """Counts of documents, D/P/X rows and X spans that slice the text exactly."""
    from icdcoder.data.codiesp import codiesp_stats

    typer.echo(json.dumps(codiesp_stats(data_dir, split), ensure_ascii=False))


@export_app.command("codiesp")
def export_codiesp(
    data_dir: Path = DataDir,
    split: str = Split,
    lang: str = typer.Option(
        "es", "--lang", help="es: Spanish with X offsets; en: English MT, sentence-level evidence."
    ),
    out: Path = typer.Option(..., "--out", help="JSONL file to write (atomically)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    translation: bool = typer.Option(
        False, "--translation/--no-translation", help="Spanish notes: keep their English translation (text_files_en)."
    ),
    labels: bool = typer.Option(
        True,
        "--labels/--no-labels",
        help="Read the D/P/X tables; --no-labels: the notes alone (a split without them: background).",
    ),
) -> None:
    """Export one split; prints {"documents": N, "codes": M, "out": PATH}."""
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.data.schema import save_documents
    from icdcoder.io import check_output_file

    check_output_file(out)
    documents = load_codiesp(
        data_dir,
        split,
        language=lang,
        progress=not quiet,
        with_translation=translation and lang == "es",
        labelled=labels,
    )
    save_documents(out, documents)
    codes = sum(len(doc.codes) for doc in documents)
    typer.echo(json.dumps({"documents": len(documents), "codes": codes, "out": str(out)}))
