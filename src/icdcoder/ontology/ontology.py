"""The :class:`Ontology` lookups (resolve, hierarchy, search, GEMs) and its on-disk cache."""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import weakref
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from icdcoder.errors import InputError
from icdcoder.io import load_cached, save_cached
from icdcoder.ontology.build import GROUP_KINDS, STOPWORDS, Tables, build_tables, source_files, tokenize
from icdcoder.ontology.codes import SYSTEMS, check_system, normalize_code

log = logging.getLogger(__name__)

#: (words a child's title adds, words it must not add) that mark it as its parent's default form, strongest first;
#: "with unspecified complications" names a complication, not the default
DEFAULT_CHILD_MARKS: tuple[tuple[frozenset[str], frozenset[str]], ...] = (
    (frozenset({"unspecified"}), frozenset({"with"})),
    (frozenset({"without", "uncomplicated"}), frozenset()),
    (frozenset({"unspecified"}), frozenset()),
)

#: bump when the table layout or the build rules change, so old caches are ignored
CACHE_VERSION = "ontology-v7"


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """One node of a code system: a code, or a chapter/block/prefix grouping codes.

    ``is_leaf`` means no children: for ICD-10-CM that is exactly a billable code.
    ``kind`` is ``chapter | block | category | subcategory | code`` (ICD-10-CM,
    ICD-9), or ``section | prefix | code`` (ICD-10-PCS).
    """

    code: str
    system: str
    description: str
    kind: str
    is_leaf: bool
    parent: str | None
    children: tuple[str, ...]
    inclusion_terms: tuple[str, ...] = ()
    excludes1: tuple[str, ...] = ()
    excludes2: tuple[str, ...] = ()

    @property
    def billable(self) -> bool:
        """Whether the code may be assigned as is (a leaf that is not a grouping)."""
        return self.is_leaf and self.kind not in GROUP_KINDS


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One answer of :meth:`Ontology.search`: higher ``score`` is a better match."""

    code: str
    system: str
    description: str
    score: float


def _systems_tuple(systems: str | Iterable[str] | None) -> tuple[str, ...]:
    if systems is None:
        return SYSTEMS
    chosen = (systems,) if isinstance(systems, str) else tuple(systems)
    return tuple(check_system(system) for system in chosen)


class Ontology:
    """ICD-10-CM, ICD-10-PCS, ICD-9-CM and ICD-9 procedures: codes, titles, hierarchy, search, GEMs.

    Every method accepts codes in any spelling (case, dots, spaces); answers use
    the canonical spelling of :func:`normalize_code`.
    """

    def __init__(self, tables: Tables):
        tables.pack_children()
        self._t = tables
        self._idf_cache: dict[str, float] = {}
        self._codes_cache: dict[tuple[str, bool], tuple[str, ...]] = {}

    # ------------------------------------------------------------------ lookups
    def _row(self, code: str, system: str) -> int | None:
        return self._t.index[check_system(system)].get(normalize_code(code, system))

    def _require_row(self, code: str, system: str) -> int:
        row = self._row(code, system)
        if row is None:
            raise InputError(f"unknown code '{code}' (systems tried: {system})")
        return row

    def resolve(self, code: str, systems: str | Iterable[str] | None = None) -> tuple[str, str] | None:
        """``(canonical code, system)`` of the first system (in order) where ``code`` is a code, else None.

        Chapters and blocks are groupings, not codes, so they do not resolve.
        """
        for system in _systems_tuple(systems):
            row = self._row(code, system)
            if row is not None and self._t.kinds[row] not in GROUP_KINDS:
                return self._t.codes[row], system
        return None

    def is_valid(self, code: str, system: str) -> bool:
        """Whether ``code`` is a code (any level, not a chapter/block) of ``system``."""
        return self.resolve(code, system) is not None

    def get(self, code: str, system: str) -> CodeInfo | None:
        """Everything known about one node (chapters and blocks included), or None."""
        row = self._row(code, system)
        return None if row is None else self._info(row)

    def _info(self, row: int) -> CodeInfo:
        t = self._t
        children = tuple(t.codes[child] for child in t.children_of(row))
        inclusion, excludes1, excludes2 = t.notes.get(row, ((), (), ()))
        parent = t.parents[row]
        return CodeInfo(
            code=t.codes[row],
            system=t.systems[row],
            description=t.descriptions[row],
            kind=t.kinds[row],
            is_leaf=not children,
            parent=t.codes[parent] if parent >= 0 else None,
            children=children,
            inclusion_terms=inclusion,
            excludes1=excludes1,
            excludes2=excludes2,
        )

    def describe(self, code: str, system: str, default: str | None = None) -> str:
        """The title of ``code``; an unknown code returns ``default`` when given, else raises :class:`InputError`."""
        row = self._row(code, system)
        if row is None:
            if default is not None:
                return default
            raise InputError(f"unknown code '{code}' (systems tried: {system})")
        return self._t.descriptions[row]

    # ------------------------------------------------------------------ hierarchy
    def parent(self, code: str, system: str) -> str | None:
        """The parent node's code (a chapter has none; nor does an ICD-9 category)."""
        parent = self._t.parents[self._require_row(code, system)]
        return self._t.codes[parent] if parent >= 0 else None

    def ancestors(self, code: str, system: str) -> list[str]:
        """Codes from the parent up to the root, nearest first."""
        found: list[str] = []
        row = self._t.parents[self._require_row(code, system)]
        while row >= 0:
            found.append(self._t.codes[row])
            row = self._t.parents[row]
        return found

    def children(self, code: str, system: str) -> list[str]:
        """Direct children, in tabular order."""
        return [self._t.codes[child] for child in self._t.children_of(self._require_row(code, system))]

    def siblings(self, code: str, system: str) -> list[str]:
        """The other children of the same parent (empty for a root)."""
        row = self._require_row(code, system)
        parent = self._t.parents[row]
        if parent < 0:
            return []
        return [self._t.codes[child] for child in self._t.children_of(parent) if child != row]

    def default_specific_code(self, code: str, system: str) -> str:
        """The specific ICD-10-CM code a non-specific node stands for when nothing more is said.

        From ``code`` down, each step takes the child whose title marks it as the default form
        (``DEFAULT_CHILD_MARKS``; of several, the one adding the fewest words), else the first child:
        "G43" -> "G43.909", "E11" -> "E11.9", "N00" -> "N00.9", "I25.1" -> "I25.10". The descent stops
        at a billable code, or at a placeholder stem whose children differ only in the 7th character
        (the encounter), the level at which CodiEsp annotates injuries. Specific codes, unknown codes
        and other systems come back unchanged.
        """
        if system != "icd10cm" or self._row(code, system) is None:
            return code
        while not self._is_specific(code):
            code = self._default_child(code)
        return code

    def _is_specific(self, code: str) -> bool:
        children = self.children(code, "icd10cm")
        bare = code.replace(".", "")
        return not children or len(bare) == 6 and all(len(child.replace(".", "")) == 7 for child in children)

    def _default_child(self, code: str) -> str:
        children = self.children(code, "icd10cm")
        parent_words = set(tokenize(self.describe(code, "icd10cm")))
        added = {child: set(tokenize(self.describe(child, "icd10cm"))) - parent_words for child in children}
        for wanted, unwanted in DEFAULT_CHILD_MARKS:
            marked = [child for child in children if added[child] & wanted and not added[child] & unwanted]
            if marked:
                return min(marked, key=lambda child: len(added[child]))
        return children[0]

    def fingerprint(self, system: str) -> str:
        """A digest of ``system``'s codes, titles and inclusion terms: what a cache built from them depends on."""
        t = self._t
        digest = hashlib.sha256()
        for row in t.index[check_system(system)].values():
            inclusion = t.notes.get(row, ((), (), ()))[0]
            digest.update("\x1f".join((t.codes[row], t.descriptions[row], *inclusion)).encode("utf-8") + b"\x1e")
        return digest.hexdigest()

    def codes(self, system: str, leaves_only: bool = False) -> list[str]:
        """Every code of ``system`` (groupings excluded); ``leaves_only`` keeps billable/leaf codes."""
        key = (check_system(system), leaves_only)
        if key not in self._codes_cache:
            t = self._t
            self._codes_cache[key] = tuple(
                t.codes[row]
                for row in t.index[system].values()
                if t.kinds[row] not in GROUP_KINDS and (not leaves_only or not t.has_children(row))
            )
        return list(self._codes_cache[key])

    # ------------------------------------------------------------------ GEMs
    def gem_9_to_10(self, code: str) -> list[str]:
        """ICD-10-CM targets of an ICD-9-CM diagnosis in the CMS GEM (empty when unmapped)."""
        return list(self._t.gem_9_to_10.get(normalize_code(code, "icd9cm"), ()))

    def gem_10_to_9(self, code: str) -> list[str]:
        """ICD-9-CM targets of an ICD-10-CM diagnosis in the CMS GEM (empty when unmapped)."""
        return list(self._t.gem_10_to_9.get(normalize_code(code, "icd10cm"), ()))

    # ------------------------------------------------------------------ search
    def _idf(self, token: str) -> float:
        if token not in self._idf_cache:
            frequency = len(self._t.postings.get(token, ()))
            self._idf_cache[token] = math.log((len(self._t.codes) + 1) / (frequency + 1)) if frequency else 0.0
        return self._idf_cache[token]

    def search(self, words: str, system: str | None = None, limit: int = 20) -> list[SearchHit]:
        """Codes whose title or inclusion terms share words with ``words``, best first.

        Score = sum of the idf of the distinct query words a code contains; ties go
        to codes with fewer words (the more exact match), then to tabular order.
        """
        import numpy as np

        t = self._t
        scores = np.zeros(len(t.codes), dtype=np.float64)
        for token in set(tokenize(words)) - STOPWORDS:
            rows = t.postings.get(token)
            if rows is not None:
                scores[np.frombuffer(rows, dtype=np.uint32)] += self._idf(token)
        matched = scores > 0
        if system is not None:
            matched &= np.frombuffer(t.system_ids, dtype=np.int8) == SYSTEMS.index(check_system(system))
        candidates = np.flatnonzero(matched)
        token_counts = np.frombuffer(t.token_counts, dtype=np.uint16)[candidates]
        order = np.lexsort((candidates, token_counts, -np.round(scores[candidates], 9)))
        ranked = candidates[order[: max(limit, 0)]]
        return [SearchHit(t.codes[row], t.systems[row], t.descriptions[row], float(scores[row])) for row in ranked]

    def __len__(self) -> int:
        return len(self._t.codes)


