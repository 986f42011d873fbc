"""Evidence located from a code's ICD terms for gold codes without offsets (the notes MIMIC-IV brings)."""

from __future__ import annotations

from icdcoder.data.schema import Document, Evidence, GoldCode
from icdcoder.spans.silver import code_terms, locate_evidence, with_silver_evidence

NOTE = (
    "Patient with poorly controlled type 2 diabetes mellitus on metformin.\n"
    "A chest X-ray is requested.\n"
    "He had a myocardial infarction years ago."
)


def _located(ontology, code: str, system: str, min_share: float = 0.5) -> str | None:
    span = locate_evidence(NOTE, code_terms(ontology, code, system), min_share)
    return None if span is None else NOTE[span[0] : span[1]]


def test_the_words_that_name_a_code_are_its_evidence(ontology):
    assert _located(ontology, "E11.9", "icd10cm") == "2 diabetes mellitus"  # the category's title, "type" a qualifier
    assert _located(ontology, "BW03ZZZ", "icd10pcs") == "chest X-ray"  # "ray" names Plain Radiography
    assert _located(ontology, "N39.0", "icd10cm") is None  # not in the note
    assert _located(ontology, "NOPE", "icd10cm") is None  # not in the code system


def test_min_share_sets_how_much_of_a_term_a_sentence_must_hold(ontology):
    # "Acute myocardial infarction" (I21): two of three words
    assert _located(ontology, "I21.9", "icd10cm", min_share=0.5) == "myocardial infarction"
    assert _located(ontology, "I21.9", "icd10cm", min_share=1.0) is None


def test_one_word_never_names_a_longer_term():
    term = frozenset({"chest", "pain"})
    assert locate_evidence("Pain in the knee.", [term]) is None
    assert locate_evidence("Oppressive pain in the chest.", [term]) == (11, 28)
    assert locate_evidence("Fever.", [frozenset({"fever"})]) == (0, 5)


def test_only_codes_without_offsets_get_evidence_and_they_are_counted(ontology):
    given = GoldCode(code="I21.9", system="icd10cm", evidence=(Evidence(pieces=((0, 7),)),))
    document = Document(
        id="n",
        text=NOTE,
        language="en",
        codes=(
            given,
            GoldCode(code="E11.9", system="icd10cm"),
            GoldCode(code="N39.0", system="icd10cm"),
        ),
    )
    (located,), report = with_silver_evidence([document], ontology)
    assert (report.located, report.missing) == (1, 1)
    codes = {gold.code: gold for gold in located.codes}
    assert codes["I21.9"] == given
    assert codes["E11.9"].evidence[0].text_in(NOTE) == "2 diabetes mellitus"
    assert codes["N39.0"].evidence == ()
