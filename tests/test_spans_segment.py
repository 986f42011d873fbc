"""Segmentation: exact offsets, abbreviation-aware sentence ends, long-sentence windows."""

from __future__ import annotations

import pytest

from icdcoder.errors import InputError
from icdcoder.spans.segment import Segment, segment_note, sentence_spans


def _texts(text: str, **kwargs) -> list[str]:
    return [segment.text(text) for segment in segment_note(text, **kwargs)]


def test_offsets_are_exact_and_segments_trimmed_and_non_empty():
    text = "  Varón de 45 años.  Acude por fiebre!\n\n¿Dolor torácico? No.\n   \n"
    segments = segment_note(text)
    assert [s.text(text) for s in segments] == ["Varón de 45 años.", "Acude por fiebre!", "¿Dolor torácico?", "No."]
    for segment in segments:
        piece = text[segment.start : segment.end]
        assert piece == piece.strip() and piece
    assert segment_note("") == [] and segment_note(" \n\t") == []


@pytest.mark.parametrize(
    "sentence",
    [
        "Visto por el Dr. García en consulta.",
        "Hemoglobina de 3.5 g/dl con VCM 80.2 fl.",
        "Presenta lesiones cutáneas, p. ej. Pápulas en tronco.",
        "Residente en EE.UU. Desde hace años.",
        "Seen by Dr. Smith, approx. Two weeks ago.",
        "Dolor en fosa ilíaca izq. Con defensa.",
        "Tumor de J. Pérez en el brazo.",
    ],
)
def test_abbreviations_and_decimals_do_not_end_sentences(sentence):
    assert _texts(sentence) == [sentence]


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Plaquetas 363.000. La VSG normal.", ["Plaquetas 363.000.", "La VSG normal."]),
        ("Plaquetas 366.000/ul. Bioquímica normal.", ["Plaquetas 366.000/ul.", "Bioquímica normal."]),
        ("Se administró morfina (i.v). Después mejora.", ["Se administró morfina (i.v).", "Después mejora."]),
        ("Como se ve en la Fig.1. El tumor no afecta.", ["Como se ve en la Fig.1.", "El tumor no afecta."]),
    ],
)
def test_a_number_or_bracket_before_the_full_stop_ends_the_sentence(text, sentences):
    assert _texts(text) == sentences


def test_more_abbreviations_keep_their_full_stop_inside_the_sentence():
    text = "Tumor de 13 cm. Infiltra grasa."
    assert [text[start:end] for start, end in sentence_spans(text)] == ["Tumor de 13 cm.", "Infiltra grasa."]
    assert [text[start:end] for start, end in sentence_spans(text, abbreviations={"cm"})] == [text]


def test_sentence_ends_need_a_capital_or_digit_after_them():
    text = "Se diagnostica neumonía. 3 días después mejora. pero sigue con tos."
    assert _texts(text) == ["Se diagnostica neumonía.", "3 días después mejora. pero sigue con tos."]


def test_lines_are_boundaries_even_without_punctuation():
    text = "A 70-year-old male with a history of prostate cancer\nSurgery was performed\nHe came to the ER."
    assert _texts(text) == [
        "A 70-year-old male with a history of prostate cancer",
        "Surgery was performed",
        "He came to the ER.",
    ]


def test_long_sentences_split_on_semicolons_before_commas_within_max_words():
    first = "uno dos tres cuatro cinco;"
    second = "seis siete, ocho nueve diez once doce"
    text = f"{first} {second}."
    assert _texts(text, max_words=6) == [first, "seis siete,", "ocho nueve diez once doce."]


def test_windows_cover_every_word_once_and_respect_max_words():
    words = [f"w{i}" for i in range(103)]
    text = " ".join(words[:30]) + ", " + " ".join(words[30:]) + "."
    segments = segment_note(text, max_words=10)
    assert all(len(s.text(text).split()) <= 10 for s in segments)
    assert " ".join(s.text(text) for s in segments).split() == text.split()
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))


def test_segment_text_and_bad_max_words():
    assert Segment(2, 5).text("abcdefg") == "cde"
    with pytest.raises(InputError, match="max_words"):
        segment_note("x", max_words=0)


def test_note_windows_merge_whole_sentences_up_to_max_words():
    from icdcoder.spans.segment import note_windows

    text = "Uno dos tres. Cuatro cinco.\nSeis siete ocho nueve. Diez."
    windows = [w.text(text) for w in note_windows(text, max_words=6)]
    assert windows == ["Uno dos tres. Cuatro cinco.", "Seis siete ocho nueve. Diez."]
    assert [w.text(text) for w in note_windows(text, max_words=100)] == [text]
