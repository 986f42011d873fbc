"""CodiEsp submission files (D.tsv, P.tsv, X.tsv) and the official-style scorer.

Formats (CodiEsp, CLEF eHealth 2020), one tab-separated row per line, no header:

* ``D.tsv`` / ``P.tsv``: ``doc_id<TAB>code``, codes of a document in rank order
  (best first), lower case; ICD-10-CM dotted (``n44.8``), ICD-10-PCS undotted
  (``bw03zzz``, 4-character prefixes such as ``ct13`` allowed).
* ``X.tsv``: ``doc_id<TAB>start end<TAB>DIAGNOSTICO|PROCEDIMIENTO<TAB>code``.
* ``D_ranking.tsv`` / ``P_ranking.tsv`` (ours, optional): the whole ranking of each
  note in the format of ``D.tsv``, the decisions of ``D.tsv`` and the candidates
  below the decision threshold by score (:mod:`icdcoder.predictor`). MAP is read
  from it when present (a ranking measure, as the shared task scored ranked
  runs), F1 from ``D.tsv``; give the official scorer ``D_ranking.tsv`` for its
  MAP and ``D.tsv`` for its F1.
* Gold ``{split}X.tsv`` adds the reference text and allows multi-piece
  positions ``"s1 e1;s2 e2"``.

What the official scripts (TeMU-BSC/codiesp-evaluation-script) do, and what we do:

* Codes are compared lower-cased, as exact strings, for D and P alike: a
  4-character PCS prefix in gold only matches the same prefix predicted (no
  partial credit either way). Duplicated (document, code) rows count once
  (the first keeps its rank).
* Predicted codes that are not in the official valid-code list are REMOVED
  before scoring (they neither count as false positives nor occupy a rank).
  That list is not redistributed here: pass ``valid_codes`` (or ``--valid-codes-d``
  / ``--valid-codes-p`` on the CLI, files whose first column is a code) to mirror
  it; without it every predicted code is scored, so an invalid code counts as a
  false positive (stricter than the official scorer).
* The official scripts count predictions for documents outside the gold file
  in the denominators; the shared task scored the test set out of submissions
  that also covered 2,751 background notes, so predictions are first restricted
  to the documents of the split (the ids in its gold files and, when present,
  its ``text_files/``). How many rows were set aside is reported.
* MAP: see :mod:`icdcoder.evaluate.metrics` (``map`` = mean over gold
  documents; ``map_trectools`` = the pinned trectools denominator).
* X: a gold (document, code) is a hit when one of its references lies inside a
  predicted interval of the same code with at most 10 characters of slack on
  each side; a multi-piece gold reference runs from the first piece's start to
  the last piece's end (for the few references whose pieces are out of text
  order, the covering interval is accepted too: see :func:`_reference_spans`);
  labels are not compared.
* Stricter than the official scripts on malformed rows, in gold and submission
  alike (as ``icdcoder data stats codiesp`` reads gold): a row with the wrong
  number of fields or an empty field, an X position that is not ``start end``
  integers, is reversed (end before start) or, where the split has the note's
  text file, runs past its end, is an :class:`InputError` naming ``FILE:LINE``
  rather than a row scored as written or skipped.
* A submission file that is missing is scored as empty (all zeros) and named
  in ``"notes"``; a missing prediction FOLDER, or a folder with none of the
  three files, is an input error.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icdcoder.errors import InputError
from icdcoder.evaluate.metrics import (
    evidence_prf,
    frequency_band_recall,
    macro_prf,
    mean_average_precision,
    micro_prf,
    restrict_to_gold_documents,
    trectools_map,
)
from icdcoder.io import atomic_write, iter_lines, read_text

logger = logging.getLogger(__name__)

TASK_SYSTEMS = {"D": "icd10cm", "P": "icd10pcs"}
X_LABELS = {"D": "DIAGNOSTICO", "P": "PROCEDIMIENTO"}
SUBMISSION_FILES = ("D.tsv", "P.tsv", "X.tsv")
#: the whole ranking of each task's codes: what MAP reads when present
RANKING_FILES = {"D": "D_ranking.tsv", "P": "P_ranking.tsv"}

Span = tuple[int, int]


@dataclass
class CodiespCodes:
    """Codes of one split or one submission, lower case, keyed by document.

    ``ranked[task][doc]`` lists codes in file order (rank order for submissions);
    ``references[(doc, code)]`` lists (start, end) positions from the X file.
    """

    ranked: dict[str, dict[str, list[str]]] = field(default_factory=lambda: {"D": {}, "P": {}})
    #: a submission's whole rankings (``D_ranking.tsv``, ``P_ranking.tsv``) where it has them
    rankings: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    references: dict[tuple[str, str], list[Span]] = field(default_factory=dict)
    documents: set[str] = field(default_factory=set)
    missing_files: list[str] = field(default_factory=list)
    #: the split's note files by document (``text_files/*.txt``; empty when the split has none)
    texts: dict[str, Path] = field(default_factory=dict)


class TextLengths:
    """Characters in each note of a split, read on first use (only notes an X row points into are read)."""

    def __init__(self, texts: Mapping[str, Path]):
        self._texts = texts
        self._lengths: dict[str, int] = {}

    def get(self, doc: str) -> int | None:
        """Length of ``doc``'s text, ``None`` when the split has no text file for it (nothing to check against)."""
        if doc not in self._lengths:
            if doc not in self._texts:
                return None
            self._lengths[doc] = len(read_text(self._texts[doc]))
        return self._lengths[doc]


