"""Canonical spelling of ICD codes, shared by the builder and the lookups.

Canonical forms (the ones stored in :mod:`icdcoder.data.schema`): upper case, no
whitespace; ICD-10-CM and ICD-9-CM diagnoses dotted after the 3rd character
(ICD-9 E-codes after the 4th), ICD-9 procedures after the 2nd, ICD-10-PCS
undotted. Chapter and block ranges (``A00-B99``) keep their dash and no dots.
"""

from __future__ import annotations

import re

from icdcoder.errors import InputError

SYSTEMS: tuple[str, ...] = ("icd10cm", "icd10pcs", "icd9cm", "icd9pcs")

_SPACES = re.compile(r"\s+")


def check_system(system: str) -> str:
    """Return ``system`` when it is a known system name, else raise a one-line error."""
    if system not in SYSTEMS:
        raise InputError(f"unknown code system '{system}' (expected one of: {', '.join(SYSTEMS)})")
    return system


def _dot_position(bare: str, system: str) -> int:
    if system == "icd9pcs":
        return 2
    if system == "icd9cm" and bare.startswith("E"):
        return 4
    return 3


def normalize_code(code: str, system: str) -> str:
    """Spell ``code`` canonically for ``system`` (whatever its case, dots or spaces).

    Only the spelling changes: the result is not checked against the ontology
    (use :meth:`Ontology.resolve` for that).
    """
    check_system(system)
    bare = _SPACES.sub("", str(code)).upper().replace(".", "")
    if "-" in bare or system == "icd10pcs":
        return bare
    position = _dot_position(bare, system)
    if len(bare) <= position:
        return bare
    return bare[:position] + "." + bare[position:]
