"""Candidate retrieval: surface forms, unseen codes via descriptions, leakage control, persistence."""

from __future__ import annotations

import pytest

from icdcoder.data.schema import Document, Evidence, GoldCode
from icdcoder.errors import InputError
from icdcoder.prompt import Candidate
from icdcoder.spans.examples import SpanExample, attach_candidates
from icdcoder.spans.retrieval import CandidateRetriever, RetrieverConfig
from icdcoder.spans.translate import WordTranslator

LABELS = [
    ("I51.9", "icd10cm"),
    ("N44", "icd10cm"),
    ("N44.0", "icd10cm"),
    ("N44.8", "icd10cm"),
    ("J18.9", "icd10cm"),
    ("R52", "icd10cm"),
    ("E11.9", "icd10cm"),
    ("K35.80", "icd10cm"),
    ("BW03ZZZ", "icd10pcs"),
]


def _doc(doc_id: str, text: str, *codes: tuple[str, str, str]) -> Document:
    gold = []
    for code, system, phrase in codes:
        start = text.index(phrase)
        gold.append(GoldCode(code=code, system=system, evidence=(Evidence(pieces=((start, start + len(phrase)),)),)))
    return Document(id=doc_id, text=text, language="es", codes=tuple(gold))


TRAIN = [
    _doc(
        "a",
        "Refiere una ñapa cardíaca desde hace años y dolor.",
        ("I51.9", "icd10cm", "ñapa cardíaca"),
        ("R52", "icd10cm", "dolor"),
    ),
    _doc(
        "b", "Se observa teste derecho aumentado de tamaño.", ("N44.8", "icd10cm", "teste derecho aumentado de tamaño")
    ),
    _doc(
        "c", "Se realiza Rx tórax urgente con dolor.", ("BW03ZZZ", "icd10pcs", "Rx tórax"), ("R52", "icd10cm", "dolor")
    ),
    _doc("d", "Neumonía basal izquierda tratada.", ("J18.9", "icd10cm", "Neumonía basal izquierda")),
    _doc("e", "Nueva neumonía basal izquierda.", ("J18.9", "icd10cm", "neumonía basal izquierda")),
]


@pytest.fixture(scope="module")
def retriever(ontology) -> CandidateRetriever:
    return CandidateRetriever(RetrieverConfig(depth=20)).fit(TRAIN, ontology, label_space=LABELS)


def _codes(found) -> list[str]:
    return [candidate.code for candidate in found]


def test_made_up_surface_form_is_found_accent_and_case_insensitively(retriever):
    found = retriever.retrieve("Paciente con ÑAPA CARDIACA severa", k=3)
    assert found[0].code == "I51.9" and found[0].system == "icd10cm"
    assert "surface" in found[0].source
    assert found[0].description == "ñapa cardíaca"  # the training surface form is the short description
    assert retriever.surface_hits("una ñapa cardíaca y dolor") == ["ñapa cardiaca", "dolor"]


def test_longest_surface_form_wins(retriever):
    assert retriever.surface_hits("neumonía basal izquierda") == ["neumonia basal izquierda"]


def test_unseen_code_is_reached_through_its_ontology_description(retriever):
    found = retriever.retrieve("torsion of testis", k=3)
    assert "N44.0" in _codes(found)
    torsion = next(c for c in found if c.code == "N44.0")
    assert torsion.source.split("+")[0] == "tfidf"
    assert torsion.description == "Torsion of testis"
    assert len(torsion.description.split()) <= 8


def test_exclude_doc_id_removes_that_documents_own_surface_forms(retriever):
    query = "Refiere ñapa cardíaca"
    assert retriever.retrieve(query, k=8)[0].code == "I51.9"
    leak_free = retriever.retrieve(query, k=8, exclude_doc_id="a")
    assert leak_free[0].code != "I51.9"
    assert all("ñapa" not in c.description.lower() and "surface" not in c.source for c in leak_free)
    assert retriever.surface_hits(query, exclude_doc_id="a") == []
    # a form another document also used stays available, with that document's count only
    assert retriever.surface_hits("neumonía basal izquierda", exclude_doc_id="d") == ["neumonia basal izquierda"]
    assert retriever.retrieve("neumonía basal izquierda", exclude_doc_id="d")[0].code == "J18.9"


def test_retrieve_many_matches_retrieve_and_converts_to_candidates(retriever):
    texts = ["Rx tórax normal", "dolor abdominal", "teste derecho aumentado de tamaño"]
    many = retriever.retrieve_many(texts, k=4, exclude_doc_ids=["a", None, "b"])
    assert many == [retriever.retrieve(t, k=4, exclude_doc_id=d) for t, d in zip(texts, ["a", None, "b"])]
    assert many[0][0].code == "BW03ZZZ"
    candidates = many[0].as_candidates()
    assert all(isinstance(c, Candidate) and len(c.description.split()) <= 8 for c in candidates)
    with pytest.raises(InputError):
        retriever.retrieve_many(texts, exclude_doc_ids=["a"])


