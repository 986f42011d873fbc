"""Span and document examples: verbatim quotes, negatives, context, truncation, prompt records, mixing."""

from __future__ import annotations

from collections import Counter

import pytest

from icdcoder.data.schema import Document, Evidence, GoldCode
from icdcoder.errors import InputError
from icdcoder.prompt import parse_answer
from icdcoder.spans.examples import (
    SpanExample,
    build_document_examples,
    build_span_examples,
    mix_examples,
    sentence_cue_score,
    to_prompt_completion,
)


def _gold(text: str, code: str, *phrases: str, system: str = "icd10cm") -> GoldCode:
    pieces = tuple((text.index(p), text.index(p) + len(p)) for p in phrases)
    return GoldCode(code=code, system=system, evidence=(Evidence(pieces=pieces),))


def _spanish_note() -> Document:
    text = (
        "Varón de 60 años con antecedentes de hipertensión arterial. "
        "Acude por dolor en el teste derecho. "
        "La exploración muestra teste derecho aumentado de tamaño y edemas en miembros. "
        "Se realiza Rx tórax. "
        "Vive con su mujer. "
        "Tiene dos hijos."
    )
    codes = (
        _gold(text, "I10", "hipertensión arterial"),
        _gold(text, "N44.8", "teste derecho aumentado de tamaño"),
        _gold(text, "R60.9", "edemas"),
        _gold(text, "BW03ZZZ", "Rx", "tórax", system="icd10pcs"),
    )
    return Document(id="es1", text=text, language="es", codes=codes)


def test_span_examples_hold_codes_whose_evidence_starts_in_them_with_verbatim_quotes():
    examples = build_span_examples([_spanish_note()], negative_ratio=0)
    assert [example.codes for example in examples] == [("I10",), ("N44.8", "R60.9"), ("BW03ZZZ",)]
    for example in examples:
        assert example.provenance == "span"
        for _, _, quote in example.targets:
            assert quote in example.text
    assert examples[1].targets[0] == ("N44.8", "icd10cm", "teste derecho aumentado de tamaño")
    assert examples[2].targets[0] == ("BW03ZZZ", "icd10pcs", "tórax")  # longest piece of "Rx ... tórax"


def test_negative_ratio_sets_the_share_of_code_free_segments():
    filler = " ".join(f"Frase número {i} sin nada." for i in range(40))
    documents = [_spanish_note(), Document(id="es2", text=filler, language="es")]
    positives = 3
    for ratio, expected in [(0, 0), (1.0, 3), (0.7, 2), (100, 43)]:
        examples = build_span_examples(documents, negative_ratio=ratio, seed=1)
        negatives = [e for e in examples if not e.targets]
        assert len(examples) - len(negatives) == positives
        assert len(negatives) == expected
    same = build_span_examples(documents, negative_ratio=1.0, seed=1)
    assert same == build_span_examples(documents, negative_ratio=1.0, seed=1)
    with pytest.raises(InputError):
        build_span_examples(documents, negative_ratio=-1)


def test_context_words_widen_the_text_but_keep_the_segment_targets():
    examples = build_span_examples([_spanish_note()], context_words=3, negative_ratio=0)
    assert examples[0].provenance == "span+context3"
    middle = examples[1]
    assert middle.text.startswith("el teste derecho.") and middle.text.endswith("Se realiza Rx")
    assert middle.codes == ("N44.8", "R60.9")
    note = _spanish_note().text
    assert note[middle.start : middle.end] == middle.text


def test_english_sentence_evidence_is_clipped_to_a_short_verbatim_quote():
    sentence = "The examination showed an enlarged right testis with marked swelling of both legs and some pain today"
    text = "A 60-year-old man.\n" + sentence + "\nHe went home."
    document = Document(id="en1", text=text, language="en", codes=(_gold(text, "N44.8", sentence),))
    [example] = build_span_examples([document], negative_ratio=0)
    quote = example.targets[0][2]
    assert quote in example.text and len(quote.split()) == 12
    assert quote.startswith("The examination showed")


def test_document_truncation_keeps_the_diagnostic_sentence_and_its_codes_only():
    filler = " ".join(f"Comentario adicional número {i} del caso." for i in range(30))
    text = f"{filler} Se diagnostica torsión testicular. Paciente con dolor leve."
    codes = (_gold(text, "N44.0", "torsión testicular"), _gold(text, "R52", "dolor"))
    document = Document(id="d1", text=text, language="es", codes=codes)
    [example] = build_document_examples([document], max_words=12)
    assert "Se diagnostica torsión testicular." in example.text
    assert len(example.text.split()) <= 12
    assert example.provenance == "document:truncated"
    assert "N44.0" in example.codes
    for _, _, quote in example.targets:
        assert quote in example.text
    assert sentence_cue_score("Se diagnostica torsión") == 1 and sentence_cue_score("Vive solo") == 0
    [whole] = build_document_examples([_spanish_note()], max_words=300)
    assert whole.provenance == "document" and set(whole.codes) == {"I10", "N44.8", "R60.9", "BW03ZZZ"}


def test_prompt_completion_round_trips_through_the_shared_parser():
    example = build_span_examples([_spanish_note()], negative_ratio=0)[1]
    record = to_prompt_completion(example)
    assert set(record) == {"prompt", "completion"}
    assert example.text in record["prompt"]
    parsed = parse_answer(record["completion"], example.text, lambda code: (code, "icd10cm"))
    assert [item.code for item in parsed.items] == ["N44.8", "R60.9"] and not parsed.dropped
    negative = SpanExample("Vive solo.", (), "x", 0, 10, "span")
    assert to_prompt_completion(negative)["completion"] == "NONE"


def _fake(n: int, kind: str) -> list[SpanExample]:
    return [SpanExample(f"{kind} {i}", (), f"{kind}{i}", 0, 1, kind) for i in range(n)]


def test_mix_examples_ratio_and_schedules():
    spans, documents = _fake(80, "span"), _fake(5, "document")
    mixed = mix_examples(spans, documents, doc_ratio=0.2, seed=3)
    counts = Counter(example.provenance for example in mixed)
    assert counts == {"span": 80, "document": 20}  # documents cycled to reach 20%
    first = mix_examples(spans, documents, doc_ratio=0.2, schedule="documents_first")
    assert {e.provenance for e in first[:20]} == {"document"} and {e.provenance for e in first[20:]} == {"span"}
    last = mix_examples(spans, documents, doc_ratio=0.2, schedule="spans_first")
    assert {e.provenance for e in last[:80]} == {"span"}
    assert mix_examples(spans, [], doc_ratio=0.5) and len(mix_examples(spans, [], doc_ratio=0.5)) == 80
    with pytest.raises(InputError):
        mix_examples(spans, documents, schedule="random")
    with pytest.raises(InputError):
        mix_examples(spans, documents, doc_ratio=1.0)


def test_real_codiesp_span_examples_have_verbatim_quotes(codiesp_dir):
    from icdcoder.data.codiesp import load_codiesp

    documents = load_codiesp(codiesp_dir, "train")[:100]
    examples = build_span_examples(documents, negative_ratio=0.3)
    positives = [e for e in examples if e.targets]
    assert len(positives) > 500
    assert all(quote and quote in e.text for e in positives for _, _, quote in e.targets)
    assert all(len(e.text.split()) <= 40 for e in examples)
    covered = sum(len(e.targets) for e in positives)
    evidences = sum(len({g.code for g in d.codes if g.evidence}) for d in documents)
    assert covered >= 0.95 * evidences
