"""Coding profiles: assertion traits on a record's evidence and codes, and which codes a profile keeps.

Each evidence span of a record (``evidence`` and ``sentence_evidence``) gets the ``traits`` of
:func:`icdcoder.assertion.assert_spans` (a subset of negated, uncertain, historical, hypothetical, family; ``[]`` =
affirmed, current, the patient's), read on the note's text in the note's language.

Each code gets an ``assertion``: one of ``affirmed``, ``historical``, ``uncertain``, ``hypothetical``, ``family``,
``negated``. The rule: a span's assertion is its most severe trait, in the order

    negated > family > hypothetical > uncertain > historical > affirmed (no traits)

and a code's assertion is the *least* severe of its spans' assertions. So a code is affirmed if any of its evidence is
affirmed, and negated only if every piece of its evidence is negated; "Niega dolor torácico ... refiere dolor
torácico" stays affirmed. Only a code's narrowest spans count: a span that contains another span of the same code
(the sentence "Patient denies chest pain." around "chest pain") is context for the mention inside it, and its own
traits (it holds the cue rather than follows it) are shown but do not decide. A code with no evidence span at all is
affirmed (nothing says otherwise).

Profiles (``--profile``):

- ``codiesp``: the benchmark convention, every mention is coded; the record only gains traits and validity.
- ``clinical``: codes whose assertion is negated, uncertain, hypothetical or family leave ``codes`` and go to
  ``excluded``, each its code record plus ``"reason"`` (its assertion). Historical codes stay coded, flagged by their
  assertion and traits. A coded symptom (chapter R) that an affirmed coded diagnosis accounts for (ICD-10-CM
  guidelines I.B.4-5, the rules of :mod:`icdcoder.ontology.symptoms`) stays coded with ``integral_to``: those
  diagnoses.

Under both profiles every code (excluded ones too) carries its ``validity`` (:mod:`icdcoder.ontology.validity`:
billable, code-set release, the problem and its replacements), and the Excludes1 pairs among the coded codes are named
in each one's ``validity.excludes1``. Non-billable codes stay in the code list, flagged, under ``clinical`` too: the
finding they name is in the note (a category such as ``C50.9`` says there is a breast cancer even when its site is not
said), so dropping it would hide a diagnosis, and the flag names the billable replacement for whoever finalises the
codes. Under ``codiesp`` validity is information only: CodiEsp itself annotates categories and partial PCS codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

from icdcoder.assertion import TRAITS, assert_spans
from icdcoder.errors import InputError

#: the coding profiles, the benchmark convention first
PROFILES = ("codiesp", "clinical")
#: the code-level assertions, least severe first
Assertion = Literal["affirmed", "historical", "uncertain", "hypothetical", "family", "negated"]
ASSERTIONS: tuple[str, ...] = get_args(Assertion)
#: the assertions for which the ``clinical`` profile moves a code out of the code list
ExcludedAssertion = Literal["negated", "uncertain", "hypothetical", "family"]
EXCLUDED = frozenset(get_args(ExcludedAssertion))
#: the kinds of evidence a code record carries
SPAN_KINDS = ("evidence", "sentence_evidence")

assert set(ASSERTIONS[1:]) == set(TRAITS)


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise InputError(f"--profile must be {' or '.join(PROFILES)} (got '{profile}')")


def span_assertion(traits: list[str]) -> str:
    """A span's assertion: its most severe trait, ``affirmed`` when it has none."""
    return max(traits, key=ASSERTIONS.index, default="affirmed")


def code_assertion(spans: list[tuple[int, int, list[str]]]) -> str:
    """A code's assertion from its spans ``(start, end, traits)``: the least severe assertion of those that contain no
    other of its spans (affirmed without spans)."""
    narrowest = [
        traits
        for start, end, traits in spans
        if not any(start <= s and e <= end and (s, e) != (start, end) for s, e, _ in spans)
    ]
    return min((span_assertion(traits) for traits in narrowest), key=ASSERTIONS.index, default="affirmed")


def add_traits(codes: list[dict], text: str, lang: str) -> None:
    """Give every span of ``codes`` (records, changed in place) its ``traits`` and every code its ``assertion``; one
    pass of the assertion engine over the note."""
    spans = [span for code in codes for kind in SPAN_KINDS for span in code[kind]]
    traits = assert_spans(text, [(span["start"], span["end"]) for span in spans], lang) if spans else []
    for span, found in zip(spans, traits):
        span["traits"] = found
    for code in codes:
        code["assertion"] = code_assertion(
            [(span["start"], span["end"], span["traits"]) for kind in SPAN_KINDS for span in code[kind]]
        )


def apply_profile(record: dict, profile: str) -> dict:
    """The record under ``profile`` (its codes carry their ``assertion``): ``clinical`` moves excluded codes to
    ``excluded``, with their reason, and flags integral symptoms; ``codiesp`` keeps every code. Every code gets its
    ``validity`` under both."""
    if profile == "codiesp":
        add_validity(record["codes"])
        return record
    kept, excluded = [], []
    for code in record["codes"]:
        if code.get("assertion") in EXCLUDED:
            excluded.append({**code, "reason": code["assertion"]})
        else:
            kept.append(code)
    add_validity(kept, excluded)
    flag_integral_symptoms(kept)
    return {**record, "codes": kept, "excluded": excluded}


def add_validity(codes: list[dict], others: Sequence[dict] = ()) -> None:
    """Give every code record of ``codes`` and ``others`` (changed in place) its ``validity``; the Excludes1 pairs
    are looked for among ``codes`` only (``others`` are not coded)."""
    from icdcoder.ontology import load_ontology
    from icdcoder.ontology.validity import check_code, excludes1_conflicts

    ontology = load_ontology()
    conflicts = excludes1_conflicts([(code["code"], code["system"]) for code in codes], ontology)
    for code in codes:
        validity = check_code(code["code"], code["system"], ontology)
        validity.excludes1 = conflicts.get(code["code"], []) if code["system"] == "icd10cm" else []
        code["validity"] = validity.model_dump()
    for code in others:
        code["validity"] = check_code(code["code"], code["system"], ontology).model_dump()


def flag_integral_symptoms(codes: list[dict]) -> None:
    """Give each coded symptom that an affirmed coded diagnosis accounts for its ``integral_to`` (changed in place)."""
    from icdcoder.ontology.symptoms import integral_symptoms

    diagnoses = [c["code"] for c in codes if c["system"] == "icd10cm" and c.get("assertion", "affirmed") == "affirmed"]
    symptoms = [c["code"] for c in codes if c["system"] == "icd10cm" and c["code"].startswith("R")]
    found = integral_symptoms(diagnoses, symptoms) if symptoms and diagnoses else {}
    for code in codes:
        if code["code"] in found and code["system"] == "icd10cm":
            code["integral_to"] = found[code["code"]]