def test_save_load_round_trip_gives_identical_results(retriever, tmp_path):
    retriever.save(tmp_path / "ret")
    loaded = CandidateRetriever.load(tmp_path / "ret")
    texts = ["ñapa cardíaca con dolor", "torsion of testis", "Rx tórax"]
    assert loaded.retrieve_many(texts, k=5) == retriever.retrieve_many(texts, k=5)
    assert loaded.retrieve("ñapa cardíaca", exclude_doc_id="a") == retriever.retrieve(
        "ñapa cardíaca", exclude_doc_id="a"
    )
    assert sum(f.stat().st_size for f in (tmp_path / "ret").iterdir()) < 1_000_000
    with pytest.raises(InputError, match="not found"):
        CandidateRetriever.load(tmp_path / "missing")


def test_unfitted_retriever_refuses_to_retrieve():
    with pytest.raises(InputError, match="not fitted"):
        CandidateRetriever().retrieve("dolor")


def test_attach_candidates_is_leak_free_by_default(retriever):
    example = SpanExample("Refiere una ñapa cardíaca", (("I51.9", "icd10cm", "ñapa cardíaca"),), "a", 0, 25, "span")
    [leak_free] = attach_candidates([example], retriever, k=5)
    [leaky] = attach_candidates([example], retriever, k=5, leak_free=False)
    assert leaky.candidates[0] == Candidate("I51.9", "ñapa cardíaca")
    assert all("ñapa" not in candidate.description for candidate in leak_free.candidates)
    assert leak_free.text == example.text and leak_free.targets == example.targets


def test_hierarchy_neighbours_of_the_best_code_join_the_list(ontology):
    plain = CandidateRetriever(RetrieverConfig(family_weight=0, tfidf_weight=0)).fit(
        TRAIN, ontology, label_space=LABELS
    )
    family = CandidateRetriever(RetrieverConfig(family_weight=0.5, tfidf_weight=0)).fit(
        TRAIN, ontology, label_space=LABELS
    )
    query = "teste derecho aumentado de tamaño"
    assert _codes(plain.retrieve(query)) == ["N44.8"]
    found = family.retrieve(query)
    assert found[0].code == "N44.8"
    assert {"N44", "N44.0"} <= set(_codes(found))
    assert next(c for c in found if c.code == "N44.0").source == "family"


PAIRS = [
    ("Dolor en el riñón derecho.", "Pain in the right kidney."),
    ("Quiste en el riñón.", "Cyst in the kidney."),
    ("El riñón izquierdo es normal.", "The left kidney is normal."),
    ("Torsión del testículo.", "Torsion of the testis."),
    ("Un quiste simple.", "A simple cyst."),
    ("Dolor de testículo.", "Testis pain."),
]


def test_glossary_from_parallel_sentences_reaches_english_titles(ontology):
    translator = WordTranslator().fit(PAIRS, min_count=2, min_dice=0.5, per_word=1)
    assert translator.glossary["riñon"] == ["kidney"] and translator.glossary["testiculo"] == ["testis"]
    assert translator.translate("Riñón y TESTÍCULO raros") == "kidney y testis raros"
    labels = LABELS + [("N28.1", "icd10cm")]  # Cyst of kidney, acquired: never seen in TRAIN
    settings = RetrieverConfig(family_weight=0)
    without = CandidateRetriever(settings).fit(TRAIN, ontology, label_space=labels)
    with_glossary = CandidateRetriever(settings).fit(TRAIN, ontology, label_space=labels, translator=translator)
    query = "quiste en riñón"
    assert "N28.1" not in _codes(without.retrieve(query, k=2))
    found = with_glossary.retrieve(query, k=2)
    assert found[0].code == "N28.1" and "translated" in found[0].source


def test_embedding_source_is_cached_and_saved(ontology, tmp_path):
    settings = RetrieverConfig(embedding_cache_dir=str(tmp_path / "cache"), family_weight=0, tfidf_weight=0)
    retriever = CandidateRetriever(settings).fit(TRAIN, ontology, label_space=LABELS, use_embeddings=True)
    [cache_file] = (tmp_path / "cache").iterdir()
    stamp = cache_file.stat().st_mtime_ns
    CandidateRetriever(settings).fit(TRAIN, ontology, label_space=LABELS, use_embeddings=True)
    assert cache_file.stat().st_mtime_ns == stamp  # the second fit read the cache
    found = retriever.retrieve("infection of the lungs", k=3)
    assert "J18.9" in _codes(found)
    assert "embedding" in next(c for c in found if c.code == "J18.9").source
    retriever.save(tmp_path / "ret")
    loaded = CandidateRetriever.load(tmp_path / "ret")
    assert loaded.retrieve("infection of the lungs", k=3) == found