# ---------------------------------------------------------------------- cache

_T = TypeVar("_T")
#: ontology -> key -> a table computed from it, kept as long as the ontology lives
_DERIVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def derived_table(
    ontology: object,
    key: Hashable,
    compute: Callable[[], _T],
    systems: Sequence[str] = (),
    sources: Sequence[str | Path] = (),
) -> _T:
    """``compute()``, once per ontology and ``key``: a table read off the ontology's ~300,000 terms (the lexicons'
    forms, the value families), which a process fitting several coders on one ontology (the fold coders of ``predict
    fit-trees``, the experiments, the test suite) builds once. Callers only read it; it goes with the ontology.
    Given the ``systems`` whose terms it reads and the ``sources`` of the rules that read them, it is also kept on disk
    for the next process (:func:`cached_on_disk`)."""
    tables = _DERIVED.setdefault(ontology, {})
    if key not in tables:
        tables[key] = cached_on_disk(ontology, repr(key), systems, sources, compute) if sources else compute()
    return tables[key]


def cached_on_disk(
    ontology: object,
    name: str,
    systems: Sequence[str],
    sources: Sequence[str | Path],
    compute: Callable[[], _T],
    expected: type = object,
) -> _T:
    """``compute()``, or its value from the project cache (:func:`cache_dir`) when a process on this machine derived
    ``name`` from the same terms of ``systems`` (:meth:`Ontology.fingerprint`) by the same rules (the bytes of the
    ``sources`` files). Each ``name`` keeps its latest file only. An ontology that cannot fingerprint its terms (the
    tests' stand-ins) is never cached."""
    fingerprint = getattr(ontology, "fingerprint", None)
    if fingerprint is None:
        return compute()
    content = hashlib.sha256(CACHE_VERSION.encode())
    for system in systems:
        content.update(fingerprint(system).encode())
    for source in sources:
        content.update(Path(source).read_bytes())
    stem = "derived-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    path = cache_dir() / f"{stem}-{content.hexdigest()[:16]}.pkl"
    value = load_cached(path, expected)
    if value is None:
        value = compute()
        save_cached(path, value)
        for older in path.parent.glob(f"{stem}-*.pkl"):
            if older != path:
                older.unlink(missing_ok=True)
    return value


def cache_dir() -> Path:
    """``$ICDCODER_CACHE`` or ``~/.cache/icdcoder``."""
    return Path(os.environ.get("ICDCODER_CACHE") or Path.home() / ".cache" / "icdcoder")


def _cache_path(files: dict[str, Path]) -> Path:
    key = hashlib.sha256(CACHE_VERSION.encode())
    for name, path in sorted(files.items()):
        stat = path.stat()
        key.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return cache_dir() / f"ontology-{key.hexdigest()[:16]}.pkl"


def build_or_load_tables(rebuild: bool = False) -> Tables:
    """The tables from the cache when it matches the source files, else built (and cached)."""
    files = source_files()
    path = _cache_path(files)
    tables = None if rebuild else load_cached(path, Tables)
    if tables is None:
        log.info("building the ICD ontology cache at %s", path)
        tables = build_tables(files)
        save_cached(path, tables)
    return tables


@functools.cache
def load_ontology() -> Ontology:
    """The ontology of all four systems, built once per machine and memoised per process."""
    return Ontology(build_or_load_tables())
