"""A compact ConText engine (Harkema et al., 2009, as medspaCy implements it) over rule files that are data.

Why not medspaCy itself: every medspaCy release caps spaCy below 3.8 on Python < 3.12, which on this project's Python
3.11 means thinc 8.2 and numpy < 2 (a downgrade of the whole environment), and it pulls ~30 packages (QuickUMLS,
PyRuSH, Cython, nltk, pytest) that ConText does not use. The algorithm is small: this module reimplements it over the
same rule schema, and the rule files load in medspaCy's ``ConTextRule.from_json`` unchanged (the extensions below
live in ``metadata`` and in top-level keys medspaCy ignores).

ConText, as medspaCy has it:

* a **rule** (a ``context_rules`` entry) has a ``category`` (``NEGATED_EXISTENCE``, ``POSSIBLE_EXISTENCE``,
  ``HISTORICAL``, ``HYPOTHETICAL``, ``FAMILY``; any label for ``TERMINATE``/``PSEUDO`` rules), a ``literal`` or a
  ``pattern`` (token specs in spaCy's Matcher syntax: ``NORM``, ``LOWER``, ``TEXT`` or ``ORTH`` equal to a string,
  ``{"IN": [...]}`` or ``{"REGEX": "..."}``, ``{}`` for any token, ``OP`` ``?``/``*``/``+``), a ``direction``
  (``FORWARD``, ``BACKWARD``, ``BIDIRECTIONAL``, ``TERMINATE``, ``PSEUDO``) and an optional ``max_scope`` in tokens;
* overlapping matches are pruned to the longest, so a **pseudo** cue ("no change", "gram negative") swallows the
  cue inside it and modifies nothing. Two rules matching the same thing are refused (only one could ever apply);
* a cue's **scope** runs from it to the end (FORWARD) or the start (BACKWARD) of its sentence, or both
  (BIDIRECTIONAL), at most ``max_scope`` tokens, cut at a **terminating** cue ("pero", "but") and at the next cue of
  the same category ("no fever, no cough": each "no" owns its scope);
* a **target** (an evidence span) takes a cue's trait when its tokens overlap the scope and not the cue.

What this engine adds (all of it data in the rule files):

* matching on accent-free lower case: literals and ``NORM`` compare without accents (clinical notes drop them:
  ``asintomatico`` matches ``asintomático``); ``LOWER``/``TEXT``/``ORTH`` keep them ("si", if, is not "sí", yes);
* a cue at the **edge of a span** counts: "sin diabetes" given as one span is negated, and so is "evidence of
  fracture" after "no evidence of" (FORWARD cues starting at or before the span; BACKWARD ones ending at or after it).
  A negation cue in the middle of a span counts when the span is mostly what it negates: its scope covers the span's far
  side, and that side holds more of the span's words than the near side, the negation word left out ("ECG sin evidencia
  de infarto" is negated, "refiere dolor torácico, sin fiebre" and "náuseas sin vómitos" are not);
  ``metadata.inside_span: false`` keeps a cue from doing so ("ni", "nor": a list going on inside the span; its
  negation, if any, comes from before it);
* ``metadata.terminates``: the categories a TERMINATE rule ends (all when absent); ``metadata.cuts``: the scopes it
  cuts, those running ``FORWARD`` into it, ``BACKWARD`` into it, or both (default); ``metadata.unless_followed_by``
  (with ``window``, tokens): a terminator that does not terminate when one of these words follows ("no X, Y ni Z":
  the comma does not end a list that "ni" goes on with);
* ``metadata.cue_length`` (FORWARD rules): only the first N matched tokens are the cue, the rest conditions the match
  and lies in the scope. With ``max_scope: 1`` this is NUBes' reading of a pseudo-negation: in "sin cambios en la
  lesión" the changes are negated, the lesion is not;
* ``cancels`` (top level): ``{"outer", "inner", "window"}``: a cue of the inner category inside the scope of a cue of
  the outer one, at most ``window`` tokens away, is void ("sin signos sugestivos de X": the negation cancels the
  uncertainty, as the NUBes guidelines read it);
* ``morphological`` (top level): words whose span *is* the finding with a trait: a span whose whole text is
  "afebril" or "asintomático" is negated, "exfumador" historical.

Sentences are lines and text ending in ``.``, ``!``, ``?`` or ``;``. Only the sentences holding a span are tokenized
and matched, so a note costs about a millisecond.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, get_args

from icdcoder.errors import InputError
from icdcoder.text import strip_accents

#: rule category -> the trait it gives a span
CATEGORY_TRAITS = {
    "NEGATED_EXISTENCE": "negated",
    "POSSIBLE_EXISTENCE": "uncertain",
    "HISTORICAL": "historical",
    "HYPOTHETICAL": "hypothetical",
    "FAMILY": "family",
}
#: every trait, in the order outputs list them
Trait = Literal["negated", "uncertain", "historical", "hypothetical", "family"]
TRAITS: tuple[str, ...] = get_args(Trait)
DIRECTIONS = ("FORWARD", "BACKWARD", "BIDIRECTIONAL", "TERMINATE", "PSEUDO")
RULES_DIR = Path(__file__).resolve().parent / "rules"
LANGUAGES = ("es", "en")

#: the keys of medspaCy's ConTextRule JSON (the last three are refused: spans here carry no types, and how many
#: targets a cue may take depends on which spans a caller passes)
_RULE_KEYS = {"literal", "pattern", "category", "direction", "max_scope", "metadata"} | {
    "allowed_types",
    "excluded_types",
    "max_targets",
}
_SPEC_ATTRS = ("LOWER", "NORM", "TEXT", "ORTH")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(r"\n|(?<=[.!?;])[ \t]+|(?<=\.)(?=[A-ZÁÉÍÓÚÑ][a-záéíóúñ])")


def normalize(text: str) -> str:
    """Lower case without accents (``á`` -> ``a``, ``ñ`` -> ``n``): what rules and tokens are compared on.

    Canonical decomposition only (``NFD``): ``º`` stays, as the rules were written and measured.
    """
    return strip_accents(text.lower(), keep_enye=False, form="NFD")


def tokenize(text: str, offset: int = 0) -> list[tuple[int, int, str, str]]:
    """``(start, end, normalized form, lower-cased form)`` of each word and each punctuation mark."""
    out = []
    for match in _TOKEN.finditer(text):
        lower = match.group().lower()
        norm = lower if lower.isascii() else normalize(lower)
        out.append((match.start() + offset, match.end() + offset, norm, lower))
    return out


def sentences(text: str) -> list[tuple[int, int]]:
    """Character bounds of the sentences of ``text`` (see the module docstring)."""
    bounds, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if match.start() > start:
            bounds.append((start, match.start()))
        start = match.end()
    if start < len(text):
        bounds.append((start, len(text)))
    return bounds


# ------------------------------------------------------------------------------------------------------------ rules


@dataclass(frozen=True)
class _Spec:
    """One token position of a pattern."""

    equals: frozenset[str] | None
    regex: re.Pattern | None
    op: str  # "1", "?", "*", "+"
    accents: bool = False  # compare the lower-cased form with its accents (LOWER/TEXT/ORTH), not the NORM

    def accepts(self, norm: str, lower: str) -> bool:
        value = lower if self.accents else norm
        if self.equals is not None:
            return value in self.equals
        return bool(self.regex.fullmatch(value)) if self.regex is not None else True


@dataclass(frozen=True)
class Rule:
    """One compiled ConText rule."""

    index: int
    category: str
    direction: str
    specs: tuple[_Spec, ...]
    max_scope: int | None
    terminates: frozenset[str] | None  # TERMINATE rules: the categories they end (None: all)
    source: str  # the literal, for messages and debugging
    cue_length: int | None = None  # FORWARD rules: only the first N matched tokens are the cue, the rest is scope
    #: TERMINATE rules: no termination where one of these forms follows within ``unless_window`` tokens
    unless_followed_by: frozenset[str] = frozenset()
    unless_window: int = 0
    #: TERMINATE rules: which scopes they cut, those running FORWARD into them, BACKWARD into them, or both
    cuts: frozenset[str] = frozenset({"FORWARD", "BACKWARD"})
    #: negation cues: whether the cue, inside a long span, negates it ("ni", a list going on, does not)
    inside_span: bool = True


@dataclass
class RuleSet:
    """The compiled rules of one language."""

    language: str
    version: str
    rules: list[Rule]
    #: first-token form -> rules whose first token must be that form
    by_first: dict[str, list[Rule]]
    #: rules whose first token is open (regex, optional): tried at every position
    open_rules: list[Rule]
    #: normalized token tuple -> traits, for morphological negation
    morphological: dict[tuple[str, ...], tuple[str, ...]]
    #: (outer category, inner category): a cue of the inner category inside the scope of a cue of the outer one is
    #: void ("sin signos sugestivos de X": the negation cancels the uncertainty)
    cancels: tuple[tuple[str, str, int], ...] = ()


def _spec_from_dict(spec: dict, where: str) -> _Spec:
    op = spec.get("OP", "1")
    if op not in ("1", "?", "*", "+"):
        raise InputError(f"{where}: unsupported OP {op!r} (use ?, * or +)")
    attrs = [key for key in spec if key != "OP"]
    if len(attrs) > 1 or (attrs and attrs[0] not in _SPEC_ATTRS):
        raise InputError(f"{where}: a token spec takes one of {', '.join(_SPEC_ATTRS)} (and OP), not {attrs}")
    if not attrs:
        return _Spec(None, None, op)
    value = spec[attrs[0]]
    accents = attrs[0] != "NORM"
    fold = (lambda v: v.lower()) if accents else normalize
    if isinstance(value, str):
        return _Spec(frozenset({fold(value)}), None, op, accents)
    if isinstance(value, dict) and set(value) == {"IN"} and isinstance(value["IN"], list):
        return _Spec(frozenset(fold(str(v)) for v in value["IN"]), None, op, accents)
    if isinstance(value, dict) and set(value) == {"REGEX"} and isinstance(value["REGEX"], str):
        try:
            return _Spec(None, re.compile(fold(value["REGEX"])), op, accents)
        except re.error as err:
            raise InputError(f"{where}: bad REGEX ({err})") from None
    raise InputError(f"{where}: a token value is a string, {{'IN': [...]}} or {{'REGEX': '...'}}")


def _shape(spec: _Spec) -> tuple:
    """What a token spec matches, comparable across rules."""
    equals = tuple(sorted(spec.equals)) if spec.equals is not None else None
    return equals, spec.regex.pattern if spec.regex is not None else None, spec.op, spec.accents


def compile_rules(data: dict, *, source: str = "<rules>") -> RuleSet:
    """Check and compile a rule file's JSON object; any problem is an :class:`InputError` naming the rule."""
    if not isinstance(data, dict) or not isinstance(data.get("context_rules"), list):
        raise InputError(f"{source}: expected an object with a 'context_rules' list")
    if not isinstance(data.get("version"), str):
        raise InputError(f"{source}: field 'version' (a string) is missing")
    rules: list[Rule] = []
    for index, raw in enumerate(data["context_rules"]):
        where = f"{source}: context_rules.{index}"
        if not isinstance(raw, dict):
            raise InputError(f"{where}: expected an object")
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            raise InputError(f"{where}: unknown field(s) {sorted(unknown)}")
        for unsupported in ("allowed_types", "excluded_types", "max_targets"):
            if raw.get(unsupported) is not None:
                raise InputError(f"{where}: field '{unsupported}' is not supported (spans carry no types)")
        category = raw.get("category")
        direction = str(raw.get("direction", "BIDIRECTIONAL")).upper()
        if not isinstance(category, str) or not category:
            raise InputError(f"{where}: field 'category' is missing")
        category = category.upper()
        if direction not in DIRECTIONS:
            raise InputError(f"{where}: field 'direction' must be one of {', '.join(DIRECTIONS)}")
        if direction not in ("TERMINATE", "PSEUDO") and category not in CATEGORY_TRAITS:
            raise InputError(f"{where}: category {category!r} gives no trait (one of {', '.join(CATEGORY_TRAITS)})")
        literal = raw.get("literal")
        pattern = raw.get("pattern")
        if pattern is not None:
            if not isinstance(pattern, list) or not pattern or not all(isinstance(p, dict) for p in pattern):
                raise InputError(f"{where}: field 'pattern' must be a non-empty list of token specs")
            specs = tuple(_spec_from_dict(p, where) for p in pattern)
        elif isinstance(literal, str) and literal.strip():
            specs = tuple(_Spec(frozenset({t[2]}), None, "1") for t in tokenize(literal))
        else:
            raise InputError(f"{where}: a rule needs a 'literal' or a 'pattern'")
        if all(spec.op in ("?", "*") for spec in specs):
            raise InputError(f"{where}: the pattern can match nothing")
        max_scope = raw.get("max_scope")
        if max_scope is not None and (not isinstance(max_scope, int) or isinstance(max_scope, bool) or max_scope < 1):
            raise InputError(f"{where}: field 'max_scope' must be a positive integer")
        metadata = raw.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise InputError(f"{where}: field 'metadata' must be an object")
        terminates = metadata.get("terminates")
        if terminates is not None:
            if direction != "TERMINATE" or not isinstance(terminates, list):
                raise InputError(f"{where}: 'metadata.terminates' is a list, on TERMINATE rules only")
            terminates = frozenset(str(c).upper() for c in terminates)
        cue_length = metadata.get("cue_length")
        if cue_length is not None and (
            direction != "FORWARD" or not isinstance(cue_length, int) or isinstance(cue_length, bool) or cue_length < 1
        ):
            raise InputError(f"{where}: 'metadata.cue_length' is a positive integer, on FORWARD rules only")
        unless = metadata.get("unless_followed_by")
        window = metadata.get("window", 10)
        if unless is not None:
            if direction != "TERMINATE" or not isinstance(unless, list) or not isinstance(window, int) or window < 1:
                raise InputError(
                    f"{where}: 'metadata.unless_followed_by' is a list (with an optional positive 'window'), "
                    "on TERMINATE rules only"
                )
            unless = frozenset(normalize(str(form)) for form in unless)
        cuts = metadata.get("cuts", ["FORWARD", "BACKWARD"])
        if not isinstance(cuts, list) or not cuts or any(c not in ("FORWARD", "BACKWARD") for c in cuts):
            raise InputError(f"{where}: 'metadata.cuts' is a list of FORWARD and/or BACKWARD")
        if "cuts" in metadata and direction != "TERMINATE":
            raise InputError(f"{where}: 'metadata.cuts' is for TERMINATE rules only")
        inside_span = metadata.get("inside_span", True)
        if not isinstance(inside_span, bool) or ("inside_span" in metadata and category != "NEGATED_EXISTENCE"):
            raise InputError(f"{where}: 'metadata.inside_span' is true or false, on NEGATED_EXISTENCE rules only")
        text = literal if isinstance(literal, str) else json.dumps(pattern, ensure_ascii=False)
        rules.append(
            Rule(
                index,
                category,
                direction,
                specs,
                max_scope,
                terminates,
                text,
                cue_length,
                unless or frozenset(),
                window,
                frozenset(cuts),
                inside_span,
            )
        )
    seen: dict[tuple, int] = {}
    for rule in rules:
        shape = tuple(_shape(spec) for spec in rule.specs)
        if shape in seen:
            raise InputError(
                f"{source}: context_rules.{rule.index} ({rule.source!r}) matches what context_rules.{seen[shape]} "
                "matches: only one of them could ever apply (merge them, e.g. into one BIDIRECTIONAL rule)"
            )
        seen[shape] = rule.index
    by_first: dict[str, list[Rule]] = {}
    open_rules: list[Rule] = []
    for rule in rules:
        first = rule.specs[0]
        if first.op in ("1", "+") and first.equals is not None:
            for form in first.equals:
                by_first.setdefault(normalize(form), []).append(rule)
        else:
            open_rules.append(rule)
    morphological: dict[tuple[str, ...], tuple[str, ...]] = {}
    for index, entry in enumerate(data.get("morphological", [])):
        where = f"{source}: morphological.{index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("words"), list):
            raise InputError(f"{where}: expected an object with 'words' and 'traits'")
        traits = entry.get("traits", ["negated"])
        if not isinstance(traits, list) or any(t not in TRAITS for t in traits):
            raise InputError(f"{where}: 'traits' must be a list of {', '.join(TRAITS)}")
        for word in entry["words"]:
            key = tuple(t[2] for t in tokenize(str(word)))
            if key:
                morphological[key] = tuple(t for t in TRAITS if t in traits)
    cancels = []
    for index, entry in enumerate(data.get("cancels", [])):
        if (
            not isinstance(entry, dict)
            or not {"outer", "inner"} <= set(entry) <= {"outer", "inner", "window"}
            or any(str(entry[k]).upper() not in CATEGORY_TRAITS for k in ("outer", "inner"))
            or not isinstance(entry.get("window", 1), int)
            or entry.get("window", 1) < 1
        ):
            raise InputError(
                f"{source}: cancels.{index}: expected {{'outer': CATEGORY, 'inner': CATEGORY, 'window': TOKENS}}"
            )
        cancels.append((str(entry["outer"]).upper(), str(entry["inner"]).upper(), int(entry.get("window", 10**6))))
    return RuleSet(
        cancels=tuple(cancels),
        language=str(data.get("language", "")),
        version=data["version"],
        rules=rules,
        by_first=by_first,
        open_rules=open_rules,
        morphological=morphological,
    )


