"""Code validity (issue 29, part 4): billable or not, code-set release, the problem and its replacements; Excludes1
pairs; the integral-symptom rules of the clinical profile."""

from __future__ import annotations

import json

import pytest

from icdcoder.errors import InputError
from icdcoder.ontology.symptoms import (
    RULES_PATH,
    integral_symptoms,
    parse_rules,
    rules_version,
    shipped_rules,
)
from icdcoder.ontology.validity import (
    CodeReference,
    check_code,
    code_references,
    excludes1_conflicts,
)


def _validity(code: str, system: str = "icd10cm") -> dict:
    return check_code(code, system).model_dump()


@pytest.mark.parametrize(
    ("code", "system", "code_set"),
    [
        ("J18.9", "icd10cm", "ICD-10-CM 2024"),
        ("w19.xxxa", "icd10cm", "ICD-10-CM 2024"),
        ("BW03ZZZ", "icd10pcs", "ICD-10-PCS 2024"),
    ],
)
def test_billable_codes_name_their_release(ontology, code, system, code_set):
    validity = _validity(code, system)
    assert validity["billable"] and validity["problem"] is None and validity["code_set"] == code_set


@pytest.mark.parametrize(
    ("code", "replacement"),
    [("R05", "R05.9"), ("J18", "J18.9"), ("E11", "E11.9"), ("I21", "I21.9"), ("C50.9", "C50.919")],
)
def test_a_category_is_not_billable_and_names_its_unspecified_code(ontology, code, replacement):
    validity = _validity(code)
    assert not validity["billable"] and validity["problem"] == "category"
    assert validity["replacements"] == [replacement] and check_code(replacement, "icd10cm").billable
    assert validity["replacements"][0] in validity["note"]


@pytest.mark.parametrize(("code", "first"), [("S72.001", "S72.001A"), ("W19.XXX", "W19.XXXA"), ("W19", "W19.XXXA")])
def test_a_code_without_its_7th_character_lists_the_encounters(ontology, code, first):
    validity = _validity(code)
    assert validity["problem"] == "missing_7th_character" and not validity["billable"]
    assert validity["replacements"][0] == first and all(len(c.replace(".", "")) == 7 for c in validity["replacements"])
    assert all(check_code(c, "icd10cm").billable for c in validity["replacements"])


def test_a_7_character_code_without_its_placeholder_x(ontology):
    validity = _validity("S02.0A")
    assert validity["problem"] == "missing_placeholder" and validity["replacements"] == ["S02.0XXA"]


def test_a_partial_pcs_code_lists_its_completions_when_few(ontology):
    few = _validity("BW03", "icd10pcs")
    assert (
        few["problem"] == "partial_pcs" and few["replacements"] == ["BW03ZZZ"] and few["code_set"] == "ICD-10-PCS 2024"
    )
    many = _validity("0DT", "icd10pcs")
    assert many["problem"] == "partial_pcs" and many["replacements"] == [] and "100 code(s)" in many["note"]


def test_retired_codes_name_their_replacements(ontology):
    icd9 = _validity("250.00", "icd9cm")
    assert icd9["problem"] == "retired" and "E11.9" in icd9["replacements"]
    # an ICD-10-CM code of the 2018 GEMs that later releases expanded away
    import csv

    from icdcoder.ontology.build import source_files

    with source_files()["gem_10_to_9"].open(encoding="utf-8") as handle:
        gem_codes = {row["icd10cm"] for row in csv.DictReader(handle)}
    retired = sorted(code for code in gem_codes if ontology.get(code, "icd10cm") is None)
    assert retired, "every GEM code is still current: nothing to test"
    validity = _validity(retired[0])
    assert validity["problem"] == "retired" and not validity["billable"]
    assert all(check_code(c, "icd10cm").billable for c in validity["replacements"])


def test_a_category_without_a_default_form_names_no_replacement(ontology):
    validity = _validity("Z99")  # dependence on enabling machines: every subdivision is a specific machine
    assert validity["problem"] == "category" and validity["replacements"] == [] and "pick one" in validity["note"]


