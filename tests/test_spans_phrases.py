"""Evidence narrowed and completed: a translation's match carried to the note's words that translate it, and a span
grown by the words annotators keep with a mention."""

from __future__ import annotations

import pytest

from icdcoder.data.schema import Document, Evidence, GoldCode
from icdcoder.errors import InputError
from icdcoder.infer.fusion import aggregate
from icdcoder.infer.settings import CoderSettings
from icdcoder.infer.signals import NoteContext, NoteOutputs, ScoredCode, complete_phrases
from icdcoder.spans.phrases import PhraseCompleter
from icdcoder.spans.translate import WordTranslator

GLOSSARY = WordTranslator({"hierro": ["iron"], "deficiencia": ["deficiency"], "fallo": ["failure"], "agudo": ["acute"]})


def _span(text: str, found: tuple[int, int] | None) -> str | None:
    return None if found is None else text[found[0] : found[1]]


def test_a_phrase_is_narrowed_to_the_shortest_run_of_words_that_translates_all_of_it():
    text = "A los 18 años fue diagnosticado de anemia por deficiencia de hierro y reflujo gastroesofágico."
    assert _span(text, GLOSSARY.localize("iron deficiency anemia", text, 0, len(text))) == (
        "anemia por deficiencia de hierro"
    )
    # cognates need no glossary entry; a word the run lacks ("renal") leaves the sentence as it is
    assert _span(text, GLOSSARY.localize("gastroesophageal reflux", text, 0, len(text))) == "reflujo gastroesofágico"
    assert GLOSSARY.localize("acute renal failure", text, 0, len(text)) is None
    # only the sentence given is searched, and a phrase of stop words narrows to nothing
    assert GLOSSARY.localize("iron deficiency anemia", text, 0, 30) is None
    assert GLOSSARY.localize("of the", text, 0, len(text)) is None


def test_spanish_evidence_is_projected_onto_the_english_words_that_translate_it():
    english = "She was diagnosed with iron deficiency anemia and acute renal failure."
    assert _span(english, GLOSSARY.project("anemia por deficiencia de hierro", english, 0, len(english))) == (
        "iron deficiency anemia"
    )
    assert _span(english, GLOSSARY.project("fallo renal agudo", english, 0, len(english))) == "acute renal failure"
    assert GLOSSARY.project("fallo hepático", english, 0, len(english)) is None  # "hepático" has no English word here


def test_english_versions_learn_from_the_narrowed_evidence_where_the_glossary_finds_its_words():
    from icdcoder.data.align import align_document
    from icdcoder.data.codiesp import to_english
    from icdcoder.infer.coder import changed_references, with_narrowed_english
    from icdcoder.infer.signals import TrainingNotes

    text = "Ingresa por fallo renal agudo. Se realiza ecografía."
    lines = ["He is admitted for acute renal failure.", "An ultrasound is performed."]
    spanish = Document(
        id="n",
        text=text,
        language="es",
        codes=(
            GoldCode(code="N17.9", system="icd10cm", evidence=(Evidence(pieces=((12, 29),)),)),
            GoldCode(code="BW40ZZZ", system="icd10pcs", evidence=(Evidence(pieces=((34, 51),)),)),
        ),
    )
    english = to_english(spanish, align_document(text, lines))
    assert [e.text_in(english.text) for gold in english.codes for e in gold.evidence] == lines

    training = with_narrowed_english(TrainingNotes([spanish], [english], "es"), GLOSSARY)
    (narrowed,) = training.english
    assert narrowed.text == english.text and narrowed.id == "n"
    # "realiza" has no English word: that evidence keeps its whole line
    assert [e.text_in(narrowed.text) for gold in narrowed.codes for e in gold.evidence] == [
        "acute renal failure",
        lines[1],
    ]
    assert changed_references([english], [narrowed]) == "1/2"


def test_a_diagnosis_found_in_the_translation_gets_the_translated_words_as_evidence_a_procedure_its_sentence():
    text = "Ingresa por fallo renal agudo. Se realiza ecografía renal."
    translation = "Admitted for acute renal failure.\nA renal ultrasound is performed.\n"
    note = NoteContext(Document(id="n", text=text, language="es", translation=translation), [], GLOSSARY)
    diagnosis, procedure = note.on_english(
        lambda english: [
            ScoredCode("N17.9", "icd10cm", {"english": 0.9}, start=english.index("acute"), end=english.index(".")),
            ScoredCode(
                "BT40ZZZ", "icd10pcs", {"english": 0.9}, start=english.index("renal ultra"), end=len(english) - 2
            ),
        ]
    )
    assert diagnosis.projected and text[diagnosis.word_start : diagnosis.word_end] == "fallo renal agudo"
    assert procedure.projected and procedure.word_start == -1
    decided = aggregate(
        NoteOutputs("n", scored=[diagnosis, procedure]),
        CoderSettings(english_weight=1.0, threshold={"icd10cm": 0.1, "icd10pcs": 0.1}),
    )
    evidence = {
        c.code: ([e.text_in(text) for e in c.evidence], [e.text_in(text) for e in c.sentence_evidence])
        for c in decided.codes
    }
    assert evidence["N17.9"] == (["fallo renal agudo"], [])
    assert evidence["BT40ZZZ"] == ([], ["Se realiza ecografía renal."])