def rules_path(lang: str) -> Path:
    """The shipped rule file of a language."""
    if lang not in LANGUAGES:
        raise InputError(f"unsupported language {lang!r} (expected one of {', '.join(LANGUAGES)})")
    return RULES_DIR / f"{lang}.json"


def load_rules(path: str | Path) -> RuleSet:
    """Read and compile a rule file."""
    from icdcoder.io import read_text

    path = Path(path)
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(f"malformed JSON ({err.msg})", path=path, line=err.lineno) from None
    return compile_rules(data, source=str(path))


@cache
def rules_for(lang: str) -> RuleSet:
    """The shipped rules of ``lang``, compiled once per process."""
    return load_rules(rules_path(lang))


# --------------------------------------------------------------------------------------------------------- matching


def _match_at(specs: Sequence[_Spec], norms: Sequence[str], lowers: Sequence[str], start: int) -> int:
    """The end of the longest match of ``specs`` at ``start`` (-1 when none)."""
    best = -1
    # depth-first over (spec index, token index); patterns are short, so the search stays tiny
    stack = [(0, start)]
    while stack:
        index, pos = stack.pop()
        if index == len(specs):
            best = max(best, pos)
            continue
        spec = specs[index]
        if spec.op in ("?", "*"):
            stack.append((index + 1, pos))
        if pos < len(norms) and spec.accepts(norms[pos], lowers[pos]):
            if spec.op in ("*", "+"):
                stack.append((index, pos + 1))
                if spec.op == "+":
                    stack.append((index + 1, pos + 1))
            else:
                stack.append((index + 1, pos + 1))
    return best


