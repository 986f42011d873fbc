"""ICD code systems: canonical codes, titles, hierarchy, word search and GEM mappings.

``load_ontology()`` returns the cached :class:`Ontology` of ICD-10-CM, ICD-10-PCS,
ICD-9-CM and ICD-9 procedures (``SYSTEMS``).
"""

from __future__ import annotations

from icdcoder.ontology.codes import SYSTEMS, normalize_code
from icdcoder.ontology.ontology import CodeInfo, Ontology, SearchHit, load_ontology

__all__ = ["SYSTEMS", "CodeInfo", "Ontology", "SearchHit", "load_ontology", "normalize_code"]
