"""Sentence alignment of a Spanish note with its English machine translation.

CodiEsp ships the English translation one sentence a line without offsets, so
evidence found in Spanish has to be carried over sentence by sentence. We
segment the Spanish note into sentences (the coder's splitter, see
:func:`segment_sentences`) and align them with the English lines
by dynamic programming over beads (1-1, 1-2, 2-1, 1-0, 0-1). A bead's cost is

* a Gale-Church length cost: translated length is roughly proportional to the
  source length, with variance growing with length (the ratio is estimated per
  document, so a terse translation does not skew every bead);
* a prior on the bead type (most pairs are 1-1);
* anchors: numbers (decimal comma or point), number+unit pairs and
  capitalised tokens or abbreviations that survive translation (``HHF35``,
  ``Brucella``) make a bead cheaper when shared and dearer when a number is
  on one side only.

English lines without any letter (``1.`` that the translator emits for blank
Spanish lines) are fillers: they are left out of the alignment.
All functions here are pure; they know nothing of files.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from icdcoder.spans.segment import ABBREVIATIONS, sentence_spans
from icdcoder.text import strip_accents

Span = tuple[int, int]

# Bead shapes (source sentences, target lines) and their prior probabilities (Gale & Church 1993).
BEAD_PRIORS: dict[tuple[int, int], float] = {(1, 1): 0.89, (1, 0): 0.01, (0, 1): 0.01, (2, 1): 0.045, (1, 2): 0.045}
LENGTH_VARIANCE = 6.8
SHARED_ANCHOR_BONUS = 1.0
SHARED_COGNATE_BONUS = 0.5
COGNATE_PREFIX = 5
UNMATCHED_NUMBER_PENALTY = 0.5

#: Periods after these do not end a sentence for alignment, besides the coder's abbreviations (see
#: :func:`segment_sentences`): units and ``etc.``, which the translator's own splitter keeps inside the sentence.
TRANSLATOR_ABBREVIATIONS = ABBREVIATIONS | frozenset("cm mm g gr mg kg dl ml mg/dl g/dl seg etc".split())
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_UNIT = re.compile(r"(\d+(?:[.,]\d+)*)\s*(%|mg|g|kg|mcg|µg|ng|ml|dl|l|mm|cm|m|mmhg|meq|mmol|ui|u|h)\b", re.IGNORECASE)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def segment_sentences(text: str) -> list[Span]:
    """Sentence spans ``[start, end)`` of a Spanish note, for alignment with its translation's lines: the coder's
    splitter (:func:`~icdcoder.spans.segment.sentence_spans`) with :data:`TRANSLATOR_ABBREVIATIONS`.

    Alignment needs the sentences the translator cut, and its splitter keeps a unit's period inside the sentence
    ("13 cm. Local invasion" is one English line): cutting there makes 2-1 beads where the lines pair 1-1 (the
    ``alignment_coverage`` experiment measures it). The coder cuts there, as a unit's period mostly does end a
    sentence and its segments were tuned that way.
    """
    return sentence_spans(text, TRANSLATOR_ABBREVIATIONS)


def _normalise_number(number: str) -> str:
    return number.replace(",", ".")


def numbers(text: str) -> frozenset[str]:
    """The numbers in ``text``, decimal comma read as a point (``40,2`` == ``40.2``)."""
    return frozenset(_normalise_number(n) for n in _NUMBER.findall(text))


def numbers_agree(source: str, target: str) -> bool | None:
    """Whether two aligned texts hold the same numbers; ``None`` when neither holds any.

    Numbers survive translation almost always, so this is a check of an
    alignment that does not depend on how it was made.
    """
    source_numbers, target_numbers = numbers(source), numbers(target)
    if not source_numbers and not target_numbers:
        return None
    return source_numbers == target_numbers


def anchors(sentence: str) -> frozenset[str]:
    """Tokens likely to survive translation.

    ``#``-prefixed: numbers and number+unit pairs; plain: capitalised tokens and
    abbreviations (``HHF35``, ``Brucella``); ``~``-prefixed: cognates, the first
    letters of long words without accents (``ceftriaxona``/``ceftriaxone``).
    """
    found = {"#" + number for number in numbers(sentence)}
    found |= {f"#{_normalise_number(n)} {unit.lower()}" for n, unit in _UNIT.findall(sentence)}
    words = _WORD.findall(sentence)
    for position, word in enumerate(words):
        mixed_case = any(ch.isupper() for ch in word[1:])
        proper_name = position > 0 and word[0].isupper() and len(word) > 2
        if (mixed_case or proper_name) and not word.isdigit():
            found.add(word.lower())
        if len(word) > COGNATE_PREFIX and word.isalpha():
            found.add("~" + strip_accents(word.lower(), keep_enye=False, form="NFD")[:COGNATE_PREFIX])
    return frozenset(found)


def length_cost(source_length: int, target_length: int, ratio: float, variance: float = LENGTH_VARIANCE) -> float:
    """Gale-Church: -log P(length difference) under a normal model of target = ratio * source."""
    if source_length == 0 and target_length == 0:
        return 0.0
    mean_length = (source_length + target_length / ratio) / 2
    delta = (target_length - ratio * source_length) / math.sqrt(max(mean_length, 1.0) * variance)
    return -math.log(max(math.erfc(abs(delta) / math.sqrt(2)), 1e-300))


def anchor_cost(source: frozenset[str], target: frozenset[str]) -> float:
    """Cheaper when anchors are shared, dearer when a number appears on one side only."""
    shared = source & target
    cognates = sum(1 for token in shared if token.startswith("~"))
    unmatched_numbers = sum(1 for token in source ^ target if token.startswith("#") and " " not in token)
    return (
        UNMATCHED_NUMBER_PENALTY * unmatched_numbers
        - SHARED_ANCHOR_BONUS * (len(shared) - cognates)
        - SHARED_COGNATE_BONUS * cognates
    )


@dataclass(frozen=True)
class Bead:
    """Aligned source sentence indices with target line indices, and the bead's cost."""

    source: tuple[int, ...]
    target: tuple[int, ...]
    cost: float

    @property
    def kind(self) -> str:
        return f"{len(self.source)}-{len(self.target)}"


