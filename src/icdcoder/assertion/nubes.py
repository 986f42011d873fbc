"""Read NUBes (BRAT standoff) into event-level assertion items.

NUBes (Lima Lopez, Perez, Cuadros and Rigau, *NUBes: A Corpus of Negation and Uncertainty in Spanish Clinical
Texts*, LREC 2020; CC BY-SA 3.0 ES) annotates, in Spanish clinical sentences, negation and uncertainty **markers**
(``NegSynMarker``, ``NegLexMarker``, ``NegMorMarker``, ``UncertSynMarker``, ``UncertLexMarker``), their **scopes**
(``Scope`` / ``DiscScope`` relations from a marker to a ``Phrase`` or to an event entity) and, inside the scopes, the
**events**: the medical concept each marker bears on most explicitly, labelled ``DISO``, ``PROC``, ``SUBS``, ``BODY``
or ``OTHER``. The data is never copied into this repository: point the loader at a local copy.

What an evaluation item is (the "event" span):

* every event entity (``DISO``/``PROC``/``SUBS``/``BODY``/``OTHER``) is one item, with its own character offsets. Its
  gold traits are ``negated`` when a negation marker's scope is that entity or a ``Phrase``/entity that contains it,
  and ``uncertain`` likewise for an uncertainty marker (both may hold: an event inside the scope of each);
* every ``NegMorMarker`` ("afebril", "asintomático") is also one item and is ``negated``: the annotation guidelines
  (section 3.2.7) give a morphological marker no scope because it negates the word itself;
* a ``DiscMarker`` joins the two halves of a discontinuous marker; its scope hangs from the second half, so it is
  read like any other marker;
* ``Phrase``, ``CoordItem`` and ``PolItem`` entities are scope and structure, not events: they are not items.

NUBes annotates only sentences that hold a marker, and only inside scopes, so its events are all negated or
uncertain. :func:`affirmed_mentions` adds the other side: the surface forms of the corpus's own events where they
occur *outside* every scope and marker (in unannotated sentences, or in annotated ones outside the scope); since
the corpus marks every negation and uncertainty, those mentions are affirmed. They measure over-triggering (a scope
run too far, a pseudo-negation taken as a negation) which events alone cannot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from icdcoder.errors import InputError
from icdcoder.io import read_text

EVENT_LABELS = frozenset({"DISO", "PROC", "SUBS", "BODY", "OTHER"})
NEGATION_MARKERS = frozenset({"NegSynMarker", "NegLexMarker", "NegMorMarker"})
UNCERTAINTY_MARKERS = frozenset({"UncertSynMarker", "UncertLexMarker"})
MARKER_LABELS = NEGATION_MARKERS | UNCERTAINTY_MARKERS
SCOPE_RELATIONS = frozenset({"Scope", "DiscScope"})
#: the traits NUBes annotates (the others, historical / hypothetical / family, it does not)
NUBES_TRAITS = ("negated", "uncertain")


@dataclass(frozen=True)
class Entity:
    """One text-bound annotation (``T`` line)."""

    id: str
    label: str
    start: int
    end: int


@dataclass
class BratDocument:
    """One ``.txt``/``.ann`` pair."""

    name: str
    text: str
    entities: dict[str, Entity] = field(default_factory=dict)
    #: (relation type, Arg1 id, Arg2 id)
    relations: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Item:
    """One evaluation item: a span of a document's text and its gold traits (sorted, a subset of
    :data:`NUBES_TRAITS`). ``kind`` is ``event`` (an annotated event entity), ``morph`` (a morphological negation
    marker, its own event) or ``affirmed`` (a mention outside every scope, see :func:`affirmed_mentions`)."""

    document: str
    start: int
    end: int
    traits: tuple[str, ...]
    kind: str
    label: str = ""


@dataclass
class NubesDocument:
    """A document's text and its evaluation items, in text order."""

    name: str
    text: str
    items: list[Item]


_OFFSETS = re.compile(r"^\d+ \d+(?:;\d+ \d+)*$")


