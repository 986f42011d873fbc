"""MIMIC-III and MIMIC-IV (credentialed files the user brings) -> canonical JSONL splits.

Everything is streamed: CSV files (gzip or plain) are read row by row with the
``csv`` module, codes per admission are kept as compact integer arrays, notes
are written to JSONL as they are completed. Two passes over the notes file keep
memory bounded (``benchmarks/mimic_memory.py`` measures it).

Note text is kept VERBATIM (no lower-casing or punctuation stripping as in
CAML / Edin et al.): evidence quotes and LLM prompts need the real text.

MIMIC-III (CAML, Mullenbach et al. 2018), :func:`prepare_mimic3`:

* notes: ``NOTEEVENTS`` rows with ``CATEGORY == "Discharge summary"`` (reports
  and addenda), concatenated per ``HADM_ID``: reports first, then addenda, each
  group ordered by ``CHARTDATE``/``CHARTTIME``/``ROW_ID``, joined by a blank
  line. Rows without ``HADM_ID`` are skipped; ``ISERROR`` is not used (as CAML).
* codes: ``DIAGNOSES_ICD`` -> ICD-9-CM, ``PROCEDURES_ICD`` -> ICD-9 procedures,
  dotted (dx after 3 characters, E-codes after 4, px after 2), de-duplicated per
  admission (as Edin et al.), diagnoses first in ``SEQ_NUM`` order.
* admissions need a discharge summary and at least one code; the user's CAML
  split files (``{train,dev,test}_{full,50}_hadm_ids.csv``, one id a line)
  assign them; ids that do not survive are counted, not errors.
* top-50: the 50 codes assigned to the most admissions over the whole labelled
  set (CAML's definition; ties broken by code), or with ``paper_top50`` the list
  published by CAML (Edin et al. use it because MIMIC-III v1.4 gives a slightly
  different list). 50-label documents keep only top-50 codes; those left with
  none are dropped (as CAML).

MIMIC-IV (Edin et al. 2023, "Automated medical coding on MIMIC-III and
MIMIC-IV: a critical review and replicability study"), :func:`prepare_mimic4`:

* notes: ``note/discharge.csv.gz``; rows with empty text are dropped and
  duplicate ``(hadm_id, text)`` rows keep their first occurrence. Each note is
  one document (id = ``note_id``), labelled with its admission's codes.
* codes: ``hosp/diagnoses_icd`` and ``hosp/procedures_icd`` split by
  ``icd_version`` into an ICD-9 and an ICD-10 dataset; empty codes dropped,
  duplicates per admission removed; ICD-10-PCS stays undotted.
* notes without a code of the dataset's version are dropped; codes given to
  fewer than ``min_code_count`` (10) of the remaining notes are removed, then
  notes left without codes are dropped.
* splits: by patient (``subject_id``) with iterative stratification (Sechidis
  et al. 2011) on each patient's set of codes, test 15 % first, then dev 10 %
  of the whole from the rest, as Edin et al. (they stratify on lists, we on
  sets; random ties use ``seed``). A ``hadm_id,split`` CSV (e.g. exported from
  Edin et al.'s split files; ``_id`` is accepted for ``hadm_id``, ``val`` for
  ``dev``) can be given instead.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import heapq
import json
import logging
import random
import sys
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from icdcoder.data.schema import Document, GoldCode
from icdcoder.errors import InputError
from icdcoder.io import atomic_write, progress_bar
from icdcoder.ontology.codes import normalize_code

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "dev", "test")
SPLIT_ALIASES = {"train": "train", "dev": "dev", "val": "dev", "valid": "dev", "validation": "dev", "test": "test"}
DISCHARGE_CATEGORY = "Discharge summary"
NOTE_SEPARATOR = "\n\n"
TOP_K = 50

#: The 50 codes of CAML's MIMIC-III-50 as published (Mullenbach et al. 2018).
CAML_PAPER_TOP50: tuple[str, ...] = (
    "401.9",
    "38.93",
    "428.0",
    "427.31",
    "414.01",
    "96.04",
    "96.6",
    "584.9",
    "250.00",
    "96.71",
    "272.4",
    "518.81",
    "99.04",
    "39.61",
    "599.0",
    "530.81",
    "96.72",
    "272.0",
    "285.9",
    "88.56",
    "244.9",
    "486",
    "38.91",
    "285.1",
    "36.15",
    "276.2",
    "496",
    "99.15",
    "995.92",
    "V58.61",
    "507.0",
    "038.9",
    "88.72",
    "585.9",
    "403.90",
    "311",
    "305.1",
    "37.22",
    "412",
    "33.24",
    "39.95",
    "287.5",
    "410.71",
    "276.1",
    "V45.81",
    "424.0",
    "45.13",
    "V15.82",
    "511.9",
    "37.23",
)

_DIAGNOSIS, _PROCEDURE = 0, 1
_SEQ_LAST = (1 << 24) - 1
_CODE_ID_BITS = 24


# --------------------------------------------------------------------------- CSV


def find_table(folder: str | Path, name: str) -> Path:
    """``folder/name.csv.gz`` or ``folder/name.csv``; neither is an input error."""
    folder = Path(folder)
    for candidate in (folder / f"{name}.csv.gz", folder / f"{name}.csv"):
        if candidate.is_file():
            return candidate
    raise InputError(f"file not found ({name}.csv.gz or {name}.csv)", path=folder)


def _open_text(path: Path, universal_newlines: bool) -> IO[str]:
    newline = None if universal_newlines else ""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline=newline)
    return open(path, encoding="utf-8", newline=newline)


def iter_csv_rows(
    path: str | Path, columns: Sequence[str], *, universal_newlines: bool = False
) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Stream ``(line, values of columns)`` from a CSV file (gzip when it ends in .gz).

    Column names match case-insensitively (MIMIC-III is upper case, MIMIC-IV and
    database exports lower case). ``line`` is the file line where the record
    ends. Missing file or column, a row with the wrong number of fields, bad
    gzip or non-UTF-8 bytes raise :class:`InputError` naming file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=path)
    csv.field_size_limit(sys.maxsize)
    line = 0
    try:
        with _open_text(path, universal_newlines) as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise InputError("empty file (no header row)", path=path, line=1)
            positions = _column_positions(path, header, columns)
            width = len(header)
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != width:
                    raise InputError(f"malformed row: {len(row)} fields, header has {width}", path=path, line=line)
                yield line, tuple(row[position] for position in positions)
    except UnicodeDecodeError:
        raise InputError("not valid UTF-8", path=path, line=line + 1) from None
    except csv.Error as err:
        raise InputError(f"malformed CSV ({err})", path=path, line=line + 1) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise InputError(f"corrupt gzip file ({err})", path=path, line=line + 1) from None


def _column_positions(path: Path, header: list[str], columns: Sequence[str]) -> list[int]:
    lowered = {name.strip().lower(): index for index, name in enumerate(header)}
    positions = []
    for column in columns:
        if column.lower() not in lowered:
            raise InputError(f"missing required column '{column}'", path=path, line=1)
        positions.append(lowered[column.lower()])
    return positions


def parse_int(value: str, column: str, path: Path, line: int) -> int | None:
    """An integer id field; empty is ``None``, anything else non-numeric is an input error.

    ``123.0`` is accepted: tables re-saved through pandas write integer ids with
    missing values as floats.
    """
    value = value.strip()
    if not value:
        return None
    if value.endswith(".0"):
        value = value[:-2]
    try:
        return int(value)
    except ValueError:
        raise InputError(f"column '{column}': expected an integer, got {value[:20]!r}", path=path, line=line) from None


# ------------------------------------------------------------------------ codes


class AdmissionCodes:
    """Codes per admission, as compact integer arrays (millions of rows fit in tens of MB).

    Each entry packs ``kind`` (diagnosis before procedure), ``SEQ_NUM`` and an
    interned code id into one 64-bit integer, so sorting an admission's array
    gives the coding order and de-duplication is by code id.
    """

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], int] = {}
        self.codes: list[tuple[str, str]] = []
        self._by_admission: dict[int, array] = {}

    def add(self, hadm_id: int, code: str, system: str, *, procedure: bool, seq: int | None) -> None:
        key = (code, system)
        code_id = self._ids.get(key)
        if code_id is None:
            code_id = self._ids[key] = len(self.codes)
            self.codes.append(key)
        order = _SEQ_LAST if seq is None else min(max(seq, 0), _SEQ_LAST)
        kind = _PROCEDURE if procedure else _DIAGNOSIS
        packed = (kind << 48) | (order << _CODE_ID_BITS) | code_id
        self._by_admission.setdefault(hadm_id, array("Q")).append(packed)

    def __contains__(self, hadm_id: object) -> bool:
        return hadm_id in self._by_admission

    def __len__(self) -> int:
        return len(self._by_admission)

    def code_ids(self, hadm_id: int) -> list[int]:
        """The admission's distinct code ids in coding order (diagnoses, then procedures)."""
        seen: dict[int, None] = {}
        for packed in sorted(self._by_admission.get(hadm_id, ())):
            seen.setdefault(packed & ((1 << _CODE_ID_BITS) - 1), None)
        return list(seen)

    def gold(self, code_ids: Iterable[int]) -> tuple[GoldCode, ...]:
        return tuple(GoldCode(code=self.codes[i][0], system=self.codes[i][1]) for i in code_ids)


