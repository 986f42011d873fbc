"""The coder's lexicon signals: additive fusion, per-language settings, the English lexicon read on a
note's translation (or on an English note), and lexicon files that round-trip or fail in one line."""

from __future__ import annotations

import pytest
from test_infer_support import make_codiesp

from icdcoder.data.schema import Document
from icdcoder.errors import InputError
from icdcoder.infer.coder import SpanPredictor
from icdcoder.infer.fusion import aggregate
from icdcoder.infer.settings import CoderSettings
from icdcoder.infer.signals import NoteOutputs, ScoredCode

NO_THRESHOLD = {"icd10cm": 0.0, "icd10pcs": 0.0}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_codiesp(tmp_path_factory.mktemp("codiesp"), english=True)


@pytest.fixture(scope="module")
def coder(corpus, ontology):
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.train.config import DataSettings
    from icdcoder.train.data import fit_coder_lexicons, fit_retriever, load_training_documents

    retriever = fit_retriever(load_codiesp(corpus, "train"), ontology)
    settings = CoderSettings(
        use_llm=False, retrieval_weight=0.0, ontology_weight=1.0, english_weight=1.0, threshold=NO_THRESHOLD
    )
    coder = SpanPredictor(settings).attach(None, None, retriever, ontology=ontology)
    data = DataSettings(data_dir=corpus)
    fit_coder_lexicons(coder, load_training_documents(data), data)
    return coder


def test_fusion_adds_the_signals_and_leads_with_lexicon_evidence():
    note = NoteOutputs(
        doc_id="n",
        scored=[
            ScoredCode("I10", "icd10cm", {"retrieval": 0.5}, start=0, end=4),
            ScoredCode("I10", "icd10cm", {"lexical": 0.9}, start=10, end=20),
            ScoredCode("R52", "icd10cm", {"retrieval": 1.0}, start=30, end=35),
        ],
    )
    settings = CoderSettings(llm_weight=0.0, retrieval_weight=1.0, lexical_weight=3.0, threshold=NO_THRESHOLD)
    codes = {c.code: c for c in aggregate(note, settings).codes}
    assert codes["I10"].score == pytest.approx((1.0 * 0.5 + 3.0 * 0.9) / 4.0)
    assert codes["R52"].score == pytest.approx(1.0 / 4.0)
    assert [(e.start, e.end) for e in codes["I10"].evidence] == [(10, 20), (0, 4)]  # every counted signal's span
    without_lexicon = settings.model_copy(update={"lexical_weight": 0.0})
    assert [(e.start, e.end) for e in aggregate(note, without_lexicon).codes[1].evidence] == [(0, 4)]


def test_evidence_lists_every_match_once_and_sentences_only_when_no_words_support_the_code():
    note = NoteOutputs(
        doc_id="n",
        scored=[
            ScoredCode("I10", "icd10cm", {"lexical": 0.9}, start=40, end=52),
            ScoredCode("I10", "icd10cm", {"lexical": 0.9}, start=0, end=12),
            ScoredCode("I10", "icd10cm", {"lexical": 0.9}, start=0, end=12),  # the same match twice
            ScoredCode("I10", "icd10cm", {"lexical": 0.9}, start=3, end=8),  # inside another match
            ScoredCode("I10", "icd10cm", {"english": 0.7}, start=0, end=60, projected=True),
            ScoredCode("R52", "icd10cm", {"english": 0.7}, start=0, end=60, projected=True),
            ScoredCode("R52", "icd10cm", {"english": 0.5}, start=61, end=90, projected=True),
        ],
    )
    settings = CoderSettings(retrieval_weight=0.0, lexical_weight=1.0, english_weight=1.0, threshold=NO_THRESHOLD)
    codes = {c.code: c for c in aggregate(note, settings).codes}
    assert [(e.start, e.end) for e in codes["I10"].evidence] == [(40, 52), (0, 12)]
    assert codes["I10"].sentence_evidence == []  # the note's words support it
    assert codes["R52"].evidence == []
    assert [(e.start, e.end) for e in codes["R52"].sentence_evidence] == [(0, 60), (61, 90)]