# --------------------------------------------------------------------- parsing


def _fields(line: str, expected: int, path: Path, number: int) -> list[str]:
    parts = [part.strip() for part in line.rstrip("\r").split("\t")]
    if len(parts) != expected:
        raise InputError(f"expected {expected} tab-separated fields, found {len(parts)}", path=path, line=number)
    if not all(parts):
        raise InputError("empty field", path=path, line=number)
    return parts


def _reference_spans(text: str, path: Path, number: int, gold: bool, length: int | None = None) -> list[Span]:
    """The interval(s) a position stands for: ``"start end"``, or in gold ``"s1 e1;s2 e2"``.

    Stricter than the official script (which accepts any two integers), and as
    ``icdcoder data stats codiesp`` reads gold: each piece is two non-negative
    integers with start <= end, and with ``length`` (the note's characters) no
    piece runs past the text; anything else is an :class:`InputError` naming the
    file and line. For a multi-piece gold reference the official script uses the
    first and the last number as written; 96 train+dev references list their
    pieces out of text order, so that interval runs backwards. Such a reference
    yields two alternatives, the covering interval (smallest start, largest end,
    as :class:`~icdcoder.data.schema.Evidence` reads it) and the official one,
    and a prediction matching either is a hit: for pieces in text order both are
    the same interval and the rule is exactly the official one. (Only a reversed
    prediction, which the official script would score and this one rejects, can
    lie around the backwards interval, so in practice the covering one decides.)
    """
    pieces = text.split(";") if gold else [text]
    bounds: list[Span] = []
    for piece in pieces:
        numbers = piece.split()
        if len(numbers) != 2 or not all(n.isascii() and n.isdigit() for n in numbers):
            raise InputError(f"bad position {text!r} (expected 'start end', two integers)", path=path, line=number)
        bounds.append((int(numbers[0]), int(numbers[1])))
        if bounds[-1][1] < bounds[-1][0]:
            raise InputError(f"bad position {text!r} (reversed offsets: end before start)", path=path, line=number)
        if length is not None and bounds[-1][1] > length:
            raise InputError(f"bad position {text!r} (runs past the text, {length} chars)", path=path, line=number)
    covering = (min(start for start, _ in bounds), max(end for _, end in bounds))
    as_written = (bounds[0][0], bounds[-1][1])
    return [covering] if covering == as_written else [covering, as_written]


def _read_code_file(path: Path, into: dict[str, list[str]], documents: set[str]) -> None:
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        doc, code = _fields(line, 2, path, number)
        into.setdefault(doc, []).append(code.lower())
        documents.add(doc)


