"""Symptom codes integral to a coded diagnosis (ICD-10-CM guidelines I.B.4-5), a rule set that is data.

The rules live in ``rules/integral_symptoms.json`` (with a ``version`` and the guideline they follow). Each rule pairs
chapter R codes (``R07``: chest pain, all its subdivisions) with the diagnoses they are routinely part of (``I20-I25``:
ischaemic heart disease): "signs and symptoms that are associated routinely with a disease process should not be
assigned as additional codes". :func:`integral_symptoms` says, for a note's codes, which symptom codes a coded
diagnosis accounts for. The rules flag; they do not judge whether the note ties the symptom to another cause.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from icdcoder.errors import InputError
from icdcoder.ontology.codes import normalize_code
from icdcoder.ontology.validity import CodeReference

RULES_PATH = Path(__file__).resolve().parent / "rules" / "integral_symptoms.json"


@dataclass(frozen=True)
class SymptomRule:
    symptoms: tuple[CodeReference, ...]
    diagnoses: tuple[CodeReference, ...]
    why: str


@dataclass(frozen=True)
class SymptomRules:
    version: str
    rules: tuple[SymptomRule, ...]


def _reference(text: object, where: str, symptom: bool) -> CodeReference:
    """``R07``, ``R06.0`` or (diagnoses only) ``I20-I25`` as a :class:`CodeReference`."""
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: expected a code or a range of codes (got {text!r})")
    low, _, high = text.strip().upper().replace(".", "").partition("-")
    high = high or low
    if not (low[:1].isalpha() and low[1:3].isdigit() and high[:1].isalpha() and high[1:3].isdigit()) or high < low:
        raise InputError(f"{where}: '{text}' is not an ICD-10-CM code or range")
    if symptom and (low != high or not low.startswith("R")):
        raise InputError(f"{where}: '{text}' is not a chapter R (symptom) code")
    return CodeReference(low, high)


def parse_rules(data: object, source: str = "<rules>") -> SymptomRules:
    """Check and compile a rule file's JSON; any problem is an :class:`InputError` naming the rule."""
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("rules"), list)
        or not isinstance(data.get("version"), str)
    ):
        raise InputError(f"{source}: expected an object with a 'version' string and a 'rules' list")
    rules = []
    for index, rule in enumerate(data["rules"]):
        where = f"{source}: rules.{index}"
        if not isinstance(rule, dict) or set(rule) != {"symptoms", "diagnoses", "why"}:
            raise InputError(f"{where}: expected exactly the fields 'symptoms', 'diagnoses' and 'why'")
        if not all(isinstance(rule[key], list) and rule[key] for key in ("symptoms", "diagnoses")):
            raise InputError(f"{where}: 'symptoms' and 'diagnoses' are non-empty lists")
        symptoms = tuple(_reference(code, f"{where}.symptoms", symptom=True) for code in rule["symptoms"])
        diagnoses = tuple(_reference(code, f"{where}.diagnoses", symptom=False) for code in rule["diagnoses"])
        rules.append(SymptomRule(symptoms, diagnoses, str(rule["why"])))
    return SymptomRules(data["version"], tuple(rules))


@functools.cache
def shipped_rules() -> SymptomRules:
    """The shipped rule set, read once per process."""
    try:
        data = json.loads(RULES_PATH.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"malformed JSON ({err.msg})", path=RULES_PATH, line=err.lineno) from None
    return parse_rules(data, str(RULES_PATH))


def rules_version() -> str:
    """The ``version`` of the shipped rule set (it identifies a run's output, like the assertion rules')."""
    return shipped_rules().version


def integral_symptoms(
    diagnoses: Iterable[str], symptoms: Iterable[str], rules: SymptomRules | None = None
) -> dict[str, list[str]]:
    """Symptom code -> the codes among ``diagnoses`` (ICD-10-CM) it is integral to, for each of ``symptoms`` that a
    rule covers; symptoms no diagnosis accounts for are left out."""
    rules = rules or shipped_rules()
    bare_diagnoses = {normalize_code(code, "icd10cm"): code.replace(".", "").upper() for code in diagnoses}
    found: dict[str, list[str]] = {}
    for symptom in symptoms:
        bare = symptom.replace(".", "").upper()
        for rule in rules.rules:
            if not any(reference.covers(bare) for reference in rule.symptoms):
                continue
            for code, bare_code in bare_diagnoses.items():
                if code != normalize_code(symptom, "icd10cm") and any(ref.covers(bare_code) for ref in rule.diagnoses):
                    found.setdefault(symptom, [])
                    if code not in found[symptom]:
                        found[symptom].append(code)
    return found