@pytest.mark.parametrize(
    ("signal", "scored", "other"),
    [("procedure", "0DBP", "I10"), ("concept", "I10", "0DBP"), ("quantity", "I10", "0DBP")],
)
def test_a_signal_of_one_system_weighs_only_that_systems_scores(signal, scored, other):
    system = {"0DBP": "icd10pcs", "I10": "icd10cm"}
    note = NoteOutputs(
        doc_id="n",
        scored=[
            ScoredCode(other, system[other], {"retrieval": 0.6}),
            ScoredCode(scored, system[scored], {"retrieval": 0.6, signal: 1.0}),
        ],
    )
    scores = {}
    for weight in (0.0, 1.0, 3.0):
        settings = CoderSettings(
            retrieval_weight=1.0, llm_weight=0.0, threshold=NO_THRESHOLD, **{f"{signal}_weight": weight}
        )
        scores[weight] = {c.code: c.score for c in aggregate(note, settings).codes}
    assert {found[other] for found in scores.values()} == {0.6}
    assert [found[scored] for found in scores.values()] == [0.6, pytest.approx(0.8), pytest.approx(0.9)]


def test_settings_are_tuned_per_language():
    settings = CoderSettings(language="es", english_weight=0.5)
    tuned = settings.with_tuned("en", {"english_weight": 2.0, "threshold": {"icd10cm": 0.1, "icd10pcs": 0.2}})
    assert tuned.english_weight == 0.5 and tuned.for_language("es") == tuned
    assert tuned.for_language("en").english_weight == 2.0
    assert tuned.for_language("en").threshold == {"icd10cm": 0.1, "icd10pcs": 0.2}
    assert tuned.with_tuned("es", {"english_weight": 3.0}).english_weight == 3.0


def test_english_lexicon_reads_the_translation_of_a_spanish_note(coder):
    spanish = "Paciente con fiebre alta."
    alone = coder.predict([Document(id="a", text=spanish, language="es")])[0]
    assert "R50.9" not in {c.code for c in alone.codes}
    translated = coder.predict([Document(id="b", text=spanish, language="es", translation="Patient with high fever.")])[
        0
    ]
    fever = [c for c in translated.codes if c.code == "R50.9"]
    assert fever and fever[0].evidence == []  # the words are in the translation, not in the note
    assert [e.text_in(spanish) for e in fever[0].sentence_evidence] == [spanish]  # ... the sentence it translates is


def test_english_lexicon_reads_an_english_note_with_evidence(coder):
    text = "Patient with high fever and arterial hypertension."
    prediction = coder.predict([Document(id="c", text=text, language="en")])[0]
    found = {c.code: c for c in prediction.codes}
    assert "R50.9" in found and [e.text_in(text) for e in found["R50.9"].evidence] == ["fever"]


def test_ontology_terms_and_trained_forms_are_separate_signals(coder):
    outputs = coder.segment_outputs(
        [Document(id="d", text="x", language="es", translation="Fever and arterial hypertension.")]
    )[0]
    by_code = {}
    for item in outputs.scored:
        by_code.setdefault(item.code, set()).update(
            name for name in ("english", "ontology") if item.signals.get(name, 0.0) > 0
        )
    assert "ontology" in by_code["R50.9"]  # fever never occurs in the training notes
    assert "english" in by_code["I10"]  # training notes confirm "arterial hypertension" -> I10