@dataclass(frozen=True)
class _Group:
    """One or two consecutive sentences on one side of a bead: total length and anchors."""

    length: int
    anchors: frozenset[str]


def _groups(sentences: Sequence[str], size: int) -> list[_Group]:
    """``result[i]`` describes ``sentences[i : i + size]`` (only where that many remain)."""
    found = [anchors(sentence) for sentence in sentences]
    return [
        _Group(sum(map(len, sentences[i : i + size])), frozenset().union(*found[i : i + size]))
        for i in range(len(sentences) - size + 1)
    ]


_EMPTY = _Group(0, frozenset())


def align_sentences(source: Sequence[str], target: Sequence[str]) -> list[Bead]:
    """Minimum-cost monotone alignment of source sentences with target sentences."""
    n, m = len(source), len(target)
    total_source = sum(map(len, source))
    ratio = sum(map(len, target)) / total_source if total_source and m else 1.0
    source_groups = {size: _groups(source, size) for size in (1, 2)}
    target_groups = {size: _groups(target, size) for size in (1, 2)}
    priors = {shape: -math.log(p) for shape, p in BEAD_PRIORS.items()}
    best = [[math.inf] * (m + 1) for _ in range(n + 1)]
    back: list[list[tuple[int, int, float] | None]] = [[None] * (m + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if best[i][j] == math.inf:
                continue
            for (di, dj), prior in priors.items():
                if i + di > n or j + dj > m:
                    continue
                src = source_groups[di][i] if di else _EMPTY
                tgt = target_groups[dj][j] if dj else _EMPTY
                cost = prior + length_cost(src.length, tgt.length, ratio) + anchor_cost(src.anchors, tgt.anchors)
                if best[i][j] + cost < best[i + di][j + dj]:
                    best[i + di][j + dj] = best[i][j] + cost
                    back[i + di][j + dj] = (di, dj, cost)
    beads = []
    i, j = n, m
    while i or j:
        di, dj, cost = back[i][j]  # type: ignore[misc]
        beads.append(Bead(tuple(range(i - di, i)), tuple(range(j - dj, j)), cost))
        i, j = i - di, j - dj
    return beads[::-1]


def is_filler_line(line: str) -> bool:
    """A translated line carrying no words (``1.``, empty): not a sentence."""
    return not any(ch.isalpha() for ch in line)


def line_spans(lines: Sequence[str]) -> list[Span]:
    """Character spans of each line in ``"\\n".join(lines)``."""
    spans, offset = [], 0
    for line in lines:
        spans.append((offset, offset + len(line)))
        offset += len(line) + 1
    return spans


@dataclass(frozen=True)
class AlignedDocument:
    """A source text, its target lines, and the sentence alignment between them."""

    source_text: str
    source_spans: tuple[Span, ...]
    target_lines: tuple[str, ...]
    target_units: tuple[int, ...]  # indices of the target lines that take part (fillers excluded)
    beads: tuple[Bead, ...]

    @property
    def target_text(self) -> str:
        return "\n".join(self.target_lines)

    @functools.cached_property
    def _target_line_sources(self) -> list[tuple[Span, tuple[int, ...]]]:
        """Each target line's span in :attr:`target_text` with the source sentences it translates."""
        sources = {line: bead.source for bead in self.beads for line in bead.target}
        return [(span, sources.get(line, ())) for line, span in enumerate(line_spans(self.target_lines))]

    def source_span_of_target(self, start: int, end: int) -> Span | None:
        """The source sentences whose translation overlaps characters ``[start, end)`` of :attr:`target_text`, as one
        span from the first sentence's start to the last one's end; ``None`` when no aligned line overlaps."""
        sentences = [
            sentence
            for (line_start, line_end), sources in self._target_line_sources
            if start < line_end and end > line_start
            for sentence in sources
        ]
        if not sentences:
            return None
        return self.source_spans[min(sentences)][0], self.source_spans[max(sentences)][1]

    def bead_kinds(self) -> Counter:
        return Counter(bead.kind for bead in self.beads)

    @property
    def all_one_to_one(self) -> bool:
        return bool(self.beads) and all(bead.kind == "1-1" for bead in self.beads)

    def number_agreement(self) -> tuple[int, int]:
        """``(agreeing, checked)`` over beads with text on both sides and a number on either side."""
        agreeing = checked = 0
        for bead in self.beads:
            if not bead.source or not bead.target:
                continue
            source = " ".join(self.source_text[slice(*self.source_spans[i])] for i in bead.source)
            verdict = numbers_agree(source, " ".join(self.target_lines[j] for j in bead.target))
            if verdict is not None:
                checked += 1
                agreeing += verdict
        return agreeing, checked

    def quality(self) -> dict[str, str]:
        """Per-document alignment quality, as strings for ``Document.meta``."""
        kinds = self.bead_kinds()
        mean_cost = sum(bead.cost for bead in self.beads) / max(len(self.beads), 1)
        return {
            "alignment_beads": " ".join(f"{kind}:{kinds[kind]}" for kind in sorted(kinds)),
            "alignment_one_to_one": str(self.all_one_to_one).lower(),
            "alignment_mean_cost": f"{mean_cost:.3f}",
            "alignment_filler_lines": str(len(self.target_lines) - len(self.target_units)),
        }


def align_document(source_text: str, target_lines: Sequence[str]) -> AlignedDocument:
    """Segment the source into sentences and align them with the non-filler target lines.

    Memoized (the result is frozen): fitting a coder reads each training note's alignment twice, once to project its
    evidence onto the English version and once for the glossary's sentence pairs."""
    return _aligned_document(source_text, tuple(target_lines))


@functools.lru_cache(maxsize=1024)
def _aligned_document(source_text: str, target_lines: tuple[str, ...]) -> AlignedDocument:
    source_spans = segment_sentences(source_text)
    units = tuple(index for index, line in enumerate(target_lines) if not is_filler_line(line))
    beads = align_sentences(
        [source_text[start:end] for start, end in source_spans], [target_lines[index] for index in units]
    )
    remapped = tuple(Bead(bead.source, tuple(units[t] for t in bead.target), bead.cost) for bead in beads)
    return AlignedDocument(source_text, tuple(source_spans), tuple(target_lines), units, remapped)


def _merge_lines(line_indices: Sequence[int], spans: Sequence[Span]) -> tuple[Span, ...]:
    """One piece per run of consecutive lines (the newlines between them included)."""
    pieces: list[Span] = []
    previous = None
    for index in sorted(set(line_indices)):
        start, end = spans[index]
        if previous is not None and index == previous + 1:
            pieces[-1] = (pieces[-1][0], end)
        else:
            pieces.append((start, end))
        previous = index
    return tuple(pieces)


def project_pieces(aligned: AlignedDocument, pieces: Sequence[Span]) -> tuple[Span, ...]:
    """Target pieces (whole lines) holding the translation of the source pieces; ``()`` when unaligned."""
    sentence_to_lines: dict[int, tuple[int, ...]] = {}
    for bead in aligned.beads:
        for sentence in bead.source:
            sentence_to_lines[sentence] = bead.target
    lines: list[int] = []
    for piece_start, piece_end in pieces:
        for sentence, (start, end) in enumerate(aligned.source_spans):
            if piece_start < end and piece_end > start:
                lines.extend(sentence_to_lines.get(sentence, ()))
    return _merge_lines(lines, line_spans(aligned.target_lines))
