"""Training examples for the span coder: short spans, whole (truncated) notes, and their mix.

A :class:`SpanExample` is a piece of text and the codes it supports, each with a
quote that occurs verbatim in that text. :func:`to_prompt_completion` is the ONLY
place that turns examples into training text, through :mod:`icdcoder.prompt`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from icdcoder.data.schema import Document, Evidence
from icdcoder.errors import InputError
from icdcoder.prompt import Candidate, build_prompt, format_answer
from icdcoder.spans.segment import Segment, segment_note
from icdcoder.text import normalize_text

if TYPE_CHECKING:
    from icdcoder.spans.retrieval import CandidateRetriever

#: English CodiEsp evidence is a whole sentence; quotes are clipped to this many words
MAX_SENTENCE_QUOTE_WORDS = 12
#: (code, system, quote)
Target = tuple[str, str, str]
Schedule = Literal["shuffled", "documents_first", "spans_first"]

#: phrases that announce diagnoses or history, matched on accent-free lower-case text (es + en)
DIAGNOSTIC_CUES = (
    "diagnostico",
    "se diagnostica",
    "diagnosticad",
    "compatible con",
    "antecedente",
    "impresion",
    "sugestivo de",
    "sugestiva de",
    "confirma",
    "presenta",
    "padece",
    "afecto de",
    "afecta de",
    "juicio clinico",
    "jc",
    "tratamiento",
    "se realiza",
    "se practica",
    "intervenid",
    "cirugia",
    "biopsia",
    "ecografia",
    "tac",
    "resonancia",
    "radiografia",
    "diagnosed",
    "diagnosis",
    "consistent with",
    "compatible with",
    "history of",
    "suggestive of",
    "impression",
    "confirmed",
    "underwent",
    "was performed",
    "surgery",
    "biopsy",
    "treated with",
)
_CUE_PATTERN = re.compile(r"\b(?:" + "|".join(re.escape(cue) for cue in DIAGNOSTIC_CUES) + r")")


@dataclass(frozen=True)
class SpanExample:
    """A span (or a truncated note) and the codes it supports, each with a verbatim quote."""

    text: str
    targets: tuple[Target, ...]
    doc_id: str
    start: int
    end: int
    provenance: str
    candidates: tuple[Candidate, ...] = ()

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(code for code, _, _ in self.targets)


def to_prompt_completion(example: SpanExample) -> dict[str, str]:
    """The SFT record of one example: ``{"prompt", "completion"}`` in the shared prompt format."""
    return {
        "prompt": build_prompt(example.text, example.candidates),
        "completion": format_answer([(code, quote) for code, _, quote in example.targets]),
    }


# --------------------------------------------------------------------------- quotes


def _clip_words(text: str, limit: int) -> str:
    """The first ``limit`` words of ``text`` as they read in it (inner spacing kept)."""
    matches = list(re.finditer(r"\S+", text))
    if len(matches) <= limit:
        return text.strip()
    return text[matches[0].start() : matches[limit - 1].end()]


def _quote_within(document: Document, evidence: Evidence, window: Segment) -> str:
    """The evidence as it reads inside ``window``: its longest piece, clipped to the window.

    English CodiEsp evidence spans whole sentences; there the quote is clipped
    to its first :data:`MAX_SENTENCE_QUOTE_WORDS` words so it stays a quote.
    """
    best = ""
    for start, end in evidence.pieces:
        piece = document.text[max(start, window.start) : min(end, window.end)].strip()
        if len(piece) > len(best):
            best = piece
    if document.language != "es":
        best = _clip_words(best, MAX_SENTENCE_QUOTE_WORDS)
    return best


def _segment_index(segments: Sequence[Segment], position: int) -> int | None:
    """The segment holding ``position``, else the first one after it (evidence may start on a space)."""
    for index, segment in enumerate(segments):
        if position < segment.end:
            return index
    return None


def _targets_by_segment(document: Document, segments: Sequence[Segment]) -> dict[int, list[tuple[int, Target]]]:
    """segment index -> [(evidence start, target)], one target per code and segment."""
    found: dict[int, dict[str, tuple[int, Target]]] = {}
    for gold in document.codes:
        for evidence in gold.evidence:
            index = _segment_index(segments, evidence.start)
            if index is None:
                continue
            quote = _quote_within(document, evidence, segments[index])
            if not quote:
                continue
            in_segment = found.setdefault(index, {})
            if gold.code not in in_segment or evidence.start < in_segment[gold.code][0]:
                in_segment[gold.code] = (evidence.start, (gold.code, gold.system, quote))
    return {index: sorted(by_code.values()) for index, by_code in found.items()}


# --------------------------------------------------------------------------- span examples


def _with_context(text: str, segment: Segment, context_words: int) -> Segment:
    """``segment`` widened by up to ``context_words`` words on each side."""
    if context_words <= 0:
        return segment
    before = list(re.finditer(r"\S+", text[: segment.start]))[-context_words:]
    after = list(re.finditer(r"\S+", text[segment.end :]))[:context_words]
    start = before[0].start() if before else segment.start
    end = segment.end + after[-1].end() if after else segment.end
    return Segment(start, end)


def build_span_examples(
    documents: Iterable[Document],
    max_words: int = 40,
    context_words: int = 0,
    negative_ratio: float = 0.3,
    seed: int = 0,
) -> list[SpanExample]:
    """One example per segment holding gold evidence, plus sampled code-free segments.

    Targets are the codes whose evidence starts in the segment, in reading
    order. ``negative_ratio`` sets how many code-free segments (target ``NONE``)
    are added, as a share of the positive examples (0.3 -> 3 negatives per 10
    positives, fewer if the notes do not have that many). ``context_words``
    widens the example text by that many words each side; the targets stay
    those of the segment itself. Examples come in document order.
    """
    if negative_ratio < 0:
        raise InputError(f"negative_ratio must be >= 0 (got {negative_ratio})")
    provenance = "span" if context_words <= 0 else f"span+context{context_words}"
    positives: list[SpanExample] = []
    negatives: list[SpanExample] = []
    for document in documents:
        segments = segment_note(document.text, max_words=max_words)
        targets = _targets_by_segment(document, segments)
        for index, segment in enumerate(segments):
            window = _with_context(document.text, segment, context_words)
            example = SpanExample(
                text=window.text(document.text),
                targets=tuple(target for _, target in targets.get(index, [])),
                doc_id=document.id,
                start=window.start,
                end=window.end,
                provenance=provenance,
            )
            (positives if example.targets else negatives).append(example)
    wanted = min(len(negatives), round(negative_ratio * len(positives)))
    kept = set(random.Random(seed).sample(range(len(negatives)), wanted))
    chosen = positives + [example for index, example in enumerate(negatives) if index in kept]
    order = {document_id: rank for rank, document_id in enumerate(dict.fromkeys(e.doc_id for e in chosen))}
    return sorted(chosen, key=lambda example: (order[example.doc_id], example.start))


# --------------------------------------------------------------------------- document examples


def sentence_cue_score(sentence: str) -> int:
    """How many diagnostic cue phrases (es + en) a sentence holds."""
    return len(_CUE_PATTERN.findall(normalize_text(sentence)))


def _keep_within_budget(
    document: Document,
    segments: Sequence[Segment],
    max_words: int,
    retriever: CandidateRetriever | None,
) -> list[Segment]:
    """The best-scoring segments that fit in ``max_words``, back in reading order.

    Score: diagnostic cues, plus lexical retrieval hits found without the
    document's own gold surface forms (so the choice does not peek at the gold).
    """
    texts = [segment.text(document.text) for segment in segments]
    scores = [float(sentence_cue_score(text)) for text in texts]
    if retriever is not None:
        for index, text in enumerate(texts):
            scores[index] += len(retriever.surface_hits(text, exclude_doc_id=document.id))
    ranked = sorted(range(len(segments)), key=lambda index: (-scores[index], index))
    kept, used = [], 0
    for index in ranked:
        words = len(texts[index].split())
        if used + words <= max_words:
            kept.append(index)
            used += words
    return [segments[index] for index in sorted(kept)]


def _document_targets(document: Document, kept: Sequence[Segment]) -> tuple[Target, ...]:
    """Codes whose evidence starts in a kept segment, first evidence first, one per code."""
    by_code = _targets_by_segment(document, kept)
    first: dict[str, tuple[int, Target]] = {}
    for entries in by_code.values():
        for start, target in entries:
            if target[0] not in first or start < first[target[0]][0]:
                first[target[0]] = (start, target)
    return tuple(target for _, target in sorted(first.values()))


def build_document_examples(
    documents: Iterable[Document],
    max_words: int = 300,
    retriever: CandidateRetriever | None = None,
) -> list[SpanExample]:
    """Whole-note examples, truncated to ``max_words`` by keeping diagnosis-rich segments.

    Kept segments are joined by a space in reading order, so every quote (taken
    inside one segment) is verbatim in the example text. ``retriever`` (fitted
    :class:`~icdcoder.spans.retrieval.CandidateRetriever`) adds its lexical hits
    to the segment scores.
    """
    examples = []
    for document in documents:
        segments = segment_note(document.text, max_words=max_words)
        if not segments:
            continue
        kept = _keep_within_budget(document, segments, max_words, retriever)
        if not kept:
            kept = segments[:1]
        examples.append(
            SpanExample(
                text=" ".join(segment.text(document.text) for segment in kept),
                targets=_document_targets(document, kept),
                doc_id=document.id,
                start=kept[0].start,
                end=kept[-1].end,
                provenance="document" if len(kept) == len(segments) else "document:truncated",
            )
        )
    return examples


# --------------------------------------------------------------------------- candidates and mixing


def attach_candidates(
    examples: Sequence[SpanExample],
    retriever: CandidateRetriever,
    k: int = 8,
    leak_free: bool = True,
) -> list[SpanExample]:
    """Copies of ``examples`` with the retriever's top-``k`` candidates in their prompts.

    With ``leak_free`` each example's own document is excluded from the
    surface-form index, as it would be for a note never seen in training.
    """
    candidates = retriever.retrieve_many(
        [example.text for example in examples],
        k=k,
        exclude_doc_ids=[example.doc_id or None for example in examples] if leak_free else None,
    )
    return [replace(example, candidates=tuple(found.as_candidates())) for example, found in zip(examples, candidates)]


def mix_examples(
    span_examples: Sequence[SpanExample],
    doc_examples: Sequence[SpanExample],
    doc_ratio: float = 0.2,
    schedule: Schedule = "shuffled",
    seed: int = 0,
) -> list[SpanExample]:
    """All span examples plus document examples making up ``doc_ratio`` of the result.

    Document examples are drawn without replacement, cycling through them again
    when more are needed than exist. ``schedule`` orders the result: one
    shuffled stream, documents first, or spans first (each part shuffled).
    """
    if not 0 <= doc_ratio < 1:
        raise InputError(f"doc_ratio must be in [0, 1) (got {doc_ratio})")
    if schedule not in ("shuffled", "documents_first", "spans_first"):
        raise InputError(f"unknown schedule '{schedule}' (shuffled, documents_first, spans_first)")
    rng = random.Random(seed)
    wanted = round(doc_ratio / (1 - doc_ratio) * len(span_examples)) if doc_examples else 0
    documents: list[SpanExample] = []
    while len(documents) < wanted:
        batch = list(doc_examples)
        rng.shuffle(batch)
        documents.extend(batch[: wanted - len(documents)])
    spans = list(span_examples)
    rng.shuffle(spans)
    if schedule == "documents_first":
        return documents + spans
    if schedule == "spans_first":
        return spans + documents
    mixed = spans + documents
    rng.shuffle(mixed)
    return mixed


__all__ = [
    "DIAGNOSTIC_CUES",
    "SpanExample",
    "attach_candidates",
    "build_document_examples",
    "build_span_examples",
    "mix_examples",
    "sentence_cue_score",
    "to_prompt_completion",
]
