"""Split a clinical note into short segments with exact character offsets.

Segments are the unit the span coder reads: sentences, and long sentences cut
further into windows of at most ``max_words`` words, preferably after ``;``,
then after ``,``, and only as a last resort between two words.

Line breaks are always boundaries (the English CodiEsp files hold one sentence
per line). Inside a line, a sentence ends at ``.``, ``!`` or ``?`` followed by
white space and a capital letter, a digit or an opening mark, unless the word
before the full stop is a known abbreviation (``Dr.``, ``p. ej.``, ``aprox.``,
``e.g.``), a single letter, or letters holding dots (``EE.UU.``). Decimals such
as ``3.5`` never split because no space follows the dot; a number or a bracket
before the full stop (``plaquetas 363.000. La``, ``(i.v). Posteriormente``)
does end the sentence.

This is the one sentence splitter: the coder's segments, concepts, procedures
and silver evidence use it as it is, and sentence alignment
(:mod:`icdcoder.data.align`) with more abbreviations.
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from icdcoder.errors import InputError

#: lower-case abbreviations (without the final dot) that do not end a sentence, Spanish and English
ABBREVIATIONS = frozenset(
    {
        # Spanish
        "dr",
        "dra",
        "drs",
        "dras",
        "sr",
        "sra",
        "srta",
        "sres",
        "ud",
        "uds",
        "dña",
        "núm",
        "nº",
        "pág",
        "pag",
        "ej",
        "aprox",
        "aa",
        "ss",
        "art",
        "vol",
        "fig",
        "figs",
        "izq",
        "izda",
        "dcha",
        "dch",
        "der",
        "ant",
        "post",
        "sup",
        "inf",
        "lat",
        "prox",
        "dist",
        "cols",
        "tto",
        "trat",
        "hosp",
        "serv",
        "unid",
        "cap",
        "avda",
        "sta",
        "sto",
        "vv",
        "cc",
        "ca",
        # English
        "mr",
        "mrs",
        "ms",
        "prof",
        "st",
        "vs",
        "cf",
        "approx",
        "dept",
        "no",
        "nos",
        "eg",
        "ie",
        "etal",
    }
)

_SENTENCE_END = re.compile(r"[.!?]+[\"')\]»]*(?=\s)")
_OPENS_SENTENCE = re.compile(r"[A-ZÁÉÍÓÚÑÜ0-9¿¡(\"«\[-]")
_WORD_BEFORE_DOT = re.compile(r"(\S+)\.$")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Segment:
    """A piece of a note: ``note[start:end]``."""

    start: int
    end: int

    def text(self, note: str) -> str:
        return note[self.start : self.end]


def _is_abbreviation(line: str, dot_end: int, abbreviations: AbstractSet[str]) -> bool:
    """Whether the full stop ending at ``dot_end`` belongs to an abbreviation: one of ``abbreviations``, a single
    letter, or letters holding dots (``e.g.``, ``EE.UU.``). A word holding a dot and a digit or a bracket is a
    number or a closed aside (``7.44.``, ``366.000/ul.``, ``etc.).``): the sentence ends there."""
    match = _WORD_BEFORE_DOT.search(line[:dot_end])
    if match is None:
        return False
    word = match.group(1).lstrip("(\"'«[")
    if "." in word:
        return word.replace(".", "").isalpha()
    letters = word.lower()
    return letters in abbreviations or (len(letters) == 1 and letters.isalpha())


def _sentence_ends(line: str, abbreviations: AbstractSet[str]) -> list[int]:
    """Offsets (inside ``line``) just after each sentence-final punctuation run."""
    ends = []
    for match in _SENTENCE_END.finditer(line):
        rest = line[match.end() :].lstrip()
        if not rest or not _OPENS_SENTENCE.match(rest):
            continue
        single_dot = line[match.start()] == "." and match.end() - match.start() == 1
        if single_dot and _is_abbreviation(line, match.end(), abbreviations):
            continue
        ends.append(match.end())
    return ends


def _trimmed(text: str, start: int, end: int) -> Segment | None:
    """``[start, end)`` without surrounding white space; None when nothing is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return Segment(start, end) if end > start else None


