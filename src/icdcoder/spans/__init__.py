"""Span-level data for code-centric learning: segmentation, span/document examples,
code-centric expansion from the code system, and candidate retrieval for prompts."""

from __future__ import annotations

from icdcoder.spans.examples import (
    SpanExample,
    attach_candidates,
    build_document_examples,
    build_span_examples,
    mix_examples,
    sentence_cue_score,
    to_prompt_completion,
)
from icdcoder.spans.expansion import (
    CLINICAL_ABBREVIATIONS,
    TeacherParaphraser,
    expand_from_ontology,
    sparse_codes,
)
from icdcoder.spans.retrieval import (
    CandidateRetriever,
    Retrieved,
    RetrieverConfig,
    ScoredCandidate,
    build_codiesp_retriever,
)
from icdcoder.spans.segment import Segment, note_windows, segment_note
from icdcoder.spans.translate import WordTranslator, parallel_sentences
from icdcoder.text import normalize_text

__all__ = [
    "CLINICAL_ABBREVIATIONS",
    "CandidateRetriever",
    "Retrieved",
    "RetrieverConfig",
    "ScoredCandidate",
    "Segment",
    "SpanExample",
    "TeacherParaphraser",
    "WordTranslator",
    "attach_candidates",
    "build_codiesp_retriever",
    "build_document_examples",
    "build_span_examples",
    "expand_from_ontology",
    "mix_examples",
    "normalize_text",
    "parallel_sentences",
    "note_windows",
    "segment_note",
    "sentence_cue_score",
    "sparse_codes",
    "to_prompt_completion",
]
