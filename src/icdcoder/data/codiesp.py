"""CodiEsp (CLEF eHealth 2020) in its official layout -> canonical documents.

A split folder ``<data_dir>/<split>/`` holds ``text_files/*.txt`` (Spanish notes),
``text_files_en/*.txt`` (machine translation, one sentence a line, no offsets),
``<split>D.tsv`` and ``<split>P.tsv`` (``doc<TAB>code``) and ``<split>X.tsv``
(``doc<TAB>DIAGNOSTICO|PROCEDIMIENTO<TAB>code<TAB>reference<TAB>"s e" or "s1 e1;s2 e2"``).

Spanish documents carry the X character offsets as evidence. English documents
carry sentence-level evidence projected through a sentence alignment (see
:mod:`icdcoder.data.align`). Gold codes are kept even when an ontology does not
know them; every irregularity in the files is counted, never silently dropped.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from icdcoder.data.align import AlignedDocument, align_document, numbers_agree, project_pieces
from icdcoder.data.schema import Document, Evidence, GoldCode
from icdcoder.errors import InputError
from icdcoder.io import iter_lines, read_text
from icdcoder.ontology import normalize_code

log = logging.getLogger(__name__)

LANGUAGES = ("es", "en")
LABEL_SYSTEMS = {"DIAGNOSTICO": "icd10cm", "PROCEDIMIENTO": "icd10pcs"}
Pieces = tuple[tuple[int, int], ...]
#: (Spanish evidence, English text, start, end) -> the English words translating it in [start, end), if found
Narrowing = Callable[[str, str, int, int], tuple[int, int] | None]


@dataclass(frozen=True)
class XRow:
    """One CodiEsp-X annotation: a code with the text span that supports it."""

    doc_id: str
    system: str
    code: str
    reference: str
    pieces: Pieces
    line: int


@dataclass
class _SplitData:
    """A parsed split: Spanish documents plus the counts ``codiesp_stats`` reports."""

    documents: list[Document]
    counts: Counter


def split_dir(data_dir: str | Path, split: str) -> Path:
    """The folder of one split; a missing folder is an input error."""
    folder = Path(data_dir) / split
    if not folder.is_dir():
        raise InputError(f"CodiEsp split folder '{split}' not found", path=folder)
    return folder


def _columns(line: str, expected: int, path: Path, number: int) -> list[str]:
    columns = line.split("\t")
    if len(columns) != expected:
        raise InputError(f"expected {expected} tab-separated columns, found {len(columns)}", path=path, line=number)
    if not all(column.strip() for column in columns[:3]):
        raise InputError("empty column", path=path, line=number)
    return [column.strip() for column in columns]


def iter_code_rows(path: Path, system: str) -> Iterator[tuple[int, str, str]]:
    """Rows of a D or P table as ``(line_number, document_id, canonical_code)``."""
    for number, line in iter_lines(path):
        if line.strip():
            doc_id, code = _columns(line, 2, path, number)
            yield number, doc_id, normalize_code(code, system)


def parse_position(field_text: str, path: Path, number: int) -> Pieces:
    """Parse ``"s e"`` or ``"s1 e1;s2 e2"`` into ``((s, e), ...)``; empty pieces (``"9 9"``) are dropped."""
    pieces = []
    for piece in field_text.split(";"):
        bounds = piece.split()
        if len(bounds) != 2 or not all(bound.isascii() and bound.isdigit() for bound in bounds):
            raise InputError(f"offsets must be 'start end' integers, got {field_text!r}", path=path, line=number)
        start, end = int(bounds[0]), int(bounds[1])
        if end < start:
            raise InputError(f"reversed offsets {field_text!r}", path=path, line=number)
        pieces.append((start, end))
    non_empty = tuple(piece for piece in pieces if piece[0] < piece[1])
    if not non_empty:
        raise InputError(f"empty offsets {field_text!r}", path=path, line=number)
    return non_empty


def read_x_table(path: Path) -> list[XRow]:
    """Read an X table into rows with canonical codes and parsed offsets."""
    rows = []
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        doc_id, label, code, reference, position = _columns(line, 5, path, number)
        if label not in LABEL_SYSTEMS:
            raise InputError(f"unknown label {label!r} (expected DIAGNOSTICO or PROCEDIMIENTO)", path=path, line=number)
        system = LABEL_SYSTEMS[label]
        pieces = parse_position(position, path, number)
        rows.append(XRow(doc_id, system, normalize_code(code, system), reference, pieces, number))
    return rows


def _squash(text: str) -> str:
    return "".join(text.split())


def _table_path(folder: Path, split: str, kind: str) -> Path:
    path = folder / f"{split}{kind}.tsv"
    if not path.is_file():
        raise InputError(f"CodiEsp {kind} table not found", path=path)
    return path


def _read_texts(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        raise InputError("text folder not found", path=folder)
    return {path.stem: read_text(path) for path in sorted(folder.glob("*.txt"))}


def _check_document_known(doc_id: str, texts: dict[str, str], path: Path, number: int) -> None:
    if doc_id not in texts:
        raise InputError(f"document {doc_id!r} has no text file", path=path, line=number)


def load_codiesp_labels(data_dir: str | Path, split: str) -> dict[str, list[tuple[str, str]]]:
    """Fast path: document id -> ``[(code, system), ...]`` (file order, no duplicates) from D and P only."""
    folder = split_dir(data_dir, split)
    labels: dict[str, dict[tuple[str, str], None]] = defaultdict(dict)
    for kind, system in (("D", "icd10cm"), ("P", "icd10pcs")):
        for _, doc_id, code in iter_code_rows(_table_path(folder, split, kind), system):
            labels[doc_id][(code, system)] = None
    return {doc_id: list(codes) for doc_id, codes in labels.items()}


def _evidence_by_code(
    rows: Iterable[XRow], texts: dict[str, str], path: Path, counts: Counter
) -> dict[tuple[str, str, str], list[Evidence]]:
    """Check each X row against its text and group its evidence by (doc, system, code)."""
    evidence: dict[tuple[str, str, str], list[Evidence]] = defaultdict(list)
    for row in rows:
        _check_document_known(row.doc_id, texts, path, row.line)
        text = texts[row.doc_id]
        if max(end for _, end in row.pieces) > len(text):
            raise InputError(f"offsets {row.pieces} run past the text ({len(text)} chars)", path=path, line=row.line)
        sliced = " ".join(text[start:end] for start, end in row.pieces)
        counts["X_spans_exact" if _squash(sliced) == _squash(row.reference) else "X_spans_mismatched"] += 1
        counts["X_discontinuous"] += len(row.pieces) > 1
        evidence[(row.doc_id, row.system, row.code)].append(Evidence(pieces=row.pieces))
    return evidence


def _load_spanish(data_dir: str | Path, split: str) -> _SplitData:
    folder = split_dir(data_dir, split)
    texts = _read_texts(folder / "text_files")
    counts: Counter = Counter()
    tables = {kind: _table_path(folder, split, kind) for kind in ("D", "P", "X")}
    gold: dict[str, dict[tuple[str, str], None]] = {doc_id: {} for doc_id in texts}
    for kind, system in (("D", "icd10cm"), ("P", "icd10pcs")):
        for number, doc_id, code in iter_code_rows(tables[kind], system):
            _check_document_known(doc_id, texts, tables[kind], number)
            counts[f"{kind}_rows"] += 1
            counts[f"{kind}_duplicates"] += (code, system) in gold[doc_id]
            gold[doc_id][(code, system)] = None
    rows = read_x_table(tables["X"])
    counts["X_rows"] = len(rows)
    evidence = _evidence_by_code(rows, texts, tables["X"], counts)
    for doc_id, system, code in evidence:
        if (code, system) not in gold[doc_id]:
            counts["X_codes_not_in_DP"] += 1
            gold[doc_id][(code, system)] = None
    documents = [
        Document(
            id=doc_id,
            text=text,
            language="es",
            source="codiesp",
            split=split,
            codes=tuple(
                GoldCode(code=code, system=system, evidence=tuple(evidence.get((doc_id, system, code), ())))
                for code, system in gold[doc_id]
            ),
        )
        for doc_id, text in texts.items()
    ]
    counts["documents"] = len(documents)
    if counts["X_spans_mismatched"] or counts["X_codes_not_in_DP"]:
        log.warning(
            "%s/%s: %d X references differ from the text they slice, %d X codes not in D/P",
            Path(data_dir).name,
            split,
            counts["X_spans_mismatched"],
            counts["X_codes_not_in_DP"],
        )
    return _SplitData(documents, counts)


def _unlabelled_spanish(data_dir: str | Path, split: str) -> list[Document]:
    """The Spanish notes of a split, without codes."""
    texts = _read_texts(split_dir(data_dir, split) / "text_files")
    return [
        Document(id=doc_id, text=text, language="es", source="codiesp", split=split) for doc_id, text in texts.items()
    ]


def _with_translations(documents: list[Document], folder: Path) -> list[Document]:
    """The documents with their English translation attached where ``folder`` has one."""
    if not folder.is_dir():
        log.info("no English translations in %s: coding from the Spanish text alone", folder)
        return documents
    return [
        doc.model_copy(update={"translation": read_text(folder / f"{doc.id}.txt")})
        if (folder / f"{doc.id}.txt").is_file()
        else doc
        for doc in documents
    ]


def english_lines(path: Path) -> list[str]:
    """The lines of an English translation file (its trailing newline dropped)."""
    return read_text(path).splitlines()


def to_english(document: Document, aligned: AlignedDocument, narrow: Narrowing | None = None) -> Document:
    """The English twin of a Spanish document: MT text with sentence-level projected evidence.

    ``narrow(spanish evidence, English text, start, end)``: the words of the projected lines ``[start, end)`` that
    translate the evidence, when it finds them (a glossary's :meth:`~icdcoder.spans.translate.WordTranslator.project`);
    without it, or where it finds none, the evidence is the whole lines.
    """
    codes = []
    projected = total = 0
    for gold in document.codes:
        evidence = []
        for item in gold.evidence:
            total += 1
            pieces = project_pieces(aligned, item.pieces)
            if pieces:
                projected += 1
                words = (
                    narrow(item.text_in(document.text), aligned.target_text, pieces[0][0], pieces[-1][1])
                    if narrow
                    else None
                )
                evidence.append(Evidence(pieces=(words,) if words else pieces))
        codes.append(GoldCode(code=gold.code, system=gold.system, evidence=tuple(evidence)))
    meta = {**aligned.quality(), "evidence_projected": f"{projected}/{total}"}
    return document.model_copy(
        update={"text": aligned.target_text, "language": "en", "codes": tuple(codes), "meta": meta}
    )


def _aligned(
    data_dir: str | Path, split: str, spanish: list[Document], progress: bool = False
) -> Iterator[tuple[Document, AlignedDocument]]:
    """Each Spanish document with its alignment to the English translation file."""
    from rich.console import Console
    from rich.progress import track

    folder = split_dir(data_dir, split) / "text_files_en"
    if not folder.is_dir():
        raise InputError("English text folder not found", path=folder)
    documents = track(
        spanish,
        description=f"aligning {split} (es->en)",
        disable=not progress,
        transient=True,
        console=Console(stderr=True),  # stdout may carry a JSON result
    )
    for doc in documents:
        yield doc, align_document(doc.text, english_lines(folder / f"{doc.id}.txt"))


def load_codiesp(
    data_dir: str | Path,
    split: str,
    language: str = "es",
    *,
    progress: bool = False,
    with_translation: bool = False,
    labelled: bool = True,
) -> list[Document]:
    """Load one CodiEsp split as canonical documents, sorted by id.

    ``language="es"``: the Spanish notes with X character offsets as evidence;
    ``with_translation`` also fills ``Document.translation`` from ``text_files_en``
    where the split has that folder (notes without a file keep an empty translation).
    ``language="en"``: the English translation with sentence-level evidence
    (``progress`` shows a bar on stderr while aligning).
    ``labelled=False``: the notes alone, without codes; the D/P/X tables are neither needed nor read (the
    ``background`` split has none, and a test split is coded before its annotations are out).
    """
    if language not in LANGUAGES:
        raise InputError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    spanish = _load_spanish(data_dir, split).documents if labelled else _unlabelled_spanish(data_dir, split)
    if language == "es":
        return (
            _with_translations(spanish, split_dir(data_dir, split) / "text_files_en") if with_translation else spanish
        )
    return [to_english(doc, aligned) for doc, aligned in _aligned(data_dir, split, spanish, progress)]


def codiesp_stats(data_dir: str | Path, split: str) -> dict:
    """Counts describing a split (the JSON contract of ``icdcoder data stats codiesp``).

    ``*_unknown_to_ontology`` count gold codes (kept as they are) that the
    ontology's ICD-10-CM/PCS release does not list, e.g. Spanish CIE-10 2018 codes.
    """
    from icdcoder.ontology import load_ontology

    data = _load_spanish(data_dir, split)
    docs = data.documents
    counts = data.counts
    ontology = load_ontology()
    unknown = Counter(
        gold.system for doc in docs for gold in doc.codes if not ontology.is_valid(gold.code, gold.system)
    )
    return {
        "split": split,
        "documents": counts["documents"],
        "D_rows": counts["D_rows"],
        "P_rows": counts["P_rows"],
        "X_rows": counts["X_rows"],
        "X_spans_exact": counts["X_spans_exact"],
        "X_spans_mismatched": counts["X_spans_mismatched"],
        "X_discontinuous": counts["X_discontinuous"],
        "X_codes_not_in_DP": counts["X_codes_not_in_DP"],
        "DP_duplicate_rows": counts["D_duplicates"] + counts["P_duplicates"],
        "D_codes_unknown_to_ontology": unknown["icd10cm"],
        "P_codes_unknown_to_ontology": unknown["icd10pcs"],
        "unique_D_codes": len({code for doc in docs for code in doc.code_set("icd10cm")}),
        "unique_P_codes": len({code for doc in docs for code in doc.code_set("icd10pcs")}),
        "docs_without_codes": sum(1 for doc in docs if not doc.codes),
        "mean_codes_per_doc": round(sum(len(doc.codes) for doc in docs) / max(len(docs), 1), 3),
        "mean_chars_per_doc": round(sum(len(doc.text) for doc in docs) / max(len(docs), 1), 1),
    }


def _naive_sentences(text: str) -> list[str]:
    """Spanish simply split on periods: the baseline the aligner is measured against."""
    return [part for part in re.split(r"(?<=\.)\s+", text) if part.strip()]


def _ratio(part: int, whole: int) -> float:
    return round(part / max(whole, 1), 4)


def alignment_report(data_dir: str | Path, split: str) -> dict:
    """How well Spanish sentences align with the English lines of one split, and how much evidence survives.

    ``numbers_agree_*``: among aligned pairs holding a number, the fraction whose
    numbers are the same on both sides, for our beads and for the naive
    "split on periods and zip" pairing.
    """
    spanish = _load_spanish(data_dir, split).documents
    beads: Counter = Counter()
    counts: Counter = Counter()
    for doc, aligned in _aligned(data_dir, split, spanish):
        english = to_english(doc, aligned)
        beads.update(aligned.bead_kinds())
        done, of = english.meta["evidence_projected"].split("/")
        agreeing, checked = aligned.number_agreement()
        naive_pairs = list(zip(_naive_sentences(doc.text), aligned.target_lines))
        naive_verdicts = [v for v in (numbers_agree(es, en) for es, en in naive_pairs) if v is not None]
        counts.update(
            documents=1,
            one_to_one=aligned.all_one_to_one,
            naive_same_count=len(_naive_sentences(doc.text)) == len(aligned.target_lines),
            projected=int(done),
            spans=int(of),
            codes_es=sum(1 for gold in doc.codes if gold.evidence),
            codes_en=sum(1 for gold in english.codes if gold.evidence),
            agreeing=agreeing,
            checked=checked,
            naive_agreeing=sum(naive_verdicts),
            naive_checked=len(naive_verdicts),
            fillers=len(aligned.target_lines) - len(aligned.target_units),
        )
    return {
        "split": split,
        "documents": counts["documents"],
        "docs_all_one_to_one": _ratio(counts["one_to_one"], counts["documents"]),
        "naive_period_split_same_count": _ratio(counts["naive_same_count"], counts["documents"]),
        "numbers_agree_aligned": _ratio(counts["agreeing"], counts["checked"]),
        "numbers_agree_naive_zip": _ratio(counts["naive_agreeing"], counts["naive_checked"]),
        "x_spans": counts["spans"],
        "x_spans_projected": _ratio(counts["projected"], counts["spans"]),
        "codes_with_evidence_es": counts["codes_es"],
        "codes_with_evidence_en": counts["codes_en"],
        "bead_fractions": {kind: _ratio(count, sum(beads.values())) for kind, count in sorted(beads.items())},
        "mean_beads_per_doc": round(sum(beads.values()) / max(counts["documents"], 1), 2),
        "filler_lines": counts["fillers"],
    }
