"""Sentence alignment (Spanish sentences <-> English lines) on small made-up pairs."""

from __future__ import annotations

from icdcoder.data.align import (
    align_document,
    align_sentences,
    anchor_cost,
    anchors,
    is_filler_line,
    length_cost,
    line_spans,
    numbers_agree,
    project_pieces,
    segment_sentences,
)
from icdcoder.spans.segment import sentence_spans


def _sentences(text: str) -> list[str]:
    return [text[start:end] for start, end in segment_sentences(text)]


def _kinds(beads) -> list[str]:
    return [bead.kind for bead in beads]


def test_segmenter_splits_on_sentence_ends_and_line_breaks():
    text = "Varón de 37 años. Refiere fiebre!  ¿Dolor? Sí.\n\nExploración normal"
    assert _sentences(text) == ["Varón de 37 años.", "Refiere fiebre!", "¿Dolor?", "Sí.", "Exploración normal"]


def test_segmenter_keeps_abbreviations_initials_decimals_and_units_inside_a_sentence():
    text = "Visto por el Dr. Pérez y la T.A. normal. Tumor de 13 cm. Infiltra grasa. Tª 40.2 C hoy."
    assert _sentences(text) == [
        "Visto por el Dr. Pérez y la T.A. normal.",
        "Tumor de 13 cm. Infiltra grasa.",
        "Tª 40.2 C hoy.",
    ]


def test_segmenter_is_the_coders_splitter_but_keeps_unit_periods():
    text = "Plaquetas 363.000. Tumor de 13 cm. Infiltra grasa. Peso de 56 kg. Afebril."
    coder = [text[start:end] for start, end in sentence_spans(text)]
    assert coder == ["Plaquetas 363.000.", "Tumor de 13 cm.", "Infiltra grasa.", "Peso de 56 kg.", "Afebril."]
    assert _sentences(text) == ["Plaquetas 363.000.", "Tumor de 13 cm. Infiltra grasa.", "Peso de 56 kg. Afebril."]


def test_segment_spans_slice_the_text_without_outer_whitespace():
    text = "  Uno dos.   Tres cuatro.\n"
    spans = segment_sentences(text)
    assert [text[start:end] for start, end in spans] == ["Uno dos.", "Tres cuatro."]


def test_anchors_normalise_decimal_comma_and_keep_codes_and_names():
    spanish = anchors("Tª 40,2 C; actina (DAKO, clon HHF35) por Brucella y 20 mm")
    english = anchors("Ta 40.2 C; actin (DAKO, clone HHF35) by Brucella and 20 mm")
    assert {"#40.2", "#20", "#20 mm", "dako", "hhf35", "brucella"} <= spanish & english


def test_numbers_agree_reads_decimal_commas_and_ignores_numberless_pairs():
    assert numbers_agree("Tª 40,2 C y 105 lpm", "Ta 40.2 C and 105 bpm") is True
    assert numbers_agree("Hb 13,7", "Hb 14.1") is False
    assert numbers_agree("Sin fiebre.", "No fever.") is None


def test_anchor_cost_rewards_shared_and_penalises_lone_numbers():
    shared = anchor_cost(frozenset({"#15", "hhf35"}), frozenset({"#15", "hhf35"}))
    lone = anchor_cost(frozenset({"#15"}), frozenset({"#40"}))
    assert shared < 0 < lone


def test_length_cost_grows_with_length_mismatch():
    assert length_cost(0, 0, 1.0) == 0.0
    assert length_cost(100, 100, 1.0) < length_cost(100, 130, 1.0) < length_cost(100, 200, 1.0)
    assert length_cost(100, 90, 0.9) < length_cost(100, 100, 0.9)


def test_one_to_one_when_sentences_correspond():
    source = ["Paciente de 50 años con dolor abdominal.", "Se realizó TAC urgente.", "Alta a los 3 días."]
    target = ["50-year-old patient with abdominal pain.", "An urgent CT was performed.", "Discharged after 3 days."]
    beads = align_sentences(source, target)
    assert _kinds(beads) == ["1-1", "1-1", "1-1"]
    assert [bead.target for bead in beads] == [(0,), (1,), (2,)]


def test_numbers_decide_where_two_sentences_merge():
    source = ["Peso de 70 kg.", "Talla de 182 cm y perímetro de 95 cm.", "IMC 21,6 y tensión 120/80."]
    merged_first = ["Weight 70 kg, height 182 cm and perimeter 95 cm.", "BMI 21.6 and blood pressure 120/80."]
    merged_last = ["Weight 70 kg.", "Height 182 cm and perimeter 95 cm, BMI 21.6 and pressure 120/80."]
    assert [(b.source, b.target) for b in align_sentences(source, merged_first)] == [((0, 1), (0,)), ((2,), (1,))]
    assert [(b.source, b.target) for b in align_sentences(source, merged_last)] == [((0,), (0,)), ((1, 2), (1,))]