def test_saved_lexicons_round_trip_and_a_corrupt_one_fails_in_one_line(coder, tmp_path):
    coder.save(tmp_path / "coder")
    loaded = SpanPredictor.load(tmp_path / "coder")
    assert len(loaded.signals["lexicon"].index) == len(coder.signals["lexicon"].index) and len(
        loaded.signals["english_lexicon"].index
    ) == len(coder.signals["english_lexicon"].index)
    note = Document(
        id="e", text="Hipertensión arterial.", language="es", translation="Arterial hypertension and fever."
    )
    assert loaded.predict([note])[0] == coder.predict([note])[0]
    (tmp_path / "coder" / "lexicon_en" / "surface_forms.json.gz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match="unreadable lexicon") as caught:
        SpanPredictor.load(tmp_path / "coder")
    assert "\n" not in str(caught.value) and "surface_forms.json.gz" in str(caught.value)


def test_codiesp_loader_attaches_translations_only_when_asked(corpus):
    from icdcoder.data.codiesp import load_codiesp

    assert all(doc.translation == "" for doc in load_codiesp(corpus, "dev"))
    documents = load_codiesp(corpus, "dev", with_translation=True)
    assert documents[0].translation.startswith("58-year-old man") and all(doc.translation for doc in documents)


def test_retrieval_also_reads_the_translation_when_asked(coder):
    shared = coder.settings
    retrieval_only = coder.settings.model_copy(
        update={"retrieval_weight": 1.0, "english_weight": 0.0, "ontology_weight": 0.0}
    )
    note = Document(id="f", text="Paciente estable.", language="es", translation="Acute cystitis without hematuria.")
    best = {}
    for flag in (False, True):
        coder.settings = retrieval_only.model_copy(update={"retrieve_on_translation": flag})
        scores = [
            item.signals.get("retrieval", 0.0)
            for item in coder.segment_outputs([note])[0].scored
            if item.code == "N30.00"
        ]
        best[flag] = max(scores, default=0.0)
    coder.settings = shared
    assert best[True] > best[False]


def test_procedures_are_composed_on_the_english_text_with_the_spanish_sentence_as_evidence(coder):
    def composed(document):
        scored = coder.segment_outputs([document])[0].scored
        return [
            (item.code, item.start, item.end, item.projected)
            for item in scored
            if item.signals.get("procedure", 0.0) > 0
        ]

    text = "Fiebre. Se toma biopsia rectal."
    spanish = Document(id="g", text=text, language="es", translation="Fever.\nA biopsy of the rectum was taken.\n")
    ((code, start, end, projected),) = composed(spanish)
    assert code == coder.signals["procedures"].composer(coder).coded("0DBP")
    assert text[start:end] == "Se toma biopsia rectal." and projected  # the sentence the translation's words translate
    english = "Fever. A biopsy of the rectum was taken."
    ((code, start, end, projected),) = composed(Document(id="h", text=english, language="en"))
    assert code.startswith("0DBP") and english[start:end] == "A biopsy of the rectum was taken." and not projected
    assert composed(Document(id="i", text="Se toma biopsia rectal.", language="es")) == []


def test_concepts_are_matched_on_the_english_text_with_the_spanish_sentence_as_evidence(coder):
    def matched(document):
        scored = coder.segment_outputs([document])[0].scored
        return [
            (item.code, item.start, item.end, item.projected) for item in scored if item.signals.get("concept", 0.0) > 0
        ]

    text = "Carcinoma de ovario derecho."
    spanish = Document(id="j", text=text, language="es", translation="Carcinoma of the right ovary.")
    assert matched(spanish) == [("C56.1", 0, len(text), True)]
    english = "Fever. Carcinoma of the right ovary."
    assert matched(Document(id="k", text=english, language="en")) == [("C56.1", 7, len(english), False)]
    assert matched(Document(id="l", text="Carcinoma de ovario derecho.", language="es")) == []


def test_tuning_weighs_composed_procedures_only_when_the_notes_have_some():
    from icdcoder.data.schema import GoldCode
    from icdcoder.infer.tuning import tune_fusion

    dev = [
        Document(id=f"n{i}", text="nota", language="es", codes=(GoldCode(code="0DBP", system="icd10pcs"),))
        for i in range(3)
    ]
    outputs = [
        NoteOutputs(
            doc_id=d.id,
            scored=[
                ScoredCode("0DBP", "icd10pcs", {"procedure": 1.0}),
                ScoredCode("BW21", "icd10pcs", {"retrieval": 0.9}),
            ],
        )
        for d in dev
    ]
    result = tune_fusion(outputs, dev, CoderSettings())
    # the table keeps the best row with and without each signal the outputs carry (here procedures and retrieval)
    assert len(result["table"]) == 2 and {row["procedure_weight"] > 0 for row in result["table"]} == {False, True}
    assert result["best_settings"]["procedure_weight"] > 0 and max(row["P_f1"] for row in result["table"]) == 1.0
    without = [NoteOutputs(doc_id=o.doc_id, scored=o.scored[1:]) for o in outputs]
    assert {row["procedure_weight"] for row in tune_fusion(without, dev, CoderSettings())["table"]} == {0.0}


def test_concept_reliability_is_learned_on_the_english_training_notes(coder):
    infection = next(code for code in coder.signals["concepts"].counts if coder.coded_as(code, "icd10cm") == "N39.0")
    assert coder.signals["concepts"].counts[infection] == (
        2,
        2,
    )  # both notes with a urinary tract infection carry N39.0
    assert coder.signals["concepts"].reliability(infection) == pytest.approx(3 / 4)
    assert coder.signals["concepts"].reliability("C56.1") == 0.5  # never matched on a training note


def test_concept_counts_round_trip_and_malformed_ones_fail_in_one_line(coder, tmp_path):
    from icdcoder.infer.signals.concepts import CONCEPTS_FILE, load_concept_counts

    coder.save_signals(tmp_path)
    assert load_concept_counts(tmp_path / CONCEPTS_FILE) == coder.signals["concepts"].counts
    for malformed in ('{"N39": [1]}', '{"N39": [1, 2]}', "[1, 2]", "{"):
        (tmp_path / CONCEPTS_FILE).write_text(malformed, encoding="utf-8")
        with pytest.raises(InputError, match="malformed concept counts") as caught:
            load_concept_counts(tmp_path / CONCEPTS_FILE)
        assert CONCEPTS_FILE in str(caught.value) and "\n" not in str(caught.value)


def test_a_measured_value_names_a_code_no_training_note_carries(coder):
    assert ("E10.9", "icd10cm") not in coder.retriever.trained_codes
    document = Document(id="q", text="Mujer con diabetes mellitus tipo 1 desde la infancia.", language="es")
    found = {
        (item.code, document.text[item.start : item.end])
        for item in coder.segment_outputs([document])[0].scored
        if item.signals.get("quantity", 0.0) > 0
    }
    assert ("E10.9", "diabetes mellitus tipo 1") in found  # "tipo 2" named E11.9 in both training notes that write it
    assert {code for code, _ in found} == {"E10.9"}
    english = Document(id="q", text="Woman with type 1 diabetes mellitus since childhood.", language="en")
    assert {
        item.code for item in coder.segment_outputs([english])[0].scored if item.signals.get("quantity", 0.0) > 0
    } == {"E10.9"}


def test_value_templates_round_trip_and_malformed_ones_fail_in_one_line(coder, tmp_path):
    from icdcoder.infer.signals.quantities import QUANTITIES_FILE, load_quantity_templates

    coder.save_signals(tmp_path)
    loaded = load_quantity_templates(tmp_path / QUANTITIES_FILE)
    assert {language: t.to_json() for language, t in loaded.items()} == {
        language: t.to_json() for language, t in coder.signals["quantities"].templates.items()
    }
    for broken in ("[1, 2]", "{not json", '{"es": {"families": {}}}'):
        (tmp_path / QUANTITIES_FILE).write_text(broken, encoding="utf-8")
        with pytest.raises(InputError, match="malformed value templates") as caught:
            load_quantity_templates(tmp_path / QUANTITIES_FILE)
        assert QUANTITIES_FILE in str(caught.value) and "\n" not in str(caught.value)
