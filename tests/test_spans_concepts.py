"""Descriptions and clinical sentences as bags of content words, and the ICD-10-CM codes whose title or inclusion
term one sentence holds."""

from __future__ import annotations

import pytest

from icdcoder.spans.concepts import ConceptIndex, ConceptMatch, alternatives, content_words
from icdcoder.spans.segment import sentence_spans


def test_content_words_drop_qualifiers_and_digits():
    assert content_words("Malignant neoplasm of unspecified ovary, 2 sites") == {"malignant", "neoplasm", "ovary"}


@pytest.mark.parametrize(
    ("clinical", "title"),
    [
        ("primary ovarian carcinoma", "Malignant neoplasm of ovary"),
        ("Renal stones", "Calculus of kidney"),
        ("testicular biopsy", "Testis"),  # an adjective meets the title's noun after both fold their plural
        ("abdominal and pelvic CT", "Abdomen and Pelvis"),
        ("thoracic CT", "Chest"),
    ],
)
def test_clinical_wording_holds_every_content_word_of_the_title(clinical, title):
    assert content_words(title) <= content_words(clinical)


def test_sentence_spans_cut_at_closing_punctuation_and_line_breaks_without_blanks():
    text = "  CT scan: normal. Dose 3.5 mg\n\nBiopsy taken! Dr. Ruiz saw it."
    assert [text[start:end] for start, end in sentence_spans(text)] == [
        "CT scan: normal.",
        "Dose 3.5 mg",
        "Biopsy taken!",
        "Dr. Ruiz saw it.",
    ]
    assert sentence_spans(" \n ") == []


def test_numbers_are_content_words_only_when_asked():
    assert content_words("Stage 3 kidney disease") == {"stage", "kidney", "disease"}
    assert content_words("Stage 3 kidney disease", numbers=True) == {"stage", "3", "kidney", "disease"}


def test_alternatives_read_each_of_two_joined_words():
    assert alternatives("Malignant neoplasm of bronchus or lung") == [
        "Malignant neoplasm of bronchus",
        "Malignant neoplasm of lung",
    ]
    assert len(alternatives("Disorders of eye and adnexa or orbit")) == 4
    assert alternatives("Acute kidney failure") == ["Acute kidney failure"]


@pytest.fixture(scope="module")
def concepts(ontology):
    return ConceptIndex(ontology)


@pytest.mark.parametrize(
    ("sentence", "codes"),
    [
        ("Carcinoma of the right ovary.", {"C56.1"}),  # the most specific: not C56 (Malignant neoplasm of ovary)
        ("Other acute kidney failure", {"N17"}),  # equal word sets keep the shortest code
        ("Acute renal failure.", {"N17"}),  # a site adjective meets the title's noun
        ("Type 2 diabetes mellitus.", {"E11"}),  # numbers tell it from Type 1 (E10)
        ("Stage 3 chronic kidney disease.", {"N18.30"}),
        ("Adenocarcinoma of the lung.", {"C34"}),  # "bronchus and lung": either word
        ("Failure.", set()),  # one word names no concept
    ],
)
def test_a_sentence_holds_the_codes_whose_every_content_word_it_names(concepts, sentence, codes):
    assert concepts.codes_in_sentence(sentence) == codes


def test_each_match_carries_its_sentence(concepts):
    text = "Fever. Carcinoma of the right ovary."
    assert concepts.matches(text) == [ConceptMatch("C56.1", 7, len(text))]


def test_the_index_is_cached_by_titles_and_rules(ontology, concepts, tmp_path, monkeypatch):
    monkeypatch.setenv("ICDCODER_CACHE", str(tmp_path))
    built = ConceptIndex.load_or_build(ontology)
    assert built.by_word == concepts.by_word and len(list(tmp_path.glob("derived-*.pkl"))) == 1

    def no_building(*args, **kwargs):
        raise AssertionError("the cached index should have been loaded")

    monkeypatch.setattr(ConceptIndex, "__init__", no_building)
    assert ConceptIndex.load_or_build(ontology).by_word == concepts.by_word
