"""The signal registry: settings, fusion, tuning grid and folder checks all derive from it; each signal keeps its files."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from icdcoder.data.schema import Document
from icdcoder.infer.coder import SpanPredictor
from icdcoder.infer.settings import CoderSettings, FusionOverride
from icdcoder.infer.signals import (
    SIGNAL_CLASSES,
    SIGNAL_FILES,
    SIGNAL_WEIGHTS,
    SIGNALS,
    SPECS,
    WEIGHT_GRID,
    NoteContext,
    ScoredCode,
    new_signals,
)
from icdcoder.infer.signals.retrieval import surface_span
from icdcoder.infer.store import outputs_from_json, outputs_to_json
from icdcoder.infer.tuning import GRID_WEIGHTS


def test_every_fused_value_has_one_weight_field_in_the_settings_and_the_language_override():
    assert len(set(SIGNALS)) == len(SIGNALS) == len(SPECS)
    assert len(set(SIGNAL_WEIGHTS.values())) == len(SPECS)
    defaults = CoderSettings()
    for spec in SPECS:
        assert getattr(defaults, spec.weight_field) == spec.default_weight
        assert defaults.weight(spec.name) == spec.default_weight
        assert spec.weight_field in FusionOverride.model_fields
    with pytest.raises(ValueError):
        CoderSettings(**{SPECS[0].weight_field: -1.0})


def test_the_tuning_grid_and_the_folder_check_come_from_the_specs():
    assert GRID_WEIGHTS == tuple(spec.weight_field for spec in SPECS if spec.grid)
    assert WEIGHT_GRID == {spec.name: list(spec.grid) for spec in SPECS if spec.grid}
    assert SIGNAL_FILES == {spec.weight_field: spec.file for spec in SPECS if spec.file}
    # the order is the evidence preference of the shipped coder: the LLM's quote first, then the lexicon's words
    assert SIGNALS[:3] == ("llm", "lexical", "retrieval")


def test_every_registered_signal_implements_the_protocol():
    for name, signal in new_signals().items():
        assert type(signal) is SIGNAL_CLASSES[name] and signal.specs
        for method in ("fit", "score", "save", "load"):
            assert callable(getattr(signal, method)), (name, method)


def test_an_unfitted_coder_saves_no_signal_file_and_removes_stale_ones(tmp_path):
    coder = SpanPredictor()
    (tmp_path / "concepts.json").write_text('{"N39.0": [1, 1]}', encoding="utf-8")
    (tmp_path / "lexicon").mkdir()
    coder.save_signals(tmp_path)
    assert list(tmp_path.iterdir()) == []
    coder.load_signals(tmp_path)
    assert coder.signals["lexicon"].index is None and coder.signals["concepts"].counts == {}


def test_items_found_in_a_translation_are_carried_to_the_sentence_they_translate():
    text = "Fiebre alta. Se toma biopsia rectal."
    note = NoteContext(
        Document(id="n", text=text, language="es", translation="High fever.\nA rectal biopsy is taken.\n"), []
    )
    english = note.english
    start = english.index("rectal biopsy")
    (item,) = note.on_english(
        lambda _: [ScoredCode("0DBP", "icd10pcs", {"procedure": 1.0}, start=start, end=start + 13)]
    )
    assert item.projected and text[item.start : item.end] == "Se toma biopsia rectal."
    english_note = NoteContext(Document(id="e", text="A rectal biopsy.", language="en"), [])
    (same,) = english_note.on_english(lambda _: [ScoredCode("0DBP", "icd10pcs", {"procedure": 1.0}, start=2, end=15)])
    assert not same.projected and (same.start, same.end) == (2, 15)


def test_a_training_form_is_evidence_only_as_whole_words_of_the_note():
    forms = ["febril", "fiebre alta"]
    retriever = SimpleNamespace(
        code_index={("R50.9", "icd10cm"): 0}, forms_by_code={0: forms}, display={form: form for form in forms}
    )
    note = "Ingresa afebril. Al día siguiente, fiebre alta."
    assert surface_span(retriever, "R50.9", "icd10cm", note) == (35, 46)
    assert surface_span(retriever, "R50.9", "icd10cm", "Ingresa afebril.") is None
    assert surface_span(retriever, "R07.9", "icd10cm", note) is None


def test_stage_one_cache_records_round_trip_and_old_flat_records_still_load():
    note = outputs_from_json([{"doc_id": "n", "scored": [], "dropped": {}, "segments": 1, "llm_segments": 0}])[0]
    note.scored.append(ScoredCode("I10", "icd10cm", {"retrieval": 0.5, "surface": 1.0}, start=0, end=3))
    assert outputs_from_json(outputs_to_json([note])) == [note]
    flat = {
        "code": "I10",
        "system": "icd10cm",
        "retrieval": 0.5,
        "surface": True,
        "llm": 0.0,
        "start": 0,
        "end": 3,
        "projected": False,
        "untrained": False,
    }
    old = outputs_from_json([{"doc_id": "n", "scored": [flat], "dropped": {}, "segments": 1, "llm_segments": 0}])
    assert old[0].scored == note.scored
