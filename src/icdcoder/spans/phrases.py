"""Evidence spans completed to their phrase: a matched term with the modifiers its annotators would have marked.

A lexicon matches "sinovitis" where the note says "sinovitis de cadera", "etilismo" in "etilismo crónico",
"psicótico" in "trastorno psicótico"; CodiEsp's annotators mark the whole mention, site, laterality and chronicity
included, and a reviewer reads the finding better with them. Which words belong is learned from the training notes'
evidence (:meth:`PhraseCompleter.fit`): a word that annotators keep inside a reference more often than they leave it
just outside ("derecha", "crónica", "bilateral" after a finding; "trastorno", "abuso de" before one) may join a span,
a word they leave outside ("presenta", "fue", "realizó") may not. A span grows by such words of the same clause only,
a few characters on each side: never across punctuation or a line break, never past a negation cue (the assertion of
a span is read from the words before it: "no" must stay outside), never ending on a function word.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from icdcoder.data.schema import Document
from icdcoder.errors import InputError
from icdcoder.io import read_text, write_json_or_remove

#: the file of a coder or baseline folder holding its phrase words
PHRASES_FILE = "phrases.json"
#: the characters a span may grow by on each side (the CodiEsp-X scorer accepts a prediction up to 10 characters wider
#: than the reference on each side; the dictionary with and without: ``icdcoder experiment run codiesp_dev``)
PHRASE_CONTEXT_CHARS = 10
#: a word joins spans when annotators kept it inside a reference at least this share of the times it stood at one's
#: edge, and at least ``MIN_INSIDE`` times
MIN_INSIDE_SHARE = 0.5
MIN_INSIDE = 2
#: the references counted: a mention of a few words (a procedure's reference may run over a whole clause)
MAX_REFERENCE_WORDS = 6

_WORD = re.compile(r"[^\W_]+")
#: words a phrase never grows past, whatever the training notes say: negation and its cues (Spanish and English)
_BARRIERS = frozenset("no sin ni niega negativo descarta not without denies negative".split())
#: words a phrase may hold inside but neither starts nor ends with
_FUNCTION_WORDS = frozenset(
    "de del a al en con por para la el lo los las un una unos unas su sus se le les tras entre y e o u "
    "of the a an in on at to with for by from and or".split()
)


@dataclass
class PhraseCompleter:
    """The words that may join a span on its right (after it) and on its left (before it)."""

    right: frozenset[str] = field(default_factory=frozenset)
    left: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def fit(cls, documents: Iterable[Document]) -> PhraseCompleter:
        """Count, over the notes' evidence references of a few words, each word that ends a reference (starts one)
        against the times it is the word just after one (just before one) in the same clause."""
        inside: dict[str, Counter] = {"right": Counter(), "left": Counter()}
        outside: dict[str, Counter] = {"right": Counter(), "left": Counter()}
        for document in documents:
            for gold in document.codes:
                for evidence in gold.evidence:
                    _count_reference(document.text, evidence.start, evidence.end, inside, outside)
        return cls(**{side: _joining_words(inside[side], outside[side]) for side in ("right", "left")})

    def complete(self, text: str, start: int, end: int, max_chars: int = PHRASE_CONTEXT_CHARS) -> tuple[int, int]:
        """``text[start:end]`` grown by at most ``max_chars`` characters on each side by the words that may join it;
        the span itself when none qualifies."""
        if max_chars <= 0 or not 0 <= start < end <= len(text):
            return start, end
        after = _words_after(text, end, max_chars)
        before = _words_before(text, start, max_chars)
        return _edge(before, self.left, start, left=True), _edge(after, self.right, end, left=False)

    def record(self) -> dict[str, list[str]]:
        """The words, as :meth:`save` writes them."""
        return {"right": sorted(self.right), "left": sorted(self.left)}

    def save(self, path: Path) -> None:
        write_json_or_remove(path, self.record())

    @classmethod
    def load(cls, path: Path) -> PhraseCompleter:
        """What :meth:`save` wrote; a clear error for a file that is not that."""
        try:
            record = json.loads(read_text(path))
            return cls(frozenset(map(str, record["right"])), frozenset(map(str, record["left"])))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            reason = str(err).splitlines()[0]
            raise InputError(
                f"malformed phrase words, expected {{right: [...], left: [...]}} ({reason})", path=path
            ) from None


def _key(word: str) -> str:
    return word.lower()


def _count_reference(text: str, start: int, end: int, inside: dict[str, Counter], outside: dict[str, Counter]) -> None:
    words = [_key(m.group()) for m in _WORD.finditer(text, start, end)]
    if not 2 <= len(words) <= MAX_REFERENCE_WORDS:
        return
    inside["right"][words[-1]] += 1
    inside["left"][words[0]] += 1
    after = _words_after(text, end, len(text))[:1]
    before = _words_before(text, start, len(text))[:1]
    outside["right"].update(_key(m.group()) for m in after)
    outside["left"].update(_key(m.group()) for m in before)


def _joining_words(inside: Counter, outside: Counter) -> frozenset[str]:
    return frozenset(
        word
        for word, count in inside.items()
        if count >= MIN_INSIDE and count >= MIN_INSIDE_SHARE * (count + outside[word]) and word not in _BARRIERS
    )


def _joins(gap: str) -> bool:
    """Whether the characters between two words keep them in one phrase: a blank or two, no line break."""
    return gap.strip(" \t") == "" and len(gap) <= 2


def _words_after(text: str, end: int, max_chars: int) -> list[re.Match[str]]:
    """The words right after ``end``, nearest first, within ``max_chars`` characters and the same clause."""
    words = []
    edge = end
    for match in _WORD.finditer(text, end):
        if match.end() - end > max_chars or not _joins(text[edge : match.start()]):
            break
        words.append(match)
        edge = match.end()
    return words


def _words_before(text: str, start: int, max_chars: int) -> list[re.Match[str]]:
    """The words right before ``start``, nearest first, within ``max_chars`` characters and the same clause."""
    words = []
    edge = start
    for match in reversed(list(_WORD.finditer(text, max(0, start - max_chars), start))):
        cut = match.start() > 0 and _WORD.match(text[match.start() - 1]) is not None  # the word begins further away
        if cut or not _joins(text[match.end() : edge]):
            break
        words.append(match)
        edge = match.start()
    return words


def _edge(words: list[re.Match[str]], joining: frozenset[str], edge: int, left: bool) -> int:
    """The new edge of a span: past the nearest words that may join it (a function word only between two that do)."""
    taken: list[re.Match[str]] = []
    for match in words:
        word = _key(match.group())
        if word in _BARRIERS or (word not in joining and word not in _FUNCTION_WORDS):
            break
        taken.append(match)
    while taken and _key(taken[-1].group()) in _FUNCTION_WORDS:
        taken.pop()
    if not taken:
        return edge
    return taken[-1].start() if left else taken[-1].end()
