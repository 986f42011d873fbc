"""The one prompt/answer format shared by SFT, RL (GRPO/PHI) and inference.

A prompt shows a piece of a note (a span or a whole document), optionally a
list of candidate codes with short descriptions (retrieval), and, during PHI
training only, hints. The answer is one line per code::

    N44.8 | teste derecho aumentado de tamaño
    BW03ZZZ | Rx tórax

or the single line ``NONE``. Every code must come with a verbatim quote from the
note; the parser checks both and drops (and counts) what fails.

No chat template is used: the instruct models' default system prompts cost
more tokens than the spans themselves, and the format is learned by SFT.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

NONE_ANSWER = "NONE"
ANSWER_MARKER = "Answer:\n"
_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9.]{1,9})\s*\|\s*(.*?)\s*$")

#: resolve(code) -> (canonical code, system) or None when the code is not in the ontology
CodeResolver = Callable[[str], "tuple[str, str] | None"]


@dataclass(frozen=True)
class Candidate:
    """A code offered to the model in the prompt, with a short description."""

    code: str
    description: str


@dataclass(frozen=True)
class AnswerItem:
    """One parsed, validated answer line: a code and where its quote sits in the source."""

    code: str
    system: str
    quote: str
    start: int
    end: int


@dataclass
class ParsedAnswer:
    items: list[AnswerItem] = field(default_factory=list)
    #: why lines were dropped: malformed, duplicate, unknown_code, no_quote, quote_not_found
    dropped: Counter = field(default_factory=Counter)
    #: True when every non-empty line was NONE or a well-formed ``CODE | quote`` line
    well_formed: bool = True
    said_none: bool = False


def build_prompt(
    text: str,
    candidates: Sequence[Candidate] = (),
    hints: Sequence[Candidate] = (),
) -> str:
    """The prompt for one span or document; the completion starts right after it."""
    parts = ["Assign ICD-10 codes. Quote the evidence.", f"Text: {text.strip()}"]
    if candidates:
        parts.append("Candidates:\n" + "\n".join(f"{c.code} {c.description}" for c in candidates))
    if hints:
        parts.append("Hint, codes likely present:\n" + "\n".join(f"{c.code} {c.description}" for c in hints))
    return "\n".join(parts) + "\n" + ANSWER_MARKER


def answer_opening(code: str) -> str:
    """How an answer line naming ``code`` starts, up to its quote (what the LLM's candidate scoring reads)."""
    return f"{code} |"


def format_answer(items: Sequence[tuple[str, str]]) -> str:
    """The target completion for ``(code, quote)`` pairs; ``NONE`` when there are none."""
    if not items:
        return NONE_ANSWER
    return "\n".join(f"{answer_opening(code)} {' '.join(quote.split())}" for code, quote in items)


def find_quote(quote: str, source: str) -> tuple[int, int] | None:
    """Locate a model's verbatim ``quote`` in ``source``: exact, then case-insensitive, then whitespace-tolerant, all
    three first as whole words and only then inside longer words. So "renal" quoted from "masa suprarrenal e
    insuficiencia renal" is the second "renal", and from "masa suprarrenal" alone still the first."""
    words = quote.split()
    if not words:
        return None
    exact, spaced = re.escape(quote), r"\s+".join(map(re.escape, words))
    for bounded in (True, False):
        for body, flags in ((exact, 0), (exact, re.IGNORECASE), (spaced, re.IGNORECASE)):
            match = re.search(rf"(?<!\w){body}(?!\w)" if bounded else body, source, flags)
            if match:
                return match.start(), match.end()
    return None


def find_words(phrase: str, source: str) -> tuple[int, int] | None:
    """Locate ``phrase`` in ``source`` as whole words: case-insensitive, any whitespace between its words, and never
    inside a longer word, so that a training form "febril" is not found in "afebril" nor "renal" in "suprarrenal"
    (:func:`find_quote` falls back to those, a model's quote being verbatim). The first such occurrence, or None."""
    pattern = _whole_words_pattern(" ".join(phrase.split()))
    match = pattern.search(source) if pattern is not None else None
    return (match.start(), match.end()) if match else None


@functools.lru_cache(maxsize=4096)
def _whole_words_pattern(phrase: str) -> re.Pattern[str] | None:
    if not phrase:
        return None
    return re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, phrase.split())) + r"(?!\w)", re.IGNORECASE)


def parse_answer(completion: str, source: str, resolve: CodeResolver) -> ParsedAnswer:
    """Parse an untrusted completion against the text it was asked about.

    Never raises: malformed lines, codes not in the ontology, repeated codes and
    quotes that do not occur in ``source`` are dropped and counted.
    """
    parsed = ParsedAnswer()
    seen: set[str] = set()
    for raw in completion.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.upper() == NONE_ANSWER:
            parsed.said_none = True
            continue
        match = _LINE.match(line)
        if match is None:
            parsed.dropped["malformed"] += 1
            parsed.well_formed = False
            continue
        resolved = resolve(match.group(1))
        if resolved is None:
            parsed.dropped["unknown_code"] += 1
            continue
        code, system = resolved
        quote = match.group(2).strip().strip('"')
        if not quote:
            parsed.dropped["no_quote"] += 1
            continue
        if code in seen:
            parsed.dropped["duplicate"] += 1
            continue
        span = find_quote(quote, source)
        if span is None:
            parsed.dropped["quote_not_found"] += 1
            continue
        seen.add(code)
        parsed.items.append(AnswerItem(code, system, source[span[0] : span[1]], span[0], span[1]))
    return parsed
