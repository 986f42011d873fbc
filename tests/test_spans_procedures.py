"""ICD-10-PCS codes composed from an operation word and a body part in one English sentence, written at the
level the training notes code the operation."""

from __future__ import annotations

import pytest

from icdcoder.spans.procedures import ComposedCode, ProcedureComposer


@pytest.fixture(scope="module")
def composer(ontology):
    return ProcedureComposer(ontology, {})


@pytest.mark.parametrize(
    ("sentence", "codes"),
    [
        ("A biopsy of the rectum was taken.", ["0DBP"]),  # Excision of Rectum
        ("Biopsy of the left lung.", ["0BBL"]),  # Excision of Left Lung
        ("CT of the abdomen and pelvis showed a mass.", ["BW21"]),  # the most specific: not BW20 (Abdomen)
        ("Right kidney ultrasound was normal.", ["BT41"]),  # Ultrasonography of Right Kidney
        ("Renal ultrasound was normal.", ["BT43"]),  # no side named: Bilateral Kidneys
        ("Biopsies of the rectum were taken.", ["0DBP"]),  # a plural operation word
        ("Abdominal CT showed a mass.", ["BW20"]),  # a site adjective meets the title's noun (Abdomen)
        ("The rectum is normal.", []),  # a body part without an operation
        ("A biopsy was taken.", []),  # an operation without a body part
    ],
)
def test_a_sentence_proposes_the_prefixes_whose_operation_and_whole_body_part_it_names(composer, sentence, codes):
    assert [found.code for found in composer.compose(sentence)] == codes


def test_each_proposal_carries_its_sentence(composer):
    text = "History of colitis. A biopsy of the rectum was taken.\nCT of the abdomen and pelvis: normal."
    found = composer.compose(text)
    assert [(item.code, text[item.start : item.end]) for item in found] == [
        ("0DBP", "A biopsy of the rectum was taken."),
        ("BW21", "CT of the abdomen and pelvis: normal."),
    ]


def test_operations_are_written_at_the_level_training_notes_code_them(ontology):
    # training codes excisions of the respiratory system in full (with 8ZX most often), imaging as prefixes
    trained = {"0BBK8ZX": 3, "0BBJ0ZX": 1, "0BB3": 1, "BW20": 2, "BW20ZZZ": 1}
    composer = ProcedureComposer(ontology, trained)
    assert composer.compose("Biopsy of the left lung.") == [ComposedCode("0BBL8ZX", "0BBL", 0, 24)]
    assert composer.coded("BW21") == "BW21"
    assert (
        composer.coded("0DBP") == "0DBP8ZX"
    )  # the level belongs to the root operation (excision), not the body system
    assert composer.coded("0DTJ") == "0DTJ"  # an operation training never coded (resection) stays a prefix
