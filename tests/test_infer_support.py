"""Shared helpers for the LLM coder tests: a tiny made-up corpus in the official CodiEsp layout."""

from __future__ import annotations

from pathlib import Path

#: (doc id, text, [(code, kind, quote)]) ; kind D = diagnosis (ICD-10-CM), P = procedure (ICD-10-PCS)
NOTES = [
    (
        "S0001-1",
        "Varón de 58 años con hipertensión arterial y diabetes mellitus tipo 2. "
        "Acude por dolor torácico opresivo. Se realiza radiografía de tórax sin alteraciones.",
        [
            ("i10", "D", "hipertensión arterial"),
            ("e11.9", "D", "diabetes mellitus tipo 2"),
            ("r07.9", "D", "dolor torácico"),
            ("bw03zzz", "P", "radiografía de tórax"),
        ],
    ),
    (
        "S0002-1",
        "Mujer de 40 años con infección urinaria por Escherichia coli. "
        "Antecedentes de hipertensión arterial. Se pauta tratamiento antibiótico.",
        [
            ("n39.0", "D", "infección urinaria"),
            ("b96.20", "D", "Escherichia coli"),
            ("i10", "D", "hipertensión arterial"),
        ],
    ),
    (
        "S0003-1",
        "Paciente con diabetes mellitus tipo 2 mal controlada y dolor torácico atípico. "
        "Se solicita radiografía de tórax. La evolución es favorable.",
        [
            ("e11.9", "D", "diabetes mellitus tipo 2"),
            ("r07.9", "D", "dolor torácico"),
            ("bw03zzz", "P", "radiografía de tórax"),
        ],
    ),
    (
        "S0004-1",
        "Niño de 7 años con infección urinaria de repetición. Sin otros antecedentes de interés. "
        "Se realiza radiografía de tórax normal.",
        [("n39.0", "D", "infección urinaria"), ("bw03zzz", "P", "radiografía de tórax")],
    ),
]


#: made-up English translations of NOTES, one line per Spanish sentence
TRANSLATIONS = {
    "S0001-1": "58-year-old man with arterial hypertension and type 2 diabetes mellitus.\n"
    "He comes for oppressive chest pain.\nA chest X-ray is performed without alterations.",
    "S0002-1": "40-year-old woman with urinary tract infection by Escherichia coli.\n"
    "History of arterial hypertension.\nAntibiotic treatment is prescribed.",
    "S0003-1": "Patient with poorly controlled type 2 diabetes mellitus and atypical chest pain.\n"
    "A chest X-ray is requested.\nThe evolution is favorable.",
    "S0004-1": "7-year-old boy with recurrent urinary tract infection.\nNo other history of interest.\n"
    "A normal chest X-ray is performed.",
}


def write_translations(root: Path, split: str) -> None:
    """Add ``root/split/text_files_en`` with TRANSLATIONS."""
    folder = root / split / "text_files_en"
    folder.mkdir(parents=True, exist_ok=True)
    for doc_id, english in TRANSLATIONS.items():
        (folder / f"{doc_id}.txt").write_text(english + "\n", encoding="utf-8")


def write_split(root: Path, split: str, notes=NOTES) -> None:
    """Write ``root/split`` with text_files/*.txt and {split}{D,P,X}.tsv rows for ``notes``."""
    folder = root / split
    (folder / "text_files").mkdir(parents=True, exist_ok=True)
    rows = {"D": [], "P": [], "X": []}
    for doc_id, text, codes in notes:
        (folder / "text_files" / f"{doc_id}.txt").write_text(text, encoding="utf-8")
        for code, kind, quote in codes:
            start = text.index(quote)
            rows[kind].append(f"{doc_id}\t{code}")
            label = "DIAGNOSTICO" if kind == "D" else "PROCEDIMIENTO"
            rows["X"].append(f"{doc_id}\t{label}\t{code}\t{quote}\t{start} {start + len(quote)}")
    for kind, lines in rows.items():
        (folder / f"{split}{kind}.tsv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def make_codiesp(root: Path, english: bool = False) -> Path:
    """A tiny CodiEsp-layout corpus: train = all notes, dev = the same notes (made up, no real text).

    ``english``: with ``text_files_en`` translations too.
    """
    for split in ("train", "dev"):
        write_split(root, split)
        if english:
            write_translations(root, split)
    return root