def _read_code_table(
    store_for: Callable[[str], tuple[AdmissionCodes, str] | None],
    path: Path,
    columns: tuple[str, str, str, str],
    *,
    procedure: bool,
    counts: Counter,
) -> None:
    """Add one diagnoses/procedures table to its store; ``store_for(version)`` picks it."""
    hadm_col, seq_col, code_col, version_col = columns
    wanted = [hadm_col, seq_col, code_col] + ([version_col] if version_col else [])
    for line, values in iter_csv_rows(path, wanted):
        hadm_id = parse_int(values[0], hadm_col, path, line)
        code = values[2].strip()
        if hadm_id is None or not code:
            counts["code_rows_without_admission_or_code"] += 1
            continue
        version = values[3].strip() if version_col else "9"
        target = store_for(version)
        if target is None:
            raise InputError(f"column '{version_col}': expected 9 or 10, got {version[:10]!r}", path=path, line=line)
        store, system = target
        seq = parse_int(values[1], seq_col, path, line)
        store.add(hadm_id, normalize_code(code, system), system, procedure=procedure, seq=seq)
        counts["code_rows"] += 1


# ----------------------------------------------------------------------- splits


def read_hadm_ids(path: str | Path) -> list[int]:
    """One admission id a line (CAML / MDACE split files); a header line is tolerated."""
    path = Path(path)
    ids: list[int] = []
    for line, values in _iter_plain_lines(path):
        if not values:
            continue
        if line == 1 and not values.isdigit():
            continue
        if not values.isdigit():
            raise InputError(f"expected an admission id, got {values[:20]!r}", path=path, line=line)
        ids.append(int(values))
    return ids


