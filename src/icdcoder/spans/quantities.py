"""Codes named by a measured value: weeks of gestation, body mass index, Glasgow coma score, birth weight, the share
of the body surface burned.

ICD-10-CM writes the value into the title of each code of such a family ("Z3A.27 27 weeks gestation of pregnancy",
"Z68.25 Body mass index [BMI] 25.0-25.9, adult"). A lexicon of training surface forms cannot reach the family's codes
that no training note carries: "gestación de 27 semanas" is not the form "gestación de 38 semanas". So:

- :func:`value_families` reads the families off the titles: codes whose titles differ only in one number or range,
  each code with the interval of values it covers;
- :meth:`QuantityTemplates.build` learns from the training notes the short phrases written around such a value
  ("# semana gestacion", "imc #": words folded as the lexicon folds them, a few function words dropped, ``#`` the
  value), each with the family it names and how often it named the right code there;
- :meth:`QuantityTemplates.matches` finds those phrases in a note, reads the value at the slot and names the
  family's narrowest code covering it, scored by the phrase's reliability on the training notes.

Templates are learned per language, from the notes of that language, so they carry no translation.
A value with a point and three decimals ("2.320 gramos") reads as a decimal, not as thousands.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from icdcoder.data.schema import Document
from icdcoder.errors import InputError
from icdcoder.ontology.ontology import derived_table
from icdcoder.spans.lexicon import smoothed_reliability
from icdcoder.text import normalize_word

#: a number in a title, not part of a code-like word ("C3/C4", "T11")
_TITLE_NUMBER = r"(?<![\w./])(\d+(?:\.\d+)?)%?(?![\w/])"
#: the ways a title writes a value or a range of values, most specific first; each names its bounds
_TITLE_VALUE = re.compile(
    "|".join(
        (
            rf"\b(?:less than|fewer than|under|below) {_TITLE_NUMBER}",
            rf"\b(?:greater than|more than|over|above) {_TITLE_NUMBER}",
            rf"{_TITLE_NUMBER}\s*(?:-|to|through)\s*{_TITLE_NUMBER}",
            rf"{_TITLE_NUMBER} or (?:less|fewer|under|below)",
            rf"{_TITLE_NUMBER} or (?:more|greater|over|above)",
            _TITLE_NUMBER,
        )
    ),
    re.IGNORECASE,
)
#: a note's tokens: a number (decimal point or comma) or a word
_TOKEN = re.compile(r"\d+(?:[.,]\d+)?(?!\w)|\w+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
#: the value's place in a template
SLOT = "#"
#: words a template skips, so that "IMC de 25" and "IMC 25" are one phrase
FUNCTION_WORDS = frozenset("de del el la los las un una al a en y of the an in at and".split())
#: words on either side of the value a template may hold, together
MAX_TEMPLATE_WORDS = 3
#: a family has at least this many codes (a title with a number that no sibling shares is not a measured value)
MIN_FAMILY_CODES = 2


@dataclass(frozen=True)
class ValueCode:
    """A code of a family and the values it covers: ``low <= value < high``."""

    code: str
    low: float
    high: float

    def covers(self, value: float) -> bool:
        return self.low <= value < self.high

    @property
    def width(self) -> float:
        return self.high - self.low


def _step(number: str) -> float:
    """The precision a title writes a bound in: "25.9" -> 0.1, "15" -> 1."""
    decimals = len(number.partition(".")[2])
    return 10.0**-decimals


def title_interval(title: str) -> tuple[str, float, float] | None:
    """The family key of ``title`` (the title with its value written as ``#``) and the values it covers, when it
    writes exactly one value or range: "Body mass index [BMI] 25.0-25.9, adult" -> ("body mass index [bmi] #,
    adult", 25.0, 26.0); "Greater than 42 weeks gestation of pregnancy" -> ("# weeks gestation of pregnancy", 43, inf)."""
    found = list(_TITLE_VALUE.finditer(title))
    if len(found) != 1:
        return None
    match = found[0]
    less, greater, range_low, range_high, at_most, at_least, plain = match.groups()
    if less:
        low, high = -math.inf, float(less)
    elif greater:
        low, high = float(greater) + _step(greater), math.inf
    elif range_low:
        low, high = float(range_low), float(range_high) + _step(range_high)
    elif at_most:
        low, high = -math.inf, float(at_most) + _step(at_most)
    elif at_least:
        low, high = float(at_least), math.inf
    else:
        low, high = float(plain), float(plain) + 1.0
    key = (title[: match.start()] + SLOT + title[match.end() :]).lower()
    return key, low, high


def value_families(titles: Iterable[tuple[str, str]]) -> dict[str, list[ValueCode]]:
    """Family key -> its codes with their intervals, from ``(code, title)`` pairs; only families of at least
    ``MIN_FAMILY_CODES`` codes that cover different values."""
    families: dict[str, list[ValueCode]] = defaultdict(list)
    for code, title in titles:
        parsed = title_interval(title)
        if parsed is not None:
            key, low, high = parsed
            families[key].append(ValueCode(code, low, high))
    return {
        key: sorted(codes, key=lambda c: c.code)
        for key, codes in families.items()
        if len(codes) >= MIN_FAMILY_CODES and len({(c.low, c.high) for c in codes}) > 1
    }


def ontology_value_families(ontology, system: str = "icd10cm") -> dict[str, list[ValueCode]]:
    """:func:`value_families` of every title of ``system``, read off ~100,000 titles once per ontology
    (:func:`derived_table`: ``predict fit-trees`` and the experiments fit a fold coder per fold on one ontology) and
    kept on disk."""
    return derived_table(
        ontology,
        ("value families", system),
        lambda: value_families((code, ontology.describe(code, system, default="")) for code in ontology.codes(system)),
        (system,),
        (__file__,),
    )


def code_for_value(family: Sequence[ValueCode], value: float) -> str | None:
    """The family's narrowest code covering ``value`` ("41" -> Z68.41 "40.0-44.9", not Z68.4 "40 or greater")."""
    covering = [code for code in family if code.covers(value)]
    return min(covering, key=lambda c: (c.width, c.code)).code if covering else None


def parse_value(number: str) -> float:
    """A note's number as a value: "19,6" -> 19.6."""
    return float(number.replace(",", "."))


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    norm: str
    value: float | None


def value_tokens(text: str) -> list[_Token]:
    """The tokens a template reads: numbers with their value, words folded as the lexicon folds them; function
    words left out."""
    tokens = []
    for match in _TOKEN.finditer(text):
        word = match.group()
        if _NUMBER.fullmatch(word):
            tokens.append(_Token(match.start(), match.end(), SLOT, parse_value(word)))
        else:
            norm = normalize_word(word, fold_plurals=True)
            if norm not in FUNCTION_WORDS:
                tokens.append(_Token(match.start(), match.end(), norm, None))
    return tokens


def _windows(tokens: Sequence[_Token]) -> Iterator[tuple[str, float, int, int]]:
    """Each phrase around a number: ``(template, value, start, end)`` for up to ``MAX_TEMPLATE_WORDS`` words on
    either side together, none of them another number; longest first, so that of two equally reliable phrases the
    evidence is the longer ("diabetes mellitus tipo 1", not "mellitus tipo 1")."""
    for position, token in enumerate(tokens):
        if token.value is None:
            continue
        for before in range(MAX_TEMPLATE_WORDS, -1, -1):
            for after in range(MAX_TEMPLATE_WORDS - before, -1, -1):
                first, last = position - before, position + after
                if (before == after == 0) or first < 0 or last >= len(tokens):
                    continue
                window = tokens[first : last + 1]
                if any(t.value is not None for t in window if t is not token):
                    continue
                yield " ".join(t.norm for t in window), token.value, window[0].start, window[-1].end


@dataclass(frozen=True)
class QuantityMatch:
    """A code named by a template in a text: ``text[start:end]`` is the phrase, ``reliability`` its score."""

    code: str
    start: int
    end: int
    reliability: float


@dataclass
class TemplateCounts:
    """How a template fared on the training notes for one family: notes it matched, and those where it named a
    code the note carries."""

    matched: int = 0
    right: int = 0

    @property
    def reliability(self) -> float:
        """(right + 1) / (matched + 2): a template never wrong tends to 1, one often wrong to 0."""
        return smoothed_reliability(self.right, self.matched)


class QuantityTemplates:
    """Phrases around a value -> the families they name, with their counts on the training notes."""

    def __init__(self, families: dict[str, list[ValueCode]], templates: dict[str, dict[str, TemplateCounts]]):
        self.families = families
        self.templates = templates

    def __len__(self) -> int:
        return len(self.templates)

    @classmethod
    def build(
        cls,
        documents: Sequence[Document],
        families: dict[str, list[ValueCode]],
        system: str = "icd10cm",
        min_right: int = 2,
        min_reliability: float = 0.3,
    ) -> QuantityTemplates:
        """Templates that named a code its note carries in at least ``min_right`` training notes, with at least
        ``min_reliability`` there ("# años" names a body mass index in a few notes, and an age in hundreds).

        Candidates are the phrases around a value whose family code is gold in the note; each is then counted on
        every note.
        """
        notes = [(value_tokens(doc.text), doc.code_set(system)) for doc in documents]
        counts = _count_templates(notes, _candidate_templates(notes, families), families)
        kept: dict[str, dict[str, TemplateCounts]] = defaultdict(dict)
        for template, by_key in counts.items():
            for key, found in by_key.items():
                if found.right >= min_right and found.reliability >= min_reliability:
                    kept[template][key] = found
        used = {key for by_key in kept.values() for key in by_key}
        return cls({key: families[key] for key in sorted(used)}, dict(kept))

    def matches(self, text: str) -> list[QuantityMatch]:
        """Every code a template names in ``text``, with the template's phrase as evidence."""
        found = []
        for template, value, start, end in _windows(value_tokens(text)):
            for key, counts in self.templates.get(template, {}).items():
                code = code_for_value(self.families[key], value)
                if code is not None:
                    found.append(QuantityMatch(code, start, end, counts.reliability))
        return found

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> dict:
        return {
            "families": {
                key: [[c.code, _bound(c.low), _bound(c.high)] for c in codes] for key, codes in self.families.items()
            },
            "templates": {
                template: {key: [c.matched, c.right] for key, c in sorted(by_key.items())}
                for template, by_key in sorted(self.templates.items())
            },
        }

    @classmethod
    def from_json(cls, record: dict, source: str) -> QuantityTemplates:
        """The inverse of :meth:`to_json`; a malformed record fails in one line naming ``source``."""
        try:
            families = {
                str(key): [
                    ValueCode(str(code), _unbound(low, -math.inf), _unbound(high, math.inf))
                    for code, low, high in codes
                ]
                for key, codes in record["families"].items()
            }
            templates = {
                str(template): {
                    str(key): TemplateCounts(int(matched), int(right)) for key, (matched, right) in by_key.items()
                }
                for template, by_key in record["templates"].items()
            }
        except (KeyError, AttributeError, TypeError, ValueError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise InputError(f"malformed value templates ({reason})", path=source) from None
        for by_key in templates.values():
            for key, counts in by_key.items():
                if key not in families:
                    raise InputError(f"malformed value templates: template names unknown family {key!r}", path=source)
                if not 0 <= counts.right <= counts.matched:
                    raise InputError("malformed value templates: each needs 0 <= right <= matched", path=source)
        return cls(families, templates)


_Note = tuple[list[_Token], set[str]]


def _candidate_templates(notes: Sequence[_Note], families: dict[str, list[ValueCode]]) -> dict[str, set[str]]:
    """Template -> the families it named a gold code of in some note (a note's tokens and gold codes)."""
    family_of: dict[str, list[str]] = defaultdict(list)
    for key, codes in families.items():
        for code in codes:
            family_of[code.code].append(key)
    candidates: dict[str, set[str]] = defaultdict(set)
    for tokens, gold in notes:
        keys = {key for code in gold for key in family_of.get(code, ())}
        for template, value, _, _ in _windows(tokens):
            named = {key for key in keys if code_for_value(families[key], value) in gold}
            if named:  # only phrases that named a gold code become candidates
                candidates[template] |= named
    return dict(candidates)


def _count_templates(
    notes: Sequence[_Note], candidates: dict[str, set[str]], families: dict[str, list[ValueCode]]
) -> dict[str, dict[str, TemplateCounts]]:
    """For each candidate template and family: the notes where it names a code, and those where that code is gold."""
    counts: dict[str, dict[str, TemplateCounts]] = defaultdict(lambda: defaultdict(TemplateCounts))
    for tokens, gold in notes:
        named: dict[tuple[str, str], bool] = {}
        for template, value, _, _ in _windows(tokens):
            for key in candidates.get(template, ()):
                code = code_for_value(families[key], value)
                if code is not None:
                    named[template, key] = named.get((template, key), False) or code in gold
        for (template, key), right in named.items():
            counts[template][key].matched += 1
            counts[template][key].right += right
    return counts


def _bound(value: float) -> float | None:
    """An interval bound as JSON: infinite bounds are ``null``."""
    return None if math.isinf(value) else value


def _unbound(value: float | None, infinite: float) -> float:
    return infinite if value is None else float(value)