@dataclass
class Modifier:
    """A matched cue: token span, rule and scope (token indices within its sentence)."""

    rule: Rule
    start: int
    end: int
    scope_start: int = 0
    scope_end: int = 0


def find_modifiers(norms: Sequence[str], lowers: Sequence[str], ruleset: RuleSet) -> list[Modifier]:
    """Every cue of ``ruleset`` in one sentence, overlaps pruned to the longest (then the earliest, then the first
    rule), sorted by position."""
    found: list[tuple[int, int, Rule]] = []
    for pos, norm in enumerate(norms):
        for rule in ruleset.by_first.get(norm, ()):
            end = _match_at(rule.specs, norms, lowers, pos)
            if end > pos:
                found.append((pos, end, rule))
        for rule in ruleset.open_rules:
            end = _match_at(rule.specs, norms, lowers, pos)
            if end > pos:
                found.append((pos, end, rule))
    found.sort(key=lambda m: (-(m[1] - m[0]), m[0], m[2].index))
    taken = bytearray(len(norms))
    kept = []
    for start, end, rule in found:
        if any(taken[start:end]):
            continue
        taken[start:end] = b"\x01" * (end - start)
        if rule.cue_length is not None:  # the tokens after the cue proper only condition the match
            end = min(end, start + rule.cue_length)
        if rule.unless_followed_by and any(n in rule.unless_followed_by for n in norms[end : end + rule.unless_window]):
            continue  # a list going on ("no X, Y ni Z"): the terminator does not end it
        kept.append(Modifier(rule, start, end))
    kept.sort(key=lambda m: m.start)
    return kept