def _iter_plain_lines(path: Path) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise InputError("file not found", path=path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError("not valid UTF-8", path=path, line=data[: err.start].count(b"\n") + 1) from None
    for number, raw in enumerate(text.splitlines(), start=1):
        yield number, raw.strip().strip('"').split(",")[0].strip()


def read_split_files(files: dict[str, Path]) -> dict[int, str]:
    """``{split: file}`` -> ``{hadm_id: split}``; an id in two splits is an input error."""
    assignment: dict[int, str] = {}
    for split, path in files.items():
        for hadm_id in read_hadm_ids(path):
            previous = assignment.setdefault(hadm_id, split)
            if previous != split:
                raise InputError(f"admission {hadm_id} is also in the '{previous}' split", path=path)
    return assignment


def read_header(path: str | Path) -> list[str]:
    """The header row of a CSV file, lower-cased."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path=path)
    with _open_text(path, False) as handle:
        return [name.strip().lower() for name in next(csv.reader(handle), [])]


def read_split_csv(path: str | Path) -> dict[int, str]:
    """A ``hadm_id,split`` CSV (``_id`` accepted for ``hadm_id``) -> ``{hadm_id: split}``."""
    path = Path(path)
    id_column = "_id" if "_id" in read_header(path) else "hadm_id"
    assignment: dict[int, str] = {}
    for line, (raw_id, raw_split) in iter_csv_rows(path, (id_column, "split")):
        hadm_id = parse_int(raw_id, id_column, path, line)
        split = SPLIT_ALIASES.get(raw_split.strip().lower())
        if hadm_id is None or split is None:
            raise InputError(
                f"expected an admission id and one of train/dev/val/test, got {raw_id!r}, {raw_split!r}",
                path=path,
                line=line,
            )
        assignment[hadm_id] = split
    return assignment


def iterative_stratification(label_sets: dict, ratios: Sequence[float], *, seed: int = 10) -> dict:
    """Assign each key to a subset so every label is spread as ``ratios`` (Sechidis et al. 2011).

    Repeatedly takes the label with the fewest unassigned examples and gives each
    of its examples to the subset that still wants that label most (ties: the
    subset wanting most examples, then a seeded random choice). Keys without
    labels go to the subset wanting most examples. Returns ``{key: subset index}``.
    """
    rng = random.Random(seed)
    keys = sorted(label_sets)
    labels = [sorted(label_sets[key]) for key in keys]
    wanted_examples = [ratio * len(keys) for ratio in ratios]
    members: dict = {}
    for index, item_labels in enumerate(labels):
        for label in item_labels:
            members.setdefault(label, []).append(index)
    wanted = {label: [ratio * len(items) for ratio in ratios] for label, items in members.items()}
    remaining = {label: len(items) for label, items in members.items()}
    heap = [(count, label) for label, count in remaining.items()]
    heapq.heapify(heap)
    subset = [-1] * len(keys)

    def choose(options: list[int]) -> int:
        best = max(wanted_examples[j] for j in options)
        options = [j for j in options if wanted_examples[j] == best]
        return options[0] if len(options) == 1 else rng.choice(options)

    def assign(index: int, chosen: int) -> None:
        subset[index] = chosen
        wanted_examples[chosen] -= 1
        for label in labels[index]:
            wanted[label][chosen] -= 1
            remaining[label] -= 1
            heapq.heappush(heap, (remaining[label], label))

    while heap:
        count, label = heapq.heappop(heap)
        if count != remaining[label] or count == 0:
            continue
        for index in members[label]:
            if subset[index] != -1:
                continue
            top = max(wanted[label])
            assign(index, choose([j for j, value in enumerate(wanted[label]) if value == top]))
    for index, chosen in enumerate(subset):
        if chosen == -1:
            assign(index, choose(list(range(len(ratios)))))
    return {key: subset[index] for index, key in enumerate(keys)}


def stratified_patient_splits(
    label_sets: dict[int, set[int]], *, test_size: float = 0.15, dev_size: float = 0.10, seed: int = 10
) -> dict[int, str]:
    """Edin et al.'s two-step patient split: test first, then dev out of the rest."""
    first = iterative_stratification(label_sets, [1 - test_size, test_size], seed=seed)
    rest = {key: labels for key, labels in label_sets.items() if first[key] == 0}
    dev_share = dev_size / (1 - test_size)
    second = iterative_stratification(rest, [1 - dev_share, dev_share], seed=seed)
    return {key: "test" if first[key] == 1 else ("dev" if second[key] == 1 else "train") for key in label_sets}


# ---------------------------------------------------------------------- writing


@dataclass
class SplitWriters:
    """One atomically written JSONL file per ``(dataset, split)``, all open at once."""

    out_dir: Path
    stack: contextlib.ExitStack
    handles: dict[tuple[str, str], IO[str]] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)

    def open(self, dataset: str) -> None:
        for split in SPLITS:
            path = self.out_dir / dataset / f"{split}.jsonl"
            self.handles[(dataset, split)] = self.stack.enter_context(atomic_write(path))

    def write(self, dataset: str, document: Document) -> None:
        line = json.dumps(document.model_dump(mode="json"), ensure_ascii=False)
        self.handles[(dataset, document.split)].write(line + "\n")
        self.counts[f"{dataset}/{document.split}"] += 1


