"""Datasets: raw files -> canonical :class:`~icdcoder.data.schema.Document` objects."""

from icdcoder.data.codiesp import alignment_report, codiesp_stats, load_codiesp, load_codiesp_labels
from icdcoder.data.schema import (
    CODE_SYSTEMS,
    DIAGNOSIS_SYSTEMS,
    Document,
    Evidence,
    GoldCode,
    iter_documents,
    load_documents,
    save_documents,
)

__all__ = [
    "CODE_SYSTEMS",
    "DIAGNOSIS_SYSTEMS",
    "Document",
    "Evidence",
    "GoldCode",
    "alignment_report",
    "codiesp_stats",
    "iter_documents",
    "load_codiesp",
    "load_codiesp_labels",
    "load_documents",
    "save_documents",
]