def test_split_translation_gives_one_to_two_bead():
    source = ["Se practicó nefrectomía radical izquierda con linfadenectomía y el postoperatorio fue normal.", "Alta."]
    target = [
        "Left radical nephrectomy with lymphadenectomy was performed.",
        "The postoperative period was normal.",
        "Discharge.",
    ]
    assert _kinds(align_sentences(source, target)) == ["1-2", "1-1"]


def test_sentence_left_untranslated_gives_one_to_zero_bead():
    source = ["Hemoglobina 13,7 g/dl.", "Plaquetas 300.000.", "Se decidió el alta sin tratamiento adicional alguno."]
    beads = align_sentences(source, ["Hemoglobin 13.7 g/dl, platelets 300.000."])
    assert [(bead.source, bead.target) for bead in beads] == [((0, 1), (0,)), ((2,), ())]
    assert _kinds(beads) == ["2-1", "1-0"]


def test_filler_lines_are_left_out_of_the_alignment():
    assert is_filler_line("1.") and is_filler_line("") and not is_filler_line("Ta 40.2 C.")
    aligned = align_document("Dolor torácico.\n\nECG normal.", ["Chest pain.", "1.", "Normal ECG."])
    assert [bead.target for bead in aligned.beads] == [(0,), (2,)]
    assert aligned.quality()["alignment_filler_lines"] == "1"
    assert aligned.quality()["alignment_one_to_one"] == "true"


def test_line_spans_index_the_joined_text():
    lines = ["ab", "", "cde"]
    text = "\n".join(lines)
    assert [text[start:end] for start, end in line_spans(lines)] == lines


def test_projection_maps_spans_to_the_aligned_lines():
    spanish = "Fiebre de 39 grados. Orquiepididimitis derecha. Se trató con estreptomicina 1 g."
    english = ["Fever of 39 degrees.", "Right orchiepididymitis.", "Treated with streptomycin 1 g."]
    aligned = align_document(spanish, english)
    text = aligned.target_text
    start = spanish.index("Orquiepididimitis")
    pieces = project_pieces(aligned, [(start, start + len("Orquiepididimitis derecha"))])
    assert [text[s:e] for s, e in pieces] == ["Right orchiepididymitis."]
    across = project_pieces(aligned, [(start, spanish.index("estreptomicina") + 5)])
    assert [text[s:e] for s, e in across] == ["Right orchiepididymitis.\nTreated with streptomycin 1 g."]
    discontinuous = project_pieces(aligned, [(0, 6), (spanish.index("estreptomicina"), len(spanish) - 1)])
    assert [text[s:e] for s, e in discontinuous] == ["Fever of 39 degrees.", "Treated with streptomycin 1 g."]


def test_projection_of_an_untranslated_sentence_is_empty():
    spanish = (
        "Hemoglobina 13,7 g/dl; ferritina 80. Plaquetas 300.000. Se decidió el alta sin tratamiento adicional alguno."
    )
    english = "Hemoglobin 13.7 g/dl; ferritin 80, platelets 300.000."
    aligned = align_document(spanish, [english])
    assert _kinds(aligned.beads) == ["2-1", "1-0"]
    assert project_pieces(aligned, [(spanish.index("alta"), len(spanish))]) == ()
    assert project_pieces(aligned, [(spanish.index("Plaquetas"), spanish.index("Plaquetas") + 9)]) == (
        (0, len(english)),
    )
    assert aligned.quality()["alignment_one_to_one"] == "false"
    assert aligned.number_agreement() == (1, 1)  # the 1-0 bead is not checked


def test_a_translated_span_maps_back_to_the_sentences_it_translates():
    spanish = "Fiebre de 39 grados. Orquiepididimitis derecha. Se trató con estreptomicina 1 g."
    english = ["Fever of 39 degrees.", "Right orchiepididymitis.", "", "Treated with streptomycin 1 g."]
    aligned = align_document(spanish, english)
    text = aligned.target_text
    start = text.index("orchiepididymitis")
    back = aligned.source_span_of_target(start, start + len("orchiepididymitis"))
    assert spanish[slice(*back)] == "Orquiepididimitis derecha."
    across = aligned.source_span_of_target(start, text.index("streptomycin"))
    assert spanish[slice(*across)] == "Orquiepididimitis derecha. Se trató con estreptomicina 1 g."
    assert aligned.source_span_of_target(text.index("\n\n") + 1, text.index("\n\n") + 1) is None  # the empty line


def test_a_line_with_no_aligned_sentence_maps_back_to_nothing():
    aligned = align_document("", ["Chest pain."])
    assert [(bead.source, bead.target) for bead in aligned.beads] == [((), (0,))]
    assert aligned.source_span_of_target(0, 5) is None