@contextlib.contextmanager
def _tracked(rows: Iterator, description: str, enabled: bool) -> Iterator[Iterator]:
    """Wrap a row stream in a rich progress bar counting rows (the total is unknown while streaming)."""
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
    )
    with progress_bar(*columns, enabled=enabled) as progress:
        task = progress.add_task(description, total=None)

        def counted() -> Iterator:
            for number, row in enumerate(rows, start=1):
                if number % 2000 == 0:
                    progress.update(task, completed=number)
                yield row

        yield counted()


def _write_summary(path: Path, summary: dict) -> None:
    with atomic_write(path) as handle:
        json.dump(summary, handle, indent=2, sort_keys=True)
        handle.write("\n")


# -------------------------------------------------------------------- MIMIC-III

_NOTE_COLUMNS_III = ("ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "CATEGORY", "DESCRIPTION", "TEXT")


def read_mimic3_codes(diagnoses: Path, procedures: Path, counts: Counter) -> AdmissionCodes:
    """ICD-9 diagnoses and procedures of every admission, canonical and ordered."""
    store = AdmissionCodes()
    columns = ("HADM_ID", "SEQ_NUM", "ICD9_CODE", "")
    _read_code_table(lambda _v: (store, "icd9cm"), diagnoses, columns, procedure=False, counts=counts)
    _read_code_table(lambda _v: (store, "icd9pcs"), procedures, columns, procedure=True, counts=counts)
    return store


def _discharge_rows(notes: Path, wanted: Callable[[int], bool]) -> Iterator[tuple[int, tuple[str, ...]]]:
    """``(hadm_id, row)`` for discharge summaries of admissions ``wanted`` accepts."""
    for line, row in iter_csv_rows(notes, _NOTE_COLUMNS_III):
        if row[5] != DISCHARGE_CATEGORY:
            continue
        hadm_id = parse_int(row[2], "HADM_ID", notes, line)
        if hadm_id is not None and wanted(hadm_id):
            yield hadm_id, row


def _note_order(row: tuple[str, ...]) -> tuple:
    """Reports before addenda, then by chart date/time and row id."""
    is_addendum = row[6].strip().lower() != "report"
    row_id = int(row[0]) if row[0].strip().isdigit() else 0
    return (is_addendum, row[3], row[4], row_id)


def count_discharge_notes(notes: Path, codes: AdmissionCodes, *, progress: bool = False) -> Counter:
    """Pass 1: discharge notes per coded admission."""
    expected: Counter = Counter()
    with _tracked(_discharge_rows(notes, codes.__contains__), "MIMIC-III notes (pass 1/2)", progress) as rows:
        for hadm_id, _row in rows:
            expected[hadm_id] += 1
    return expected


def iter_mimic3_admissions(
    notes: Path, expected: Counter, *, progress: bool = False
) -> Iterator[tuple[int, list[tuple[str, ...]]]]:
    """Pass 2: yield ``(hadm_id, rows)`` once all ``expected[hadm_id]`` discharge notes are read.

    An admission's notes are buffered only until its last one arrives, so memory
    holds the admissions still open, not the file.
    """
    pending: dict[int, list[tuple[str, ...]]] = {}
    with _tracked(_discharge_rows(notes, expected.__contains__), "MIMIC-III notes (pass 2/2)", progress) as rows:
        for hadm_id, row in rows:
            buffered = pending.setdefault(hadm_id, [])
            buffered.append(row)
            if len(buffered) == expected[hadm_id]:
                del pending[hadm_id]
                yield hadm_id, sorted(buffered, key=_note_order)


def top_codes(counts: Counter, k: int = TOP_K) -> list[str]:
    """The ``k`` most frequent codes, ties broken by code so the choice is reproducible."""
    return [code for code, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]]