def _grown(phrases: PhraseCompleter, text: str, word: str, chars: int = 10) -> str | None:
    start = text.index(word)
    return _span(text, phrases.complete(text, start, start + len(word), chars))


def _note(text: str, *mentions: str) -> Document:
    codes = []
    for mention in mentions:
        start = text.index(mention)
        codes.append(
            GoldCode(code="R52", system="icd10cm", evidence=(Evidence(pieces=((start, start + len(mention)),)),))
        )
    return Document(id=str(len(text)), text=text, language="es", codes=tuple(codes))


def test_the_words_that_join_a_span_are_those_annotators_keep_with_a_mention_more_often_than_not():
    notes = [
        _note("Presenta sinovitis de cadera derecha.", "sinovitis de cadera derecha"),
        _note("Dolor en rodilla derecha desde ayer.", "Dolor en rodilla derecha"),
        _note("Trastorno psicótico agudo, presenta fiebre.", "Trastorno psicótico", "fiebre"),
        _note("Trastorno bipolar tratado.", "Trastorno bipolar"),
        _note("Refiere fiebre alta y presenta tos seca.", "fiebre alta", "tos seca"),
    ]
    phrases = PhraseCompleter.fit(notes)
    assert "derecha" in phrases.right and "trastorno" in phrases.left
    assert "presenta" not in phrases.left and "desde" not in phrases.right
    text = "Se observa trastorno psicótico con edema derecha desde hace, no fiebre alta."
    assert _grown(phrases, text, "psicótico") == "trastorno psicótico"  # the head word before the match
    assert _grown(phrases, text, "edema") == "edema derecha"  # stops before a word kept outside ("desde")
    assert _grown(phrases, text, "fiebre") == "fiebre"  # "alta" ended one reference only: too few to join
    assert phrases.complete(text, 0, 2, max_chars=0) == (0, 2)


def test_a_span_grows_only_within_its_clause_and_its_character_budget_and_never_ends_on_a_function_word():
    phrases = PhraseCompleter(right=frozenset({"derecha", "crónica"}), left=frozenset({"abuso", "no"}))
    text = "Insuficiencia renal crónica. Abuso de cocaína. Edema de la pierna derecha. No dolor."
    assert _grown(phrases, text, "Insuficiencia renal") == "Insuficiencia renal crónica"
    assert _grown(phrases, text, "crónica") == "crónica"  # the full stop ends the clause
    assert _grown(phrases, text, "cocaína") == "Abuso de cocaína"
    assert _grown(phrases, text, "Edema") == "Edema"  # "de la" would end it on function words, "pierna" does not join
    assert _grown(phrases, text, "pierna") == "pierna derecha" and _grown(phrases, text, "pierna", chars=5) == "pierna"
    assert (
        _grown(phrases, text, "dolor") == "dolor"
    )  # a negation cue stays outside, whatever the words say (its assertion reads it)


def test_the_coder_grows_its_spans_in_place_and_a_translated_item_s_words_not_its_sentence():
    text = "Ingresa por fallo renal agudo. Edema crónica."
    phrases = PhraseCompleter(right=frozenset({"crónica"}), left=frozenset({"ingresa"}))
    word = ScoredCode("R60.9", "icd10cm", {"lexicon": 1.0}, start=text.index("Edema"), end=text.index("Edema") + 5)
    translated = ScoredCode(
        "N17.9", "icd10cm", {"english": 1.0}, start=0, end=30, projected=True, word_start=12, word_end=29
    )
    complete_phrases([word, translated], text, phrases, max_chars=10)
    assert text[word.start : word.end] == "Edema crónica"
    assert (translated.start, translated.end, translated.word_start, translated.word_end) == (0, 30, 12, 29)


def test_glossary_and_phrase_words_round_trip_and_a_malformed_file_is_a_one_line_error(tmp_path):
    GLOSSARY.save(tmp_path / "glossary.json")
    assert WordTranslator.load(tmp_path / "glossary.json").glossary == GLOSSARY.glossary
    phrases = PhraseCompleter(right=frozenset({"derecha"}), left=frozenset({"abuso"}))
    phrases.save(tmp_path / "phrases.json")
    assert PhraseCompleter.load(tmp_path / "phrases.json") == phrases
    (tmp_path / "bad.json").write_text('{"right": 3}', encoding="utf-8")
    with pytest.raises(InputError, match="malformed phrase words"):
        PhraseCompleter.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(InputError, match="malformed glossary"):
        WordTranslator.load(tmp_path / "bad.json")