def _read_x_file(path: Path, codes: CodiespCodes, gold: bool, lengths: TextLengths | None = None) -> None:
    labels = set(X_LABELS.values())
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        if gold:
            doc, label, code, _reference, position = _fields(line, 5, path, number)
        else:
            doc, position, label, code = _fields(line, 4, path, number)
        if label.upper() not in labels:
            raise InputError(f"label must be DIAGNOSTICO or PROCEDIMIENTO, got {label!r}", path=path, line=number)
        length = lengths.get(doc) if lengths is not None else None
        spans = _reference_spans(position, path, number, gold=gold, length=length)
        codes.references.setdefault((doc, code.lower()), []).extend(spans)
        codes.documents.add(doc)


def _split_dir(data_dir: str | Path, split: str) -> Path:
    folder = Path(data_dir) / split
    if not folder.is_dir():
        raise InputError(f"no '{split}' folder in the CodiEsp data directory", path=data_dir)
    return folder


def load_gold(data_dir: str | Path, split: str) -> CodiespCodes:
    """Gold codes of ``split`` read straight from ``{split}D.tsv``, ``{split}P.tsv`` and ``{split}X.tsv``.

    The evaluated documents are the ids in those files plus the names of
    ``{split}/text_files/*.txt`` when that folder exists (notes with no code);
    then X positions are checked against those texts.
    """
    folder = _split_dir(data_dir, split)
    gold = CodiespCodes()
    text_dir = folder / "text_files"
    if text_dir.is_dir():
        gold.texts = {path.stem: path for path in sorted(text_dir.glob("*.txt"))}
    for task in ("D", "P"):
        _read_code_file(folder / f"{split}{task}.tsv", gold.ranked[task], gold.documents)
    _read_x_file(folder / f"{split}X.tsv", gold, gold=True, lengths=TextLengths(gold.texts))
    gold.documents.update(gold.texts)
    return gold


def read_submission(pred_dir: str | Path, texts: Mapping[str, Path] | None = None) -> CodiespCodes:
    """Parse ``D.tsv``, ``P.tsv`` and ``X.tsv`` of a submission folder.

    Codes are lower-cased; a malformed row (wrong number of fields, an empty
    field, a position that is not ``start end``, reversed, or, for a document of
    ``texts``, past the end of its text) raises an :class:`InputError` naming
    file and line. A missing file is recorded in ``missing_files``.
    """
    folder = Path(pred_dir)
    if not folder.is_dir():
        raise InputError("prediction folder not found", path=folder)
    if not any((folder / name).is_file() for name in SUBMISSION_FILES):
        raise InputError(f"none of {', '.join(SUBMISSION_FILES)} found", path=folder)
    submission = CodiespCodes()
    for task in ("D", "P"):
        path = folder / f"{task}.tsv"
        if path.is_file():
            _read_code_file(path, submission.ranked[task], submission.documents)
        else:
            submission.missing_files.append(path.name)
        ranking = folder / RANKING_FILES[task]
        if ranking.is_file():
            _read_code_file(ranking, submission.rankings.setdefault(task, {}), submission.documents)
    if (folder / "X.tsv").is_file():
        _read_x_file(folder / "X.tsv", submission, gold=False, lengths=TextLengths(texts or {}))
    else:
        submission.missing_files.append("X.tsv")
    return submission


def read_valid_codes(path: str | Path) -> set[str]:
    """Lower-cased codes from the first tab-separated column of a code list (official valid-codes format)."""
    return {line.split("\t", 1)[0].strip().lower() for _, line in iter_lines(path) if line.strip()}


def train_code_counts(train_dir: str | Path, task: str) -> dict[str, int]:
    """Number of training documents with each code, from ``train{task}.tsv`` of ``train_dir``."""
    folder = Path(train_dir)
    per_doc: dict[str, list[str]] = {}
    _read_code_file(folder / f"{folder.name}{task}.tsv", per_doc, set())
    counts: dict[str, int] = {}
    for codes in per_doc.values():
        for code in set(codes):
            counts[code] = counts.get(code, 0) + 1
    return counts


# --------------------------------------------------------------------- writing