def test_unknown_codes_and_release_changes(ontology):
    assert _validity("Z99.99")["problem"] == "unknown" and _validity("Z99.99")["replacements"] == []
    assert _validity("QQQQ", "icd10pcs") == {**_validity("QQQQ", "icd10pcs"), "problem": "unknown", "replacements": []}
    # the codes under the longest known prefix stand in for a code no release has
    assert _validity("T81.4XX")["replacements"] == ["T81.40XA"]
    old_dialysis = _validity("5A1D00Z", "icd10pcs")  # hemodialysis, before FY 2018
    assert old_dialysis["problem"] == "unknown" and old_dialysis["replacements"] == ["5A1D70Z", "5A1D80Z", "5A1D90Z"]
    expanded = _validity("E66.8")  # billable in 2024, split in 2025
    assert expanded["billable"] and "expanded" in expanded["note"] and "E66.89" in expanded["replacements"]
    with pytest.raises(InputError, match="unknown code system"):
        check_code("I10", "icd11")


def test_excludes1_references_are_parsed_from_the_notes():
    assert code_references("drug-induced interstitial lung disorder (J70.2-J70.4)") == [CodeReference("J702", "J704")]
    assert code_references("diabetes due to underlying condition (E08.-)") == [CodeReference("E08", "E08")]
    assert code_references("complicating pregnancy (O10-O11, O13-O16)") == [
        CodeReference("O10", "O11"),
        CodeReference("O13", "O16"),
    ]
    assert code_references("no codes here") == []
    diabetic = code_references("coma in diabetes (E08-E13 with .01, .11, .641)")
    assert CodeReference("E1101", "E1101") in diabetic and len(diabetic) == 18
    assert not any(reference.covers("E119") for reference in diabetic) and any(r.covers("E11641") for r in diabetic)
    assert code_references("x (E08-E13 with .51-.52)")[0] == CodeReference("E0851", "E0852")
    assert code_references("concussion (S06.0X- with seventh character A)") == []  # not read too wide
    assert CodeReference("J702", "J704").covers("J703") and not CodeReference("J702", "J704").covers("J705")


def test_excludes1_pairs_of_one_note_are_flagged_both_ways(ontology):
    conflicts = excludes1_conflicts(
        [("E11.9", "icd10cm"), ("E10.9", "icd10cm"), ("I10", "icd10cm"), ("BW03ZZZ", "icd10pcs")]
    )
    assert conflicts == {"E11.9": ["E10.9"], "E10.9": ["E11.9"]}  # type 1 and type 2 diabetes: Excludes1 of E11
    assert excludes1_conflicts([("J18.9", "icd10cm"), ("P23.0", "icd10cm")]) == {"J18.9": ["P23.0"], "P23.0": ["J18.9"]}
    assert excludes1_conflicts([("I10", "icd10cm"), ("E11.9", "icd10cm")]) == {}


# ----------------------------------------------------------------------------------------- integral symptoms


def test_the_issue_examples_are_integral_symptoms():
    assert integral_symptoms(["I21.9", "E11.9"], ["R07.9"]) == {"R07.9": ["I21.9"]}
    assert integral_symptoms(["J18.9"], ["R50.9", "R07.9"]) == {"R50.9": ["J18.9"]}
    assert integral_symptoms(["I10"], ["R07.9", "R50.9"]) == {}
    assert integral_symptoms(["I21.9", "I25.10"], ["R07.89"]) == {"R07.89": ["I21.9", "I25.10"]}


def test_the_rule_file_is_versioned_data_and_every_rule_names_chapter_r_codes():
    data = json.loads(RULES_PATH.read_text(encoding="utf-8"))
    assert data["version"] == rules_version() and "I.B.4" in data["source"]
    assert len(shipped_rules().rules) == len(data["rules"]) >= 15
    for rule in data["rules"]:
        assert all(code.startswith("R") for code in rule["symptoms"]) and rule["why"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"symptoms": ["I10"], "diagnoses": ["I20-I25"], "why": "x"}, "chapter R"),
        ({"symptoms": ["R07"], "diagnoses": ["I25-I20"], "why": "x"}, "not an ICD-10-CM code or range"),
        ({"symptoms": [], "diagnoses": ["I20"], "why": "x"}, "non-empty"),
        ({"symptoms": ["R07"], "diagnoses": ["I20"]}, "exactly the fields"),
    ],
)
def test_a_bad_rule_is_named(rule, message):
    with pytest.raises(InputError, match=rf"rules\.0.*{message}"):
        parse_rules({"version": "t", "rules": [rule]}, "rules.json")
    with pytest.raises(InputError, match="version"):
        parse_rules({"rules": []})
