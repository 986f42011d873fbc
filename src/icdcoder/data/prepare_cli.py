"""``icdcoder data prepare``: credentialed MIMIC files the user brings -> canonical JSONL splits.

Each command streams its inputs, writes every output file atomically, shows a
progress bar on stderr and prints one JSON summary on stdout.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

prepare_app = typer.Typer(no_args_is_help=True, help="Prepare MIMIC-III, MIMIC-IV and MDACE (files you bring).")

OutDir = typer.Option(..., "--out-dir", help="Folder for the JSONL splits and a summary JSON.")
Quiet = typer.Option(False, "--quiet", help="No progress bar.")


@prepare_app.command("mimic3")
def mimic3(
    mimic_dir: Path = typer.Option(
        ..., "--mimic-dir", help="MIMIC-III folder: NOTEEVENTS, DIAGNOSES_ICD, PROCEDURES_ICD (.csv.gz or .csv)."
    ),
    splits_dir: Path = typer.Option(
        ..., "--splits-dir", help="CAML split files {train,dev,test}_{full,50}_hadm_ids.csv."
    ),
    out_dir: Path = OutDir,
    paper_top50: bool = typer.Option(
        False, "--paper-top50", help="Use CAML's published top-50 list instead of recounting."
    ),
    quiet: bool = Quiet,
) -> None:
    """CAML MIMIC-III full and top-50 (discharge summaries per admission, ICD-9 dx+px)."""
    from icdcoder.data.mimic import prepare_mimic3
    from icdcoder.io import check_output_dir

    check_output_dir(out_dir, inputs=[mimic_dir, splits_dir])
    summary = prepare_mimic3(mimic_dir, splits_dir, out_dir, paper_top50=paper_top50, progress=not quiet)
    typer.echo(json.dumps(summary, ensure_ascii=False))


@prepare_app.command("mimic4")
def mimic4(
    note_dir: Path = typer.Option(..., "--note-dir", help="MIMIC-IV-Note folder holding discharge.csv.gz."),
    hosp_dir: Path = typer.Option(..., "--hosp-dir", help="MIMIC-IV hosp folder: diagnoses_icd, procedures_icd."),
    out_dir: Path = OutDir,
    min_code_count: int = typer.Option(
        10, "--min-code-count", min=1, help="Drop codes on fewer notes (Edin et al.: 10)."
    ),
    split_csv: Path | None = typer.Option(None, "--split-csv", help="hadm_id,split CSV to use instead of stratifying."),
    seed: int = typer.Option(10, "--seed", help="Seed for ties in the stratified split."),
    quiet: bool = Quiet,
) -> None:
    """Edin et al. MIMIC-IV ICD-9 and ICD-10 (one document per discharge note, patient-level splits)."""
    from icdcoder.data.mimic import prepare_mimic4
    from icdcoder.io import check_output_dir

    check_output_dir(out_dir, inputs=[note_dir, hosp_dir])
    summary = prepare_mimic4(
        note_dir, hosp_dir, out_dir, min_code_count=min_code_count, split_csv=split_csv, seed=seed, progress=not quiet
    )
    typer.echo(json.dumps(summary, ensure_ascii=False))


@prepare_app.command("mdace")
def mdace(
    mdace_dir: Path = typer.Option(..., "--mdace-dir", help="MDACE data folder (e.g. data/Inpatient/ICD-10/1.0)."),
    noteevents: Path = typer.Option(..., "--noteevents", help="MIMIC-III NOTEEVENTS.csv(.gz)."),
    out_dir: Path = OutDir,
    splits_dir: Path | None = typer.Option(None, "--splits-dir", help="MDACE splits folder (e.g. splits/Inpatient)."),
    split_prefix: str = typer.Option("MDace-ev", "--split-prefix", help="Split files <prefix>-{train,val,test}.csv."),
    unit: str = typer.Option("note", "--unit", help="One document per 'note' or per 'admission'."),
) -> None:
    """MDACE evidence spans joined to NOTEEVENTS; writes {train,dev,test}.jsonl (or all.jsonl without splits)."""
    from icdcoder.data.mdace import documents_by_split, load_mdace, read_mdace_splits
    from icdcoder.data.schema import save_documents
    from icdcoder.io import check_output_dir

    check_output_dir(out_dir, inputs=[mdace_dir])
    splits = read_mdace_splits(splits_dir, split_prefix) if splits_dir is not None else None
    documents = load_mdace(mdace_dir, noteevents, unit=unit, splits=splits)  # type: ignore[arg-type]
    written = {}
    for split, group in sorted(documents_by_split(documents).items()):
        path = out_dir / f"{split}.jsonl"
        save_documents(path, group)
        written[str(path)] = len(group)
    evidence = sum(len(gold.evidence) for doc in documents for gold in doc.codes)
    summary = {"dataset": "mdace", "documents": len(documents), "evidence_spans": evidence, "files": written}
    typer.echo(json.dumps(summary))