def admission_code_frequencies(admissions: Iterable[int], codes: AdmissionCodes) -> Counter:
    """Admissions per code (CAML counts codes over the whole labelled set)."""
    frequencies: Counter = Counter()
    for hadm_id in admissions:
        frequencies.update(codes.codes[i][0] for i in codes.code_ids(hadm_id))
    return frequencies


def caml_split_files(splits_dir: Path, labels: str) -> dict[str, Path]:
    return {split: Path(splits_dir) / f"{split}_{labels}_hadm_ids.csv" for split in SPLITS}


def prepare_mimic3(
    mimic_dir: str | Path,
    splits_dir: str | Path,
    out_dir: str | Path,
    *,
    paper_top50: bool = False,
    progress: bool = False,
) -> dict:
    """Write ``mimic3_full/{train,dev,test}.jsonl`` and, when the ``*_50_hadm_ids.csv``
    files are there, ``mimic3_50/...``; return (and save as ``mimic3_summary.json``) the counts.
    """
    mimic_dir, splits_dir, out_dir = Path(mimic_dir), Path(splits_dir), Path(out_dir)
    notes = find_table(mimic_dir, "NOTEEVENTS")
    counts: Counter = Counter()
    codes = read_mimic3_codes(find_table(mimic_dir, "DIAGNOSES_ICD"), find_table(mimic_dir, "PROCEDURES_ICD"), counts)
    full_splits = read_split_files(caml_split_files(splits_dir, "full"))
    files_50 = caml_split_files(splits_dir, "50")
    splits_50 = read_split_files(files_50) if all(path.is_file() for path in files_50.values()) else None
    expected = count_discharge_notes(notes, codes, progress=progress)
    top50: list[str] = []
    if splits_50 is not None:
        top50 = list(CAML_PAPER_TOP50) if paper_top50 else top_codes(admission_code_frequencies(expected, codes))
    top50_set = set(top50)
    with contextlib.ExitStack() as stack:
        writers = SplitWriters(out_dir, stack)
        writers.open("mimic3_full")
        if splits_50 is not None:
            writers.open("mimic3_50")
        for hadm_id, rows in iter_mimic3_admissions(notes, expected, progress=progress):
            counts["admissions_with_notes_and_codes"] += 1
            code_ids = codes.code_ids(hadm_id)
            _route_mimic3(writers, counts, hadm_id, rows, codes, code_ids, full_splits, "mimic3_full")
            if splits_50 is not None:
                kept = [i for i in code_ids if codes.codes[i][0] in top50_set]
                _route_mimic3(writers, counts, hadm_id, rows, codes, kept, splits_50, "mimic3_50")
    counts.update({f"written/{name}": value for name, value in writers.counts.items()})
    summary = {
        "dataset": "mimic3",
        "counts": dict(sorted(counts.items())),
        "top50": top50,
        "top50_source": ("caml_paper" if paper_top50 else "computed") if top50 else None,
        "files": sorted(f"{dataset}/{split}.jsonl" for dataset, split in writers.handles),
    }
    _write_summary(out_dir / "mimic3_summary.json", summary)
    return summary


