"""Datasets: raw files -> canonical :class:`~icdcoder.data.schema.Document` objects."""

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
    "iter_documents",
    "load_documents",
    "save_documents",
]