def _sentences(text: str, abbreviations: AbstractSet[str] = ABBREVIATIONS) -> list[Segment]:
    segments = []
    line_start = 0
    for line in text.splitlines(keepends=True):
        cuts = [0, *_sentence_ends(line, abbreviations), len(line)]
        for left, right in zip(cuts, cuts[1:]):
            segment = _trimmed(text, line_start + left, line_start + right)
            if segment is not None:
                segments.append(segment)
        line_start += len(line)
    return segments


def sentence_spans(text: str, abbreviations: AbstractSet[str] = ABBREVIATIONS) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of ``text``, without surrounding blanks: the one sentence splitter of the coder's
    segments, concepts and composed procedures, and of sentence alignment (line breaks, then sentence-final punctuation
    before a capital, a digit or an opening mark, abbreviations kept whole).

    ``abbreviations``: the lower-case words whose full stop does not end a sentence (alignment adds units to them).
    """
    return [(segment.start, segment.end) for segment in _sentences(text, abbreviations)]


def _word_count(text: str, segment: Segment) -> int:
    return len(text[segment.start : segment.end].split())


def _cut_after(text: str, segment: Segment, separator: str) -> list[Segment]:
    """Pieces of ``segment`` ending just after each ``separator``."""
    pieces = []
    start = segment.start
    position = text.find(separator, start, segment.end)
    while position >= 0:
        piece = _trimmed(text, start, position + 1)
        if piece is not None:
            pieces.append(piece)
        start = position + 1
        position = text.find(separator, start, segment.end)
    tail = _trimmed(text, start, segment.end)
    if tail is not None:
        pieces.append(tail)
    return pieces


def _cut_words(text: str, segment: Segment, max_words: int) -> list[Segment]:
    """Consecutive windows of ``max_words`` words."""
    words = [
        (segment.start + m.start(), segment.start + m.end()) for m in _WORD.finditer(text[segment.start : segment.end])
    ]
    return [Segment(words[i][0], words[min(i + max_words, len(words)) - 1][1]) for i in range(0, len(words), max_words)]


def _pack(text: str, pieces: list[Segment], max_words: int) -> list[Segment]:
    """Merge consecutive pieces greedily into windows of at most ``max_words`` words."""
    windows: list[Segment] = []
    count = 0
    for piece in pieces:
        words = _word_count(text, piece)
        if windows and count + words <= max_words:
            windows[-1] = Segment(windows[-1].start, piece.end)
            count += words
        else:
            windows.append(piece)
            count = words
    return windows


def _split_long(text: str, segment: Segment, max_words: int, separators: tuple[str, ...] = (";", ",")) -> list[Segment]:
    if _word_count(text, segment) <= max_words:
        return [segment]
    if not separators:
        return _cut_words(text, segment, max_words)
    pieces = []
    for piece in _cut_after(text, segment, separators[0]):
        pieces.extend(_split_long(text, piece, max_words, separators[1:]))
    return _pack(text, pieces, max_words)


def segment_note(text: str, max_words: int = 40) -> list[Segment]:
    """Sentences of ``text``, long ones cut into windows of at most ``max_words`` words."""
    if max_words < 1:
        raise InputError(f"max_words must be at least 1 (got {max_words})")
    segments = []
    for sentence in _sentences(text):
        segments.extend(_split_long(text, sentence, max_words))
    return segments


def note_windows(text: str, max_words: int) -> list[Segment]:
    """The note's sentences merged in reading order into windows of at most ``max_words`` words
    (what a document-level model reads)."""
    return _pack(text, segment_note(text, max_words=max_words), max_words)
