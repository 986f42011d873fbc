"""Assertion traits of evidence spans: is a finding negated, uncertain, historical, hypothetical, or a relative's?

>>> from icdcoder.assertion import assert_spans
>>> text = "Niega dolor torácico. Antecedentes familiares de cáncer de mama."
>>> assert_spans(text, [(6, 20), (49, 63)], "es")
[['negated'], ['family']]

An empty list means affirmed, current and the patient's. The engine is ConText (see :mod:`.engine`); the cues, their
directions, scopes, pseudo-cues and terminators are data, in ``rules/es.json`` and ``rules/en.json`` (each with a
``version``). Spanish rules follow the NUBes annotation guidelines (Lima Lopez et al., LREC 2020) for negation and
uncertainty; English rules follow the NegEx/ConText conventions.
"""

from __future__ import annotations

from icdcoder.assertion.engine import LANGUAGES, TRAITS, Trait, assert_spans, rules_for

__all__ = ["LANGUAGES", "TRAITS", "Trait", "assert_spans", "rules_version"]


def rules_version(lang: str) -> str:
    """The ``version`` of the shipped rule file of ``lang`` (outputs can name the rules that produced them)."""
    return rules_for(lang).version
