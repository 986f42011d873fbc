"""Codes named by a measured value: families read off the titles, templates learned on training notes, the value
at a template's slot naming the family's narrowest code."""

from __future__ import annotations

import math

import pytest

from icdcoder.data.schema import Document, GoldCode
from icdcoder.errors import InputError
from icdcoder.spans.quantities import (
    QuantityTemplates,
    code_for_value,
    ontology_value_families,
    title_interval,
    value_families,
)

WEEKS = "# weeks gestation of pregnancy"


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Body mass index [BMI] 25.0-25.9, adult", ("body mass index [bmi] #, adult", 25.0, 26.0)),
        ("27 weeks gestation of pregnancy", (WEEKS, 27.0, 28.0)),
        ("Greater than 42 weeks gestation of pregnancy", (WEEKS, 43.0, math.inf)),
        ("Less than 8 weeks gestation of pregnancy", (WEEKS, -math.inf, 8.0)),
        ("Body mass index [BMI] 19.9 or less, adult", ("body mass index [bmi] #, adult", -math.inf, 20.0)),
        ("Body mass index [BMI] 70 or greater, adult", ("body mass index [bmi] #, adult", 70.0, math.inf)),
        ("Glasgow coma scale score 13-15", ("glasgow coma scale score #", 13.0, 16.0)),
    ],
)
def test_a_title_writes_one_value_or_range(title, expected):
    key, low, high = title_interval(title)
    assert (key, pytest.approx(low), pytest.approx(high)) == expected


@pytest.mark.parametrize(
    "title",
    [
        "Dislocation of C3/C4 cervical vertebrae",
        "Essential hypertension",
        "Burns involving 20-29% of body surface with 10-19% third degree burns",
    ],
)
def test_a_title_without_exactly_one_value_has_no_interval(title):
    assert title_interval(title) is None


def test_families_need_several_codes_covering_different_values():
    families = value_families(
        [
            ("Z3A.26", "26 weeks gestation of pregnancy"),
            ("Z3A.27", "27 weeks gestation of pregnancy"),
            ("Q85.01", "Neurofibromatosis, type 1"),
            ("X00", "Lonely 3 title"),
        ]
    )
    assert list(families) == [WEEKS]
    assert [c.code for c in families[WEEKS]] == ["Z3A.26", "Z3A.27"]


def test_the_narrowest_code_covering_the_value_is_named(ontology):
    families = ontology_value_families(ontology)
    bmi = families["body mass index [bmi] #, adult"]
    assert code_for_value(bmi, 41.0) == "Z68.41"  # not Z68.4 "40 or greater"
    assert code_for_value(bmi, 13.0) == "Z68.1"
    assert code_for_value(families[WEEKS], 19.6) == "Z3A.19"
    assert code_for_value(families[WEEKS], 50.0) == "Z3A.49"


def note(doc_id: str, text: str, codes: tuple[str, ...] = ()) -> Document:
    return Document(id=doc_id, text=text, language="es", codes=tuple(GoldCode(code=c, system="icd10cm") for c in codes))


FAMILIES = value_families((f"Z3A.{weeks}", f"{weeks} weeks gestation of pregnancy") for weeks in range(10, 43))
TRAINING = [
    note("a", "Gestante de 38 semanas de gestación que ingresa por dolor.", ("Z3A.38",)),
    note("b", "Embarazo de 24 semanas de gestación. Tiene 30 años.", ("Z3A.24",)),
    note("c", "Control a las 35 semanas de gestación, sin incidencias.", ("Z3A.35",)),
    note("d", "Tos de 2 semanas de evolución. Tiene 31 años.", ()),
    note("e", "Dolor de 3 semanas de evolución en la rodilla.", ()),
]


def test_templates_learned_on_training_notes_name_a_code_none_of_them_carries():
    templates = QuantityTemplates.build(TRAINING, FAMILIES)
    assert "# semana gestacion" in templates.templates  # right in three notes, never wrong
    assert "# ano" not in templates.templates  # "30 años" named Z3A.30 in one note only, and wrongly
    text = "Primigesta con 27,5 semanas de gestación."
    found = {(m.code, text[m.start : m.end]) for m in templates.matches(text)}
    assert ("Z3A.27", "27,5 semanas de gestación") in found
    assert {code for code, _ in found} == {"Z3A.27"}


def test_a_template_often_wrong_on_training_notes_is_dropped():
    wrong_often = TRAINING + [note(f"w{i}", f"Fiebre de {10 + i} semanas de evolución.", ()) for i in range(6)]
    strict = QuantityTemplates.build(wrong_often, FAMILIES, min_reliability=0.5)
    assert "# semana" not in strict.templates
    counts = QuantityTemplates.build(wrong_often, FAMILIES, min_reliability=0.0).templates["# semana"]
    # 3 pregnancies + 6 fevers; "2 semanas" and "3 semanas" name no code of the family (10-42 weeks here)
    assert (counts[WEEKS].matched, counts[WEEKS].right) == (9, 3)


def test_templates_round_trip_and_malformed_ones_fail_in_one_line():
    templates = QuantityTemplates.build(TRAINING, FAMILIES)
    record = templates.to_json()
    again = QuantityTemplates.from_json(record, "quantities.json")
    assert again.to_json() == record
    text = "a las 40 semanas de gestación"
    assert again.matches(text) == templates.matches(text)
    for broken in (
        {"families": {}},
        {**record, "templates": {"# semana": {"nope": [1, 1]}}},
        {**record, "templates": {"# semana": {WEEKS: [1, 2]}}},
        {**record, "families": {WEEKS: [["Z3A.10"]]}},
    ):
        with pytest.raises(InputError, match="malformed value templates") as caught:
            QuantityTemplates.from_json(broken, "quantities.json")
        assert "quantities.json" in str(caught.value) and "\n" not in str(caught.value)
