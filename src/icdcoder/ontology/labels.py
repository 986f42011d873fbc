"""The codes a coder chooses among: the systems the span coder writes, and a label space grown from the training codes.

Below every coder, baseline, training and RL module: they all take ``CODER_SYSTEMS`` and :func:`label_space` from here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal, get_args

from icdcoder.data.schema import Document
from icdcoder.errors import InputError

#: the systems the span LLM coder writes (CodiEsp D and P)
CoderSystem = Literal["icd10cm", "icd10pcs"]
CODER_SYSTEMS: tuple[str, ...] = get_args(CoderSystem)
CodeKey = tuple[str, str]  # (code, system)
LabelSpaceMode = Literal["chapters_in_data", "all", "seen"]


def code_key(code: str, system: str) -> str:
    """One string naming a code in its system (codes of different systems may collide)."""
    return f"{system}:{code}"


def split_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`code_key`: ``(code, system)``."""
    system, code = key.split(":", 1)
    return code, system


def category_of(code: str, system: str) -> str:
    """3-character category (ICD-10-CM, ICD-9), or the first 4 characters of an ICD-10-PCS code."""
    if system == "icd10pcs":
        return code[:4]
    return code.split(".")[0]


def _group_of(ontology: Any, code: str, system: str) -> str:
    """The neighbourhood used by ``chapters_in_data``.

    ICD-10-CM / ICD-9: the block holding the code's category (``N40-N53``), or the
    category when the ontology has no block for it. ICD-10-PCS: section + body
    system (2 characters) for 4-character prefixes, the 4-character prefix for
    full codes.
    """
    if system == "icd10pcs":
        return code[:2] if len(code) <= 4 else code[:4]
    category = category_of(code, system)
    block = ontology.parent(category, system) if ontology.get(category, system) is not None else None
    return block or category


def _bare_length(code: str) -> int:
    return len(code.replace(".", ""))


def _common_lengths(seen: set[CodeKey], system: str, min_share: float = 0.01) -> set[int]:
    """Code lengths (without dots) making up at least ``min_share`` of the seen codes of a system."""
    lengths = Counter(_bare_length(code) for code, code_system in seen if code_system == system)
    total = sum(lengths.values())
    return {length for length, count in lengths.items() if count >= min_share * total}


def label_space(
    ontology: Any, documents: Iterable[Document], mode: LabelSpaceMode = "chapters_in_data"
) -> list[CodeKey]:
    """The codes a coder chooses among.

    ``seen``: codes in ``documents``. ``chapters_in_data``: those plus every
    ontology code in the neighbourhood of one of them (see :func:`_group_of`:
    the ICD-10-CM block, the ICD-10-PCS body system / 4-character prefix) whose
    length the data uses (CodiEsp: no 7-character ICD-10-CM extensions; PCS as
    4-character prefixes or full codes). About 60,000 codes for CodiEsp train,
    reaching ~90% of the diagnosis codes of dev that train never shows. ``all``:
    every code of the systems present in ``documents``.
    """
    seen: set[CodeKey] = {(gold.code, gold.system) for document in documents for gold in document.codes}
    if mode == "seen":
        return sorted(seen, key=lambda key: (key[1], key[0]))
    if mode not in ("chapters_in_data", "all"):
        raise InputError(f"unknown label space mode '{mode}' (chapters_in_data, all, seen)")
    space = set(seen)
    for system in sorted({system for _, system in seen}):
        if mode == "all":
            space.update((code, system) for code in ontology.codes(system))
            continue
        lengths = _common_lengths(seen, system)
        candidates = [code for code in ontology.codes(system) if _bare_length(code) in lengths]
        groups = {_group_of(ontology, code, system) for code, code_system in seen if code_system == system}
        if system == "icd10pcs":  # a seen full code also opens its body system to 4-character prefixes
            groups |= {code[:2] for code, code_system in seen if code_system == system}
        space.update((code, system) for code in candidates if _group_of(ontology, code, system) in groups)
    return sorted(space, key=lambda key: (key[1], key[0]))
