"""Code-centric expansion: provenance, dedup, cap, related wording, label spaces, teacher path."""

from __future__ import annotations

from collections import Counter

import pytest

from icdcoder.data.schema import Document, Evidence, GoldCode
from icdcoder.errors import InputError
from icdcoder.ontology.labels import label_space
from icdcoder.spans.expansion import PROVENANCE_ORDER, TeacherParaphraser, expand_from_ontology, sparse_codes
from icdcoder.text import normalize_text


def _doc(doc_id: str, text: str, code: str, phrase: str, system: str = "icd10cm", language: str = "es") -> Document:
    start = text.index(phrase)
    gold = GoldCode(code=code, system=system, evidence=(Evidence(pieces=((start, start + len(phrase)),)),))
    return Document(id=doc_id, text=text, language=language, codes=(gold,))


TRAIN = [
    _doc("a", "Calcificación intratesticular derecha.", "N44.8", "Calcificación intratesticular"),
    _doc("b", "Se realiza Rx tórax.", "BW03ZZZ", "Rx tórax", system="icd10pcs"),
    _doc("c", "Estreñimiento crónico de años.", "K59.09", "Estreñimiento crónico"),
]


def test_every_example_names_its_source_and_quotes_its_whole_text(ontology):
    examples = expand_from_ontology(ontology, ["N44", "I10", ("K59.00", "icd10cm")], TRAIN, per_code_cap=6)
    assert {e.provenance for e in examples} <= set(PROVENANCE_ORDER)
    for example in examples:
        [(code, system, quote)] = example.targets
        assert quote == example.text and example.start == 0 and example.end == len(example.text)
    by_code = {code: [e for e in examples if e.codes == (code,)] for code in ("N44", "I10", "K59.00")}
    assert by_code["N44"][0].provenance == "expansion:description"
    assert by_code["N44"][0].text == ontology.describe("N44", "icd10cm")
    # a category code borrows the Spanish wording of its children seen in training
    assert ("expansion:related_form", "Calcificación intratesticular") in {
        (e.provenance, e.text) for e in by_code["N44"]
    }
    # a clinical abbreviation from the hand-written table
    assert "HTA" in {e.text for e in by_code["I10"] if e.provenance == "expansion:abbreviation"}
    # an unspecified code borrows its parent's wording
    assert "expansion:parent" in {e.provenance for e in by_code["K59.00"]}


def test_dedup_by_normalized_text_and_per_code_cap(ontology):
    examples = expand_from_ontology(ontology, ["I10", "E11.9", "BW03ZZZ", "J18.9"], TRAIN, per_code_cap=3)
    counts = Counter(e.codes[0] for e in examples)
    assert set(counts) == {"I10", "E11.9", "BW03ZZZ", "J18.9"} and max(counts.values()) <= 3
    keys = [
        (normalize_text(e.text), e.codes[0]) for e in expand_from_ontology(ontology, ["I10"], TRAIN, per_code_cap=50)
    ]
    assert len(keys) == len(set(keys)) > 3
    assert expand_from_ontology(ontology, ["I10"], TRAIN, seed=1) == expand_from_ontology(
        ontology, ["I10"], TRAIN, seed=1
    )
    with pytest.raises(InputError, match="unknown code"):
        expand_from_ontology(ontology, ["QQQ.99"], TRAIN)
    with pytest.raises(InputError):
        expand_from_ontology(ontology, ["I10"], TRAIN, per_code_cap=0)


def test_label_space_modes(ontology):
    seen = label_space(ontology, TRAIN, mode="seen")
    assert seen == [("K59.09", "icd10cm"), ("N44.8", "icd10cm"), ("BW03ZZZ", "icd10pcs")]
    chapters = label_space(ontology, TRAIN)
    assert set(seen) < set(chapters)
    assert ("N44.0", "icd10cm") in chapters and ("K59.00", "icd10cm") in chapters  # same category
    assert ("N45.1", "icd10cm") in chapters and ("K55.0", "icd10cm") in chapters  # same ICD block (N40-N53, K55-K64)
    assert ("BW03ZZZ", "icd10pcs") in chapters and ("BW03ZZ", "icd10pcs") not in chapters  # PCS shapes in data only
    assert ("I10", "icd10cm") not in chapters and len(chapters) < 1000
    with pytest.raises(InputError):
        label_space(ontology, TRAIN, mode="everything")


def test_sparse_codes_counts_training_evidence():
    codes = [("N44.8", "icd10cm"), ("N44.0", "icd10cm")]
    assert sparse_codes(codes, TRAIN, max_evidence=0) == [("N44.0", "icd10cm")]
    assert sparse_codes(codes, TRAIN, max_evidence=1) == codes


def test_teacher_paraphraser_runs_with_a_tiny_local_model(ontology, tiny_lm_dir):
    teacher = TeacherParaphraser(str(tiny_lm_dir), language="es", max_new_tokens=6, batch_size=2)
    examples = teacher.expand(ontology, ["I10", "N44.0", "R52"])
    assert all(e.provenance == f"teacher:{tiny_lm_dir.name}" for e in examples)
    for example in examples:  # random weights give noise, but every kept output passed the filters
        assert example.text and "|" not in example.text and len(example.text.split()) <= 16
    assert teacher.clean("  \n", "Pain") is None
    assert teacher.clean("pain.", "Pain") is None
    assert teacher.clean("I10 | dolor", "Pain") is None
    assert teacher.clean(" ".join(["dolor"] * 17), "Pain") is None
    assert teacher.clean('"dolor intenso"\nmore text', "Pain") == "dolor intenso"
    with pytest.raises(InputError):
        TeacherParaphraser(str(tiny_lm_dir), language="fr")


def test_child_titles_are_not_reused_for_a_parent_when_the_child_is_a_target(ontology):
    alone = expand_from_ontology(ontology, ["N44"], [], per_code_cap=10)
    assert "Torsion of testis" in {e.text for e in alone if e.provenance == "expansion:child"}
    together = expand_from_ontology(ontology, ["N44", "N44.0"], [], per_code_cap=10)
    assert ("Torsion of testis", ("N44",)) not in {(e.text, e.codes) for e in together}
    assert ("Torsion of testis", ("N44.0",)) in {(e.text, e.codes) for e in together}