def set_scopes(modifiers: list[Modifier], length: int) -> None:
    """ConText scopes within a sentence of ``length`` tokens (see the module docstring)."""
    for mod in modifiers:
        rule = mod.rule
        forward = rule.direction in ("FORWARD", "BIDIRECTIONAL")
        backward = rule.direction in ("BACKWARD", "BIDIRECTIONAL")
        mod.scope_start, mod.scope_end = (0 if backward else mod.start), (length if forward else mod.end)
        if rule.max_scope is not None:
            if forward:
                mod.scope_end = min(mod.scope_end, mod.end + rule.max_scope)
            if backward:
                mod.scope_start = max(mod.scope_start, mod.start - rule.max_scope)
    for mod in modifiers:
        if mod.rule.direction in ("TERMINATE", "PSEUDO"):
            continue
        for other in modifiers:
            if other is mod or not _limits(other, mod):
                continue
            direction, cuts = mod.rule.direction, other.rule.cuts
            if other.start >= mod.end and direction in ("FORWARD", "BIDIRECTIONAL") and "FORWARD" in cuts:
                mod.scope_end = min(mod.scope_end, other.start)
            if other.end <= mod.start and direction in ("BACKWARD", "BIDIRECTIONAL") and "BACKWARD" in cuts:
                mod.scope_start = max(mod.scope_start, other.end)