def parse_brat(text: str, ann: str, *, name: str = "", path: str | Path | None = None) -> BratDocument:
    """Parse BRAT standoff ``ann`` over ``text``. Entities and relations are kept; attributes, notes and events are
    ignored (NUBes has none). A line that is not BRAT, or an entity whose offsets do not quote its text, is an
    :class:`~icdcoder.errors.InputError` naming ``path:line``."""
    doc = BratDocument(name=name, text=text)
    where = path if path is not None else (name or "<ann>")
    for number, line in enumerate(ann.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        kind = parts[0][:1]
        if kind == "T":
            if len(parts) < 2:
                raise InputError("entity line without a type and offsets", path=where, line=number)
            label, _, offsets = parts[1].partition(" ")
            if not _OFFSETS.match(offsets):
                raise InputError(f"entity {parts[0]}: bad offsets {offsets!r}", path=where, line=number)
            pieces = [tuple(int(x) for x in piece.split()) for piece in offsets.split(";")]
            start, end = min(p[0] for p in pieces), max(p[1] for p in pieces)
            if not 0 <= start <= end <= len(text):
                raise InputError(f"entity {parts[0]}: offsets {start}-{end} outside the text", path=where, line=number)
            if len(pieces) == 1 and len(parts) > 2 and text[start:end] != parts[2]:
                raise InputError(
                    f"entity {parts[0]}: offsets {start}-{end} do not quote its text", path=where, line=number
                )
            doc.entities[parts[0]] = Entity(parts[0], label, start, end)
        elif kind == "R":
            fields = parts[1].split() if len(parts) > 1 else []
            args = dict(arg.split(":", 1) for arg in fields[1:] if ":" in arg)
            if len(fields) < 3 or "Arg1" not in args or "Arg2" not in args:
                raise InputError(f"relation {parts[0]}: expected 'TYPE Arg1:ID Arg2:ID'", path=where, line=number)
            doc.relations.append((fields[0], args["Arg1"], args["Arg2"]))
        elif kind in "AMNE*":
            continue
        else:
            raise InputError(f"not a BRAT standoff line (starts with {parts[0][:10]!r})", path=where, line=number)
    for relation, arg1, arg2 in doc.relations:
        for arg in (arg1, arg2):
            if arg not in doc.entities:
                raise InputError(f"relation {relation} names unknown entity {arg}", path=where)
    return doc


def read_brat(ann_path: str | Path) -> BratDocument:
    """Read ``X.ann`` and the ``X.txt`` beside it."""
    ann_path = Path(ann_path)
    text = read_text(ann_path.with_suffix(".txt"))
    return parse_brat(text, read_text(ann_path), name=ann_path.stem, path=ann_path)


def _contains(outer: Entity, inner: Entity) -> bool:
    return outer.start <= inner.start and inner.end <= outer.end


def events(doc: BratDocument) -> list[Item]:
    """The event items of one document (see the module docstring for what counts), sorted by offsets."""
    scopes: dict[str, set[str]] = {"negated": set(), "uncertain": set()}
    for relation, arg1, arg2 in doc.relations:
        if relation not in SCOPE_RELATIONS:
            continue
        marker = doc.entities[arg1].label
        if marker in NEGATION_MARKERS:
            scopes["negated"].add(arg2)
        elif marker in UNCERTAINTY_MARKERS:
            scopes["uncertain"].add(arg2)
    scope_entities = {trait: [doc.entities[i] for i in ids] for trait, ids in scopes.items()}
    found: dict[tuple[int, int], tuple[set[str], str, str]] = {}
    for entity in doc.entities.values():
        if entity.label in EVENT_LABELS:
            traits = {trait for trait, outer in scope_entities.items() if any(_contains(o, entity) for o in outer)}
            kind = "event"
        elif entity.label == "NegMorMarker":
            traits = {"negated"} | {"uncertain" for o in scope_entities["uncertain"] if _contains(o, entity)}
            kind = "morph"
        else:
            continue
        if entity.end <= entity.start:
            continue
        key = (entity.start, entity.end)
        if key in found:  # the same span annotated twice (an event that is also a marker's scope): one item
            found[key][0].update(traits)
            continue
        found[key] = (traits, kind, entity.label)
    return [
        Item(doc.name, start, end, tuple(sorted(traits)), kind, label)
        for (start, end), (traits, kind, label) in sorted(found.items())
    ]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def event_lexicon(documents: Iterable[BratDocument], min_chars: int = 4) -> set[str]:
    """The lower-cased surface forms of the documents' event entities (at least ``min_chars`` letters): what
    :func:`affirmed_mentions` looks for."""
    forms = set()
    for doc in documents:
        for entity in doc.entities.values():
            if entity.label in EVENT_LABELS:
                form = _norm(doc.text[entity.start : entity.end])
                if sum(ch.isalpha() for ch in form) >= min_chars:
                    forms.add(form)
    return forms


def affirmed_mentions(doc: BratDocument, lexicon: Iterable[str]) -> list[Item]:
    """Whole-word occurrences of ``lexicon`` forms that overlap no annotated entity at all (markers, scopes,
    events, coordination and polarity particles): affirmed by construction of the corpus. Longest form first; no
    two mentions overlap."""
    forms = sorted(set(lexicon), key=len, reverse=True)
    if not forms:
        return []
    lowered = doc.text.lower()
    taken = sorted((e.start, e.end) for e in doc.entities.values())
    covered = bytearray(len(doc.text) + 1)
    for start, end in taken:
        covered[start:end] = b"\x01" * (end - start)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(f).replace(r"\ ", r"\s+") for f in forms) + r")(?!\w)")
    items = []
    for match in pattern.finditer(lowered):
        start, end = match.span()
        if any(covered[start:end]):
            continue
        items.append(Item(doc.name, start, end, (), "affirmed"))
        covered[start:end] = b"\x01" * (end - start)
    return items