def _route_mimic3(
    writers: SplitWriters,
    counts: Counter,
    hadm_id: int,
    rows: list[tuple[str, ...]],
    codes: AdmissionCodes,
    code_ids: list[int],
    splits: dict[int, str],
    dataset: str,
) -> None:
    split = splits.get(hadm_id)
    if split is None:
        counts[f"{dataset}/not_in_split_files"] += 1
        return
    if not code_ids:
        counts[f"{dataset}/dropped_without_codes"] += 1
        return
    meta = {"hadm_id": str(hadm_id), "subject_id": rows[0][1], "note_ids": ",".join(row[0] for row in rows)}
    document = Document(
        id=str(hadm_id),
        text=NOTE_SEPARATOR.join(row[7] for row in rows),
        language="en",
        codes=codes.gold(code_ids),
        source="mimic3",
        split=split,
        meta=meta,
    )
    writers.write(dataset, document)


# --------------------------------------------------------------------- MIMIC-IV

_NOTE_COLUMNS_IV = ("note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "text")
VERSIONS: dict[str, tuple[str, str]] = {"9": ("icd9cm", "icd9pcs"), "10": ("icd10cm", "icd10pcs")}


def read_mimic4_codes(diagnoses: Path, procedures: Path, counts: Counter) -> dict[str, AdmissionCodes]:
    """``{"9": codes, "10": codes}`` from the hosp module's ICD tables."""
    stores = {version: AdmissionCodes() for version in VERSIONS}
    columns = ("hadm_id", "seq_num", "icd_code", "icd_version")
    for path, procedure in ((diagnoses, False), (procedures, True)):

        def store_for(version: str, procedure: bool = procedure) -> tuple[AdmissionCodes, str] | None:
            if version not in VERSIONS:
                return None
            return stores[version], VERSIONS[version][1 if procedure else 0]

        _read_code_table(store_for, path, columns, procedure=procedure, counts=counts)
    return stores


@dataclass
class _KeptNotes:
    """Pass-1 result: which note rows survive, and each note's patient and admission."""

    notes: dict[str, tuple[int, int]] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)