def cancel(modifiers: list[Modifier], cancels: Sequence[tuple[str, str, int]]) -> list[Modifier]:
    """Drop each cue lying in the scope of a cue that cancels it, at most ``window`` tokens away (see
    :attr:`RuleSet.cancels`)."""
    windows = {(outer, inner): window for outer, inner, window in cancels}
    kept = []
    for mod in modifiers:
        void = False
        for outer in modifiers:
            window = windows.get((outer.rule.category, mod.rule.category))
            if window is None or outer is mod or outer.rule.direction in ("TERMINATE", "PSEUDO"):
                continue
            if outer.scope_start <= mod.start and mod.end <= outer.scope_end:
                gap = mod.start - outer.end if mod.start >= outer.end else outer.start - mod.end
                if gap < window:
                    void = True
                    break
        if not void:
            kept.append(mod)
    return kept


def _limits(other: Modifier, mod: Modifier) -> bool:
    """Whether ``other`` cuts the scope of ``mod``: a terminating cue (for its categories) or a cue of the same
    category."""
    if other.rule.direction == "TERMINATE":
        return other.rule.terminates is None or mod.rule.category in other.rule.terminates
    return other.rule.direction != "PSEUDO" and other.rule.category == mod.rule.category


def _applies(mod: Modifier, start: int, end: int, words: Sequence[bool]) -> bool:
    """Whether ``mod`` modifies the target of tokens ``[start, end)`` (``words``: which tokens of the sentence are
    words, not punctuation)."""
    if mod.rule.direction in ("TERMINATE", "PSEUDO") or end <= start:
        return False
    if mod.start < end and start < mod.end:  # the cue overlaps the target: it counts from the target's edge only
        forward = mod.rule.direction in ("FORWARD", "BIDIRECTIONAL")
        backward = mod.rule.direction in ("BACKWARD", "BIDIRECTIONAL")
        if forward and mod.start <= start and mod.end < end:
            return True  # "sin diabetes" given as one span, or "evidence of fracture" after "no evidence of"
        if backward and mod.end >= end and mod.start > start:
            return True  # "neumonía descartada" given as one span
        if mod.start > start and mod.end < end and mod.rule.category == "NEGATED_EXISTENCE" and mod.rule.inside_span:
            return _inner_cue_applies(mod, start, end, words, forward, backward)  # a negation inside a long span
        return False
    return mod.scope_start < end and start < mod.scope_end