def find_documents(folder: str | Path) -> list[Path]:
    """The ``.ann`` files under ``folder`` (recursively) that have a ``.txt`` beside them, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("NUBes folder not found", path=folder)
    return sorted(p for p in folder.rglob("*.ann") if p.with_suffix(".txt").is_file())


def load_nubes(
    folders: Sequence[str | Path], *, affirmed: bool = True, lexicon: Iterable[str] | None = None
) -> list[NubesDocument]:
    """Every document under ``folders`` with its items: events (always) and affirmed mentions (with ``affirmed``),
    looked up from ``lexicon`` or, by default, from the events of these same documents."""
    brat = [read_brat(path) for folder in folders for path in find_documents(folder)]
    forms = set(lexicon) if lexicon is not None else event_lexicon(brat)
    out = []
    for doc in brat:
        items = events(doc)
        if affirmed:
            items = sorted(items + affirmed_mentions(doc, forms), key=lambda item: (item.start, item.end))
        out.append(NubesDocument(doc.name, doc.text, items))
    return out


def score_documents(documents: Sequence[NubesDocument], lang: str = "es", ruleset=None) -> dict:
    """Event-level negated and uncertain P/R/F1 of the assertion engine on ``documents``: over the annotated events
    (``events``: events and morphological markers) and over those plus the affirmed mentions (``with_affirmed``),
    with the item counts."""
    from icdcoder.assertion.engine import assert_with, rules_for
    from icdcoder.assertion.scoring import score_traits

    rules = ruleset if ruleset is not None else rules_for(lang)
    gold: list[tuple[str, ...]] = []
    predicted: list[list[str]] = []
    kinds: list[str] = []
    for doc in documents:
        traits = assert_with(rules, doc.text, [(item.start, item.end) for item in doc.items])
        for item, got in zip(doc.items, traits):
            gold.append(item.traits)
            predicted.append(got)
            kinds.append(item.kind)
    events = [i for i, kind in enumerate(kinds) if kind != "affirmed"]
    counts = {kind: kinds.count(kind) for kind in ("event", "morph", "affirmed")}
    return {
        "documents": len(documents),
        "items": counts,
        "gold": {trait: sum(trait in g for g in gold) for trait in NUBES_TRAITS},
        "events": score_traits([gold[i] for i in events], [predicted[i] for i in events], NUBES_TRAITS),
        "with_affirmed": score_traits(gold, predicted, NUBES_TRAITS),
    }