def _mimic4_note_rows(notes: Path) -> Iterator[tuple[int, tuple[str, ...], int | None, int | None]]:
    for line, row in iter_csv_rows(notes, _NOTE_COLUMNS_IV):
        subject_id = parse_int(row[1], "subject_id", notes, line)
        hadm_id = parse_int(row[2], "hadm_id", notes, line)
        yield line, row, subject_id, hadm_id


def _select_mimic4_notes(notes: Path, stores: dict[str, AdmissionCodes], progress: bool) -> _KeptNotes:
    """Pass 1: drop empty, duplicate ``(hadm_id, text)`` and uncoded notes."""
    kept = _KeptNotes()
    seen_texts: set[bytes] = set()
    with _tracked(_mimic4_note_rows(notes), "MIMIC-IV notes (pass 1/2)", progress) as rows:
        for line, row, subject_id, hadm_id in rows:
            note_id, text = row[0], row[6]
            if hadm_id is None or subject_id is None or not text.strip():
                kept.counts["notes_without_admission_or_text"] += 1
                continue
            digest = hashlib.blake2b(f"{hadm_id}\x00{text}".encode(), digest_size=16).digest()
            if digest in seen_texts:
                kept.counts["duplicate_notes"] += 1
                continue
            seen_texts.add(digest)
            if not any(hadm_id in store for store in stores.values()):
                kept.counts["notes_without_codes"] += 1
                continue
            if note_id in kept.notes:
                raise InputError(f"note_id {note_id!r} appears twice with different text", path=notes, line=line)
            kept.notes[note_id] = (subject_id, hadm_id)
    return kept


def _frequent_codes(kept: _KeptNotes, store: AdmissionCodes, min_count: int) -> set[int]:
    """Code ids given to at least ``min_count`` notes (counted over notes, as Edin et al.)."""
    frequency: Counter = Counter()
    for _subject, hadm_id in kept.notes.values():
        if hadm_id in store:
            frequency.update(store.code_ids(hadm_id))
    return {code_id for code_id, count in frequency.items() if count >= min_count}


def _patient_labels(
    kept: _KeptNotes, store: AdmissionCodes, frequent: set[int]
) -> tuple[dict[int, set[int]], set[int]]:
    """Each patient's set of kept codes, and the admissions that still have codes."""
    labels: dict[int, set[int]] = {}
    admissions: set[int] = set()
    for subject_id, hadm_id in kept.notes.values():
        if hadm_id not in store:
            continue
        codes = frequent.intersection(store.code_ids(hadm_id))
        if codes:
            labels.setdefault(subject_id, set()).update(codes)
            admissions.add(hadm_id)
    return labels, admissions