def _check_id(doc_id: str) -> str:
    if not doc_id or any(ch in doc_id for ch in "\t\r\n"):
        raise InputError(f"document id {doc_id!r} cannot be written to a TSV file", path="doc_id")
    return doc_id


def _submitted_code(code_prediction: Any, doc: str) -> str:
    code = code_prediction.code.strip().lower()
    if not code or any(ch in code for ch in "\t\r\n "):
        raise InputError(f"code {code_prediction.code!r} of {doc} cannot be written", path="code")
    return code


def _code_rows(doc: str, codes: Sequence[Any]) -> list[str]:
    """``doc<TAB>code`` rows of ``codes`` in their order, each code once."""
    written = dict.fromkeys(_submitted_code(code_prediction, doc) for code_prediction in codes)
    return [f"{doc}\t{code}" for code in written]


def submission_rows(predictions: Sequence[Any]) -> dict[str, list[str]]:
    """The lines of D.tsv, P.tsv, X.tsv and the ranking files for ``DocumentPrediction`` objects (rank = score
    order)."""
    rows: dict[str, list[str]] = {name: [] for name in (*SUBMISSION_FILES, *RANKING_FILES.values())}
    for prediction in predictions:
        doc = _check_id(prediction.doc_id)
        for task, system in TASK_SYSTEMS.items():
            decisions = prediction.ranked({system})
            rows[f"{task}.tsv"].extend(_code_rows(doc, decisions))
            rows[RANKING_FILES[task]].extend(_code_rows(doc, prediction.ranking({system})))
            for code_prediction in decisions:
                code = _submitted_code(code_prediction, doc)
                for evidence in code_prediction.evidence:
                    rows["X.tsv"].append(f"{doc}\t{evidence.start} {evidence.end}\t{X_LABELS[task]}\t{code}")
    return rows


def write_submission(out_dir: str | Path, predictions: Sequence[Any]) -> dict[str, int]:
    """Write D.tsv, P.tsv, X.tsv and the ranking files into ``out_dir`` (all or none); returns rows per file.

    D.tsv holds the ICD-10-CM decisions and P.tsv the ICD-10-PCS decisions in score order, D_ranking.tsv and
    P_ranking.tsv the whole rankings (decisions and candidates); other
    systems are not part of CodiEsp and are left out. X.tsv has one row per
    evidence of each code, the position spanning all its pieces.
    """
    rows = submission_rows(predictions)
    folder = Path(out_dir)
    with contextlib.ExitStack() as files:
        handles = {name: files.enter_context(atomic_write(folder / name)) for name in rows}
        for name, lines in rows.items():
            handles[name].write("".join(line + "\n" for line in lines))
    return {name: len(lines) for name, lines in rows.items()}


# --------------------------------------------------------------------- scoring


def _keep_valid(ranked: Mapping[str, list[str]], valid: set[str] | None) -> dict[str, list[str]]:
    if valid is None:
        return dict(ranked)
    return {doc: [code for code in codes if code in valid] for doc, codes in ranked.items()}