def test_embeddings_are_cached_in_the_project_cache_by_default(ontology, tmp_path, monkeypatch):
    monkeypatch.setenv("ICDCODER_CACHE", str(tmp_path))
    CandidateRetriever(RetrieverConfig(family_weight=0, tfidf_weight=0)).fit(
        TRAIN, ontology, label_space=LABELS, use_embeddings=True
    )
    assert [path.name.startswith("codes-") for path in (tmp_path / "embeddings").iterdir()] == [True]


def test_parallel_sentences_and_codiesp_builder_on_a_tiny_layout(ontology, tmp_path):
    from icdcoder.spans.retrieval import build_codiesp_retriever
    from icdcoder.spans.translate import parallel_sentences

    (tmp_path / "train" / "text_files").mkdir(parents=True)
    (tmp_path / "train" / "text_files_en").mkdir(parents=True)
    for number, (spanish, english) in enumerate(PAIRS):
        (tmp_path / "train" / "text_files" / f"d{number}.txt").write_text(f"{spanish} Sin fiebre.", encoding="utf-8")
        (tmp_path / "train" / "text_files_en" / f"d{number}.txt").write_text(
            f"{english}\nNo fever.\n", encoding="utf-8"
        )
    pairs = parallel_sentences(tmp_path, "train")
    assert (PAIRS[0][0], PAIRS[0][1]) in pairs and ("Sin fiebre.", "No fever.") in pairs
    retriever = build_codiesp_retriever(tmp_path, ontology, TRAIN)
    assert retriever.translator is not None and "fever" in retriever.translator.glossary["fiebre"]
    assert ("N44.0", "icd10cm") in retriever.codes  # the default label space reaches unseen neighbours
    with pytest.raises(InputError, match="text_files"):
        parallel_sentences(tmp_path, "dev")


def test_document_truncation_counts_leak_free_retrieval_hits(retriever):
    from icdcoder.spans.examples import build_document_examples

    filler = " ".join(f"Comentario número {i} del caso." for i in range(20))
    text = f"{filler} Refiere una ñapa cardíaca. Otra frase sin interés."
    start = text.index("ñapa cardíaca")
    gold = GoldCode(code="I51.9", system="icd10cm", evidence=(Evidence(pieces=((start, start + 13),)),))
    document = Document(id="new", text=text, language="es", codes=(gold,))
    [kept] = build_document_examples([document], max_words=8, retriever=retriever)
    assert "ñapa cardíaca" in kept.text and kept.codes == ("I51.9",)
    # the same note under the id of the only training document using that wording: no hit, no help
    [blind] = build_document_examples([document.model_copy(update={"id": "a"})], max_words=8, retriever=retriever)
    assert "ñapa" not in blind.text and blind.codes == ()


def test_text_normalization_and_short_titles():
    from icdcoder.spans.text import short_title
    from icdcoder.text import normalize_text

    assert normalize_text("Hace un AÑO: diagnóstico, Ñapa-cardíaca") == "hace un año diagnostico ñapa cardiaca"
    long_title = "Malignant neoplasm of unspecified part of unspecified bronchus or lung"
    assert short_title(long_title, 8) == "Malignant neoplasm of part of bronchus or lung"
    assert short_title("Hypertension (arterial) (benign) essential primary systemic malignant form of heart", 8) == (
        "Hypertension essential primary systemic malignant form of heart"
    )
    assert short_title("Torsion of testis", 8) == "Torsion of testis"
    assert len(short_title(" ".join(["word"] * 20), 8).split()) == 8


def test_best_codes_under_ties_equal_the_full_ranking():
    """The pooled shortcut breaks ties by row order, as ranking every row does (a CPU's partition routine orders
    equal values its own way, which made the shipped coder's dev scores differ between machines)."""
    import numpy as np

    retriever = CandidateRetriever(RetrieverConfig(depth=3))
    retriever.row_codes = np.arange(300)
    rng = np.random.default_rng(0)
    for _ in range(20):
        values = rng.choice(np.array([1.0, 0.9, 0.8], dtype=np.float32), size=300)
        rows = rng.permutation(300)
        assert retriever._best_codes(rows, values) == retriever._ranked_codes(rows, values)[:3]