def _inner_cue_applies(
    mod: Modifier, start: int, end: int, words: Sequence[bool], forward: bool, backward: bool
) -> bool:
    """A negation cue inside a span ("ECG sin evidencia de infarto", "Rx: no hay signos de neumonía" given whole) negates
    it when its scope covers the span's far side and that side holds more of the span's words than the near side, the
    negation word itself (the cue's first token, or last for a backward cue) left out: the span is mostly what is
    negated. "Refiere dolor torácico, sin fiebre" and "náuseas sin vómitos" stay affirmed."""
    if forward and mod.scope_end >= end and sum(words[mod.start + 1 : end]) > sum(words[start : mod.start]):
        return True
    return backward and mod.scope_start <= start and sum(words[start : mod.end - 1]) > sum(words[mod.end : end])


# ------------------------------------------------------------------------------------------------------- public API


def check_spans(text: str, spans: Sequence[tuple[int, int]]) -> None:
    """Spans are ``(start, end)`` integer pairs with ``0 <= start <= end <= len(text)``."""
    for index, span in enumerate(spans):
        try:
            start, end = span
        except (TypeError, ValueError):
            raise InputError(f"span {index}: expected a (start, end) pair") from None
        if not isinstance(start, int) or not isinstance(end, int) or isinstance(start, bool) or isinstance(end, bool):
            raise InputError(f"span {index}: offsets must be integers")
        if not 0 <= start <= end <= len(text):
            raise InputError(f"span {index}: offsets {start}-{end} outside the text ({len(text)} chars) or reversed")