def prepare_mimic4(
    note_dir: str | Path,
    hosp_dir: str | Path,
    out_dir: str | Path,
    *,
    min_code_count: int = 10,
    split_csv: str | Path | None = None,
    test_size: float = 0.15,
    dev_size: float = 0.10,
    seed: int = 10,
    progress: bool = False,
) -> dict:
    """Write ``mimic4_icd9/`` and ``mimic4_icd10/`` ``{train,dev,test}.jsonl``; return and save the counts."""
    note_dir, hosp_dir, out_dir = Path(note_dir), Path(hosp_dir), Path(out_dir)
    notes = find_table(note_dir, "discharge")
    counts: Counter = Counter()
    stores = read_mimic4_codes(find_table(hosp_dir, "diagnoses_icd"), find_table(hosp_dir, "procedures_icd"), counts)
    kept = _select_mimic4_notes(notes, stores, progress)
    counts.update(kept.counts)
    given_splits = read_split_csv(split_csv) if split_csv is not None else None
    plans: dict[str, tuple[set[int], dict[int, str]]] = {}
    for version, store in stores.items():
        frequent = _frequent_codes(kept, store, min_code_count)
        labels, admissions = _patient_labels(kept, store, frequent)
        counts[f"mimic4_icd{version}/codes_kept"] = len(frequent)
        split_of_patient = (
            {}
            if given_splits is not None
            else stratified_patient_splits(labels, test_size=test_size, dev_size=dev_size, seed=seed)
        )
        plans[version] = (frequent, split_of_patient)
        counts[f"mimic4_icd{version}/admissions"] = len(admissions)
    with contextlib.ExitStack() as stack:
        writers = SplitWriters(out_dir, stack)
        for version in stores:
            writers.open(f"mimic4_icd{version}")
        with _tracked(_mimic4_note_rows(notes), "MIMIC-IV notes (pass 2/2)", progress) as rows:
            for _line, row, subject_id, hadm_id in rows:
                if kept.notes.pop(row[0], None) != (subject_id, hadm_id):  # pop: a repeated row is written once
                    continue
                for version, store in stores.items():
                    plan = plans[version]
                    _route_mimic4(writers, counts, row, subject_id, hadm_id, store, plan, given_splits, version)
    counts.update({f"written/{name}": value for name, value in writers.counts.items()})
    split_method = {
        "method": "iterative_stratification_by_patient",
        "test_size": test_size,
        "dev_size": dev_size,
        "seed": seed,
    }
    summary = {
        "dataset": "mimic4",
        "counts": dict(sorted(counts.items())),
        "min_code_count": min_code_count,
        "splits": "given" if given_splits is not None else split_method,
        "files": sorted(f"{dataset}/{split}.jsonl" for dataset, split in writers.handles),
    }
    _write_summary(out_dir / "mimic4_summary.json", summary)
    return summary


def _route_mimic4(
    writers: SplitWriters,
    counts: Counter,
    row: tuple[str, ...],
    subject_id: int,
    hadm_id: int,
    store: AdmissionCodes,
    plan: tuple[set[int], dict[int, str]],
    given_splits: dict[int, str] | None,
    version: str,
) -> None:
    dataset = f"mimic4_icd{version}"
    if hadm_id not in store:
        return
    frequent, split_of_patient = plan
    code_ids = [code_id for code_id in store.code_ids(hadm_id) if code_id in frequent]
    if not code_ids:
        counts[f"{dataset}/dropped_only_rare_codes"] += 1
        return
    split = given_splits.get(hadm_id) if given_splits is not None else split_of_patient.get(subject_id)
    if split is None:
        counts[f"{dataset}/not_in_split_file"] += 1
        return
    note_id, _subject, _hadm, note_type, note_seq, charttime, text = row
    meta = {
        "subject_id": str(subject_id),
        "hadm_id": str(hadm_id),
        "note_type": note_type,
        "note_seq": note_seq,
        "charttime": charttime,
    }
    document = Document(
        id=note_id, text=text, language="en", codes=store.gold(code_ids), source=dataset, split=split, meta=meta
    )
    writers.write(dataset, document)