def score_ranked_task(
    gold: Mapping[str, set[str]],
    ranked: Mapping[str, list[str]],
    train_counts: Mapping[str, int] | None,
    ranking: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """The D or P block of the contract for one task: set measures of ``ranked`` (the decisions), MAP of ``ranking``
    (the whole rankings; the decisions when None)."""
    evaluated = restrict_to_gold_documents(gold, ranked)
    ranked_for_map = evaluated if ranking is None else restrict_to_gold_documents(gold, ranking)
    micro = micro_prf(gold, evaluated)
    macro = macro_prf(gold, evaluated)
    result: dict[str, Any] = {
        "map": mean_average_precision(gold, ranked_for_map),
        "map_trectools": trectools_map(gold, ranked_for_map),
        "micro_precision": micro["micro_precision"],
        "micro_recall": micro["micro_recall"],
        "micro_f1": micro["micro_f1"],
        "macro_precision": macro["macro_precision"],
        "macro_recall": macro["macro_recall"],
        "macro_f1": macro["macro_f1"],
        "n_gold": micro["n_gold"],
        "n_predicted": micro["n_predicted"],
        "n_true_positives": micro["true_positives"],
    }
    if train_counts is None:
        result.update({"unseen_recall": None, "n_unseen": None})
    else:
        bands = frequency_band_recall(gold, evaluated, train_counts)
        result.update({"unseen_recall": bands["unseen_recall"], "n_unseen": bands["n_unseen"]})
    return result


def _outside_rows(submission: CodiespCodes, documents: set[str]) -> int:
    rows = sum(
        len(codes) for task in ("D", "P") for doc, codes in submission.ranked[task].items() if doc not in documents
    )
    return rows + sum(len(spans) for (doc, _), spans in submission.references.items() if doc not in documents)


def score_submission(
    data_dir: str | Path,
    split: str,
    pred_dir: str | Path,
    train_dir: str | Path | None = None,
    valid_codes: Mapping[str, set[str]] | None = None,
) -> dict[str, Any]:
    """Score a submission folder against the gold files of ``split``.

    Returns ``{"D": {map, micro_precision, micro_recall, micro_f1, macro_f1,
    unseen_recall, ...}, "P": {...}, "X": {precision, recall, f1, ...},
    "notes": [...], ...}``. ``unseen_recall`` is recall on gold codes absent
    from the training split's D/P file (``train_dir`` defaults to
    ``data_dir/train``; ``None`` when that folder is missing or no gold code is
    unseen). ``valid_codes`` maps ``"D"``/``"P"`` to lower-case code sets; when
    given, other predicted codes are removed first, as the official scorer does.
    """
    gold = load_gold(data_dir, split)
    submission = read_submission(pred_dir, texts=gold.texts)
    notes = [f"{name} missing: scored as an empty file" for name in submission.missing_files]
    train_folder = Path(train_dir) if train_dir is not None else Path(data_dir) / "train"
    if not train_folder.is_dir():
        notes.append(f"no training folder at {train_folder}: unseen_recall not computed")
    valid = {task: valid_codes.get(task) for task in ("D", "P")} if valid_codes else {"D": None, "P": None}
    result: dict[str, Any] = {}
    for task in ("D", "P"):
        gold_sets = {doc: set(gold.ranked[task].get(doc, ())) for doc in gold.documents}
        counts = train_code_counts(train_folder, task) if train_folder.is_dir() else None
        ranking = submission.rankings.get(task)
        if ranking is None:
            notes.append(f"no {RANKING_FILES[task]}: {task} MAP read from {task}.tsv")
        result[task] = score_ranked_task(
            gold_sets,
            _keep_valid(submission.ranked[task], valid[task]),
            counts,
            None if ranking is None else _keep_valid(ranking, valid[task]),
        )
    all_valid = None if valid["D"] is None or valid["P"] is None else valid["D"] | valid["P"]
    predicted_refs = {
        key: spans
        for key, spans in submission.references.items()
        if key[0] in gold.documents and (all_valid is None or key[1] in all_valid)
    }
    x_scores = evidence_prf(gold.references, predicted_refs)
    result["X"] = {
        "precision": x_scores["precision"],
        "recall": x_scores["recall"],
        "f1": x_scores["f1"],
        "n_gold": x_scores["n_gold"],
        "n_predicted": x_scores["n_predicted"],
        "n_hits": x_scores["hits"],
    }
    result["split"] = split
    result["n_documents"] = len(gold.documents)
    result["n_prediction_rows_outside_split"] = _outside_rows(submission, gold.documents)
    result["notes"] = notes
    logger.info("scored %d documents of %s; notes: %s", len(gold.documents), split, notes)
    return result


def valid_code_sets(paths: Iterable[tuple[str, str | Path | None]]) -> dict[str, set[str]] | None:
    """``{"D": codes, "P": codes}`` from optional code-list files; ``None`` when no file is given."""
    chosen = {task: read_valid_codes(path) for task, path in paths if path is not None}
    if not chosen:
        return None
    if set(chosen) != {"D", "P"}:
        raise InputError("give both valid-code lists (D and P) or neither", path="--valid-codes-d/--valid-codes-p")
    return chosen