def assert_with(ruleset: RuleSet, text: str, spans: Sequence[tuple[int, int]]) -> list[list[str]]:
    """:func:`assert_spans` with an explicit rule set (tests and rule development)."""
    check_spans(text, spans)
    out: list[list[str]] = [[] for _ in spans]
    if not spans:
        return out
    bounds = sentences(text)
    starts = [b[0] for b in bounds]
    # spans grouped by the sentence holding their start (a span across a boundary belongs to its first sentence)
    groups: dict[int, list[int]] = {}
    for index, (start, end) in enumerate(spans):
        if end <= start:
            continue
        sentence = max(bisect_right(starts, start) - 1, 0)
        groups.setdefault(sentence, []).append(index)
    for sentence, members in groups.items():
        s_start, s_end = bounds[sentence]
        last = max(spans[i][1] for i in members)
        s_end = max(s_end, last)
        tokens = tokenize(text[s_start:s_end], s_start)
        norms = [t[2] for t in tokens]
        modifiers = find_modifiers(norms, [t[3] for t in tokens], ruleset)
        if modifiers:
            set_scopes(modifiers, len(tokens))
            if ruleset.cancels:
                modifiers = cancel(modifiers, ruleset.cancels)
        words = [t[2][:1].isalnum() for t in tokens]
        token_starts = [t[0] for t in tokens]
        token_ends = [t[1] for t in tokens]
        for index in members:
            start, end = spans[index]
            first = bisect_right(token_ends, start)  # the first token ending after the span starts
            stop = bisect_right(token_starts, end - 1)  # one past the last token starting inside the span
            traits: set[str] = set()
            morph = ruleset.morphological.get(tuple(norms[first:stop]))
            if morph:
                traits.update(morph)
            for mod in modifiers:
                if _applies(mod, first, stop, words):
                    traits.add(CATEGORY_TRAITS[mod.rule.category])
            out[index] = [t for t in TRAITS if t in traits]
    return out


def assert_spans(text: str, spans: Sequence[tuple[int, int]], lang: str) -> list[list[str]]:
    """The assertion traits of each span of ``text`` (``(start, end)`` character offsets), in the order given: a
    subset of ``negated``, ``uncertain``, ``historical``, ``hypothetical``, ``family``, in that order; empty means
    affirmed, current, the patient's. ``lang`` is ``es`` or ``en``. Rules are compiled once per process."""
    return assert_with(rules_for(lang), text, spans)
