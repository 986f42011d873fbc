"""SFT example building: the expansion's share of the span examples."""

from __future__ import annotations

from collections import Counter

from icdcoder.data.schema import Document, Evidence, GoldCode
from icdcoder.train.config import DataSettings
from icdcoder.train.data import build_examples


def _doc(doc_id: str, text: str, code: str, phrase: str) -> Document:
    start = text.index(phrase)
    gold = GoldCode(code=code, system="icd10cm", evidence=(Evidence(pieces=((start, start + len(phrase)),)),))
    return Document(id=doc_id, text=text, language="es", codes=(gold,))


DOCS = [
    _doc(f"d{i}", f"Paciente {i} con estreñimiento crónico. Control en un mes.", "K59.09", "estreñimiento crónico")
    for i in range(6)
]


def _sources(settings: DataSettings, ontology) -> Counter:
    return Counter(e.provenance.split(":")[0] for e in build_examples(DOCS, settings, ontology, seed=3))


def test_expansion_share_caps_the_ontology_examples_among_the_spans(ontology):
    base = {
        "span_max_words": 12,
        "negative_ratio": 0.0,
        "candidates_k": 0,
        "expansion": True,
        "expansion_label_space": "all",
        "expansion_per_code_cap": 2,
    }
    everything = _sources(DataSettings(**base), ontology)
    assert everything["expansion"] > 3 * everything["span"]  # the whole label space swamps six spans
    shared = _sources(DataSettings(**base, expansion_share=0.25), ontology)
    assert shared["span"] == everything["span"] and shared["expansion"] == round(0.25 * shared["span"] / 0.75)


def test_every_sft_config_validates_and_keeps_its_base_data_settings():
    from pathlib import Path

    from icdcoder.config import load_config
    from icdcoder.train.config import SftConfig

    configs = sorted((Path(__file__).resolve().parent.parent / "configs" / "sft").glob("*.yaml"))
    loaded = {path.stem: load_config(path, SftConfig) for path in configs}
    assert "base" in loaded and len(loaded) > 5
    own = loaded["own_notes_silver"].data
    assert own.silver_evidence and own.lang == "en" and own.span_max_words == loaded["base"].data.span_max_words
