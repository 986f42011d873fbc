"""The tfidf and dictionary baselines on a tiny made-up corpus, plus one real-data check on CodiEsp dev."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from icdcoder.baselines.base import build_predictor, tune_threshold
from icdcoder.baselines.dictionary import DictionaryConfig, DictionaryPredictor
from icdcoder.baselines.tfidf import TfidfPredictor
from icdcoder.data.schema import Document, Evidence, GoldCode
from icdcoder.errors import InputError
from icdcoder.evaluate.metrics import micro_prf
from icdcoder.evaluate.thresholds import THRESHOLDS
from icdcoder.spans.lexicon import FormEntry, SurfaceFormIndex, tokenize
from icdcoder.text import normalize_word

# finding phrase -> (code, system); "dolor" is written in most notes but coded once only
FINDINGS = {
    "fiebre": ("R50.9", "icd10cm"),
    "tos seca": ("R05", "icd10cm"),
    "neumonía": ("J18.9", "icd10cm"),
    "radiografía de tórax": ("BW03ZZZ", "icd10pcs"),
}


def make_note(doc_id: str, findings: list[str], with_pain: bool, pain_coded: bool, split: str) -> Document:
    """A Spanish-like note mentioning ``findings``, gold codes with exact evidence offsets."""
    text = f"Paciente de {40 + len(doc_id)} años. "
    codes = []
    for phrase in findings:
        start = len(text) + len("Presenta ")
        text += f"Presenta {phrase} desde hace días. "
        code, system = FINDINGS[phrase]
        codes.append(GoldCode(code=code, system=system, evidence=(Evidence(pieces=((start, start + len(phrase)),)),)))
    if with_pain:
        start = len(text) + len("Refiere ")
        text += "Refiere dolor leve. "
        if pain_coded:
            codes.append(GoldCode(code="R52", system="icd10cm", evidence=(Evidence(pieces=((start, start + 5),)),)))
    text += "Sin otros antecedentes."
    return Document(id=doc_id, text=text, language="es", codes=tuple(codes), source="tiny", split=split)


def tiny_corpus(n_train: int = 12, n_dev: int = 6, seed: int = 7) -> tuple[list[Document], list[Document]]:
    """Deterministic train and dev notes; every finding occurs in train."""
    rng = random.Random(seed)
    phrases = list(FINDINGS)

    def notes(prefix: str, count: int, split: str) -> list[Document]:
        result = []
        for number in range(count):
            chosen = [phrases[number % len(phrases)]] + [p for p in phrases if rng.random() < 0.4]
            chosen = list(dict.fromkeys(chosen))
            result.append(make_note(f"{prefix}{number:02d}", chosen, number % 4 != 3, number == 0, split))
        return result

    return notes("tr", n_train, "train"), notes("dv", n_dev, "dev")


def write_codiesp_layout(root: Path, split: str, documents: list[Document]) -> None:
    """Write documents in the official CodiEsp layout (text_files/, <split>D/P/X.tsv)."""
    folder = root / split
    (folder / "text_files").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[str]] = {"D": [], "P": [], "X": []}
    for doc in documents:
        (folder / "text_files" / f"{doc.id}.txt").write_text(doc.text, encoding="utf-8")
        for gold in doc.codes:
            kind, label = ("D", "DIAGNOSTICO") if gold.system == "icd10cm" else ("P", "PROCEDIMIENTO")
            rows[kind].append(f"{doc.id}\t{gold.code.lower()}")
            for evidence in gold.evidence:
                ((start, end),) = evidence.pieces
                rows["X"].append(f"{doc.id}\t{label}\t{gold.code.lower()}\t{doc.text[start:end]}\t{start} {end}")
    for kind, lines in rows.items():
        (folder / f"{split}{kind}.tsv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture(scope="module")
def corpus() -> tuple[list[Document], list[Document]]:
    return tiny_corpus()


@pytest.fixture(scope="module")
def dictionary(corpus) -> DictionaryPredictor:
    train, dev = corpus
    predictor = DictionaryPredictor()
    predictor.fit(train, dev)
    return predictor


def _note(text: str) -> Document:
    return Document(id="new", text=text, language="es")


def test_normalization_is_case_and_accent_insensitive_and_keeps_offsets():
    assert normalize_word("Tórax") == "torax"
    assert normalize_word("EDEMAS", fold_plurals=True) == normalize_word("edema", fold_plurals=True)
    text = "Rx de TÓRAX, sin neumonía."
    tokens = tokenize(text)
    assert [t.norm for t in tokens] == ["rx", "de", "torax", "sin", "neumonia"]
    assert all(normalize_word(text[t.start : t.end]) == t.norm for t in tokens)


def test_dictionary_evidence_slices_the_surface_form(dictionary):
    text = "Ingresa con FIEBRE y se pide Radiografia de Torax urgente."
    prediction = dictionary.predict([_note(text)])[0]
    found = {p.code: p for p in prediction.codes}
    assert {"R50.9", "BW03ZZZ"} <= set(found)
    assert found["BW03ZZZ"].system == "icd10pcs"
    assert [e.text_in(text) for e in found["R50.9"].evidence] == ["FIEBRE"]
    assert [e.text_in(text) for e in found["BW03ZZZ"].evidence] == ["Radiografia de Torax"]
    scores = [p.score for p in prediction.codes]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)


def test_dictionary_matches_whole_words_only(dictionary):
    prediction = dictionary.predict([_note("Toma antifiebres y tosecas.")])[0]
    assert prediction.codes == []


def test_unreliable_surface_form_scores_lower(dictionary):
    """'dolor' is in most training notes but coded R52 once: it must not look as sure as 'fiebre'."""
    hits = {hit.code: hit for hit in dictionary.index.code_hits("Refiere dolor y fiebre.")}
    assert hits["R52"].score < 0.3 < hits["R50.9"].score
    prediction = dictionary.predict([_note("Refiere dolor.")])[0]
    assert "R52" not in {p.code for p in prediction.codes}
    # below its threshold it stays in the ranking, as a candidate without evidence
    assert [(c.code, c.evidence) for c in prediction.candidates] == [("R52", [])]
    assert [c.code for c in prediction.ranking()] == ["R52"]


def test_surface_index_counts_matches_and_hits(corpus):
    train, _ = corpus
    index = SurfaceFormIndex.build(train, config=DictionaryConfig(min_reliability=0.0))
    entry = index.entries[("dolor",)]
    assert entry.hits == {"icd10cm:R52": 1}
    assert entry.matched_docs == sum("dolor" in doc.text for doc in train)
    assert [m.form for m in index.scan("tos seca y tos")] == [("tos", "seca")]


@pytest.mark.parametrize(
    ("matching", "expected"), [("longest", [("tos", "seca")]), ("all", [("tos", "seca"), ("seca",)])]
)
def test_matching_modes_longest_and_nested(matching, expected):
    entries = {("tos", "seca"): FormEntry({"icd10cm:R05": 3}, 4), ("seca",): FormEntry({"icd10cm:R23.4": 1}, 5)}
    index = SurfaceFormIndex(DictionaryConfig(matching=matching), entries)
    assert [m.form for m in index.scan("Tos  seca.")] == expected


def test_dictionary_save_load_round_trip(dictionary, corpus, tmp_path):
    _, dev = corpus
    dictionary.save(tmp_path / "dict")
    meta = json.loads((tmp_path / "dict" / "meta.json").read_text(encoding="utf-8"))
    assert meta["system"] == "dictionary" and meta["fit_report"]["wall_seconds"] > 0
    loaded = DictionaryPredictor.load(tmp_path / "dict")
    assert loaded.thresholds == dictionary.thresholds
    assert loaded.predict(dev) == dictionary.predict(dev)


def test_dictionary_grows_its_evidence_to_the_phrase_when_asked_and_keeps_the_words_it_learned(corpus, tmp_path):
    # the training references "tos seca" end on "seca": a match of "tos" alone grows by it (not by "desde")
    train, _ = corpus
    note = _note("Presenta tos seca desde hace días.")
    plain = DictionaryPredictor(DictionaryConfig(threshold=0.0))
    plain.fit(train)
    grown = DictionaryPredictor(DictionaryConfig(threshold=0.0, phrase_context_chars=10))
    grown.fit(train)
    only_tos = SurfaceFormIndex(plain.index.config, {("tos",): FormEntry({"icd10cm:R05": 3}, 4)})
    grown.index = plain.index = only_tos
    quotes = [[e.text_in(note.text) for c in p.predict([note])[0].codes for e in c.evidence] for p in (plain, grown)]
    assert quotes == [["tos"], ["tos seca"]]
    grown.save(tmp_path / "grown")
    assert DictionaryPredictor.load(tmp_path / "grown").phrases == grown.phrases
    (tmp_path / "grown" / "phrases.json").unlink()
    with pytest.raises(InputError, match="no phrase words"):
        DictionaryPredictor.load(tmp_path / "grown")


def test_threshold_tuning_picks_the_lowest_best_grid_value():
    scored = [{"a": 0.9, "b": 0.4}, {"c": 0.7}]
    gold = [{"a"}, {"c"}]
    # every threshold in (0.4, 0.7] keeps exactly the gold codes: the lowest of them in the grid wins
    assert tune_threshold(scored, gold) == (0.425, 1.0)
    # a, b, c kept in (0.1, 0.3]: F1 0.8 beats keeping d too (0.67) and dropping c (0.67)
    assert tune_threshold([{"a": 0.9, "b": 0.4}, {"c": 0.3, "d": 0.1}], gold) == (0.125, pytest.approx(0.8))


def test_fit_tunes_thresholds_from_the_grid_and_reports_cost(dictionary):
    report = dictionary.fit_report
    assert report.wall_seconds > 0 and report.peak_rss_mb > 0 and report.train_tokens > 0
    for group in ("diagnosis", "procedure"):
        assert report.extra[f"{group}_threshold"] in THRESHOLDS
        assert dictionary.thresholds[group] == report.extra[f"{group}_threshold"]


def test_tfidf_codes_what_its_tuning_scored_even_at_threshold_zero(corpus):
    from icdcoder.baselines.tfidf import SCORE_FLOOR, TfidfConfig
    from icdcoder.ontology.labels import split_key

    train, dev = corpus
    predictor = TfidfPredictor(TfidfConfig(threshold=0.0))
    predictor.fit(train)
    tuned_scores = predictor.code_probabilities([doc.text for doc in dev])
    predicted = predictor.predict(dev)
    assert SCORE_FLOOR > 0
    for scores, prediction in zip(tuned_scores, predicted, strict=True):
        assert {(code.code, code.system) for code in prediction.codes} == {split_key(key) for key in scores}
        assert all(code.score >= SCORE_FLOOR for code in prediction.codes)


def test_top_scored_keeps_both_subtasks_rankings_of_labels_above_the_floor():
    import numpy as np

    from icdcoder.predictor import RANKING_DEPTH, top_scored

    labels = [(f"C{i:03d}", "icd10cm" if i % 2 else "icd10pcs") for i in range(3 * RANKING_DEPTH)]
    scores = 1.0 - np.arange(len(labels)) / len(labels)  # label 0 best
    scores[5] = scores[0]  # a tie: label order
    best = top_scored(scores, labels)
    assert [code for code, _, _ in best[:3]] == ["C000", "C005", "C001"] and len(best) == 2 * RANKING_DEPTH
    assert best[2] == ("C001", "icd10cm", float(scores[1]))
    above = [code for code, _, _ in top_scored(scores, labels, floor=float(scores[16]))]  # labels 0 to 16
    assert above == ["C000", "C005", *(f"C{i:03d}" for i in range(1, 17) if i != 5)]


def test_tfidf_fit_predict_save_load(corpus, tmp_path):
    train, dev = corpus
    predictor = TfidfPredictor()
    report = predictor.fit(train, dev)
    assert report.extra["codes"] == 5 and report.wall_seconds > 0 and report.peak_rss_mb > 0
    assert all(report.extra[f"{g}_threshold"] in THRESHOLDS for g in ("diagnosis", "procedure"))
    predictions = predictor.predict(dev)
    assert [p.doc_id for p in predictions] == [doc.id for doc in dev]
    known = {(g.code, g.system) for doc in train for g in doc.codes}
    gold = {doc.id: doc.code_set() for doc in dev}
    assert micro_prf(gold, {p.doc_id: [c.code for c in p.codes] for p in predictions})["micro_f1"] > 0.5
    for prediction, doc in zip(predictions, dev, strict=True):
        scores = [c.score for c in prediction.codes]
        assert scores == sorted(scores, reverse=True)
        for code in prediction.codes:
            assert (code.code, code.system) in known and 0.0 <= code.score <= 1.0
            for evidence in code.evidence:  # the top n-gram, found whole in the note
                words = evidence.text_in(doc.text).split()
                assert 1 <= len(words) <= 2 and evidence.text_in(doc.text) in doc.text
    predictor.save(tmp_path / "tfidf")
    assert TfidfPredictor.load(tmp_path / "tfidf").predict(dev) == predictions


def test_loading_another_systems_folder_is_a_one_line_error(dictionary, tmp_path):
    dictionary.save(tmp_path / "dict")
    with pytest.raises(InputError, match="meta.json.*expected 'tfidf'"):
        TfidfPredictor.load(tmp_path / "dict")
    with pytest.raises(InputError, match="file not found"):
        DictionaryPredictor.load(tmp_path / "missing")


def test_build_predictor_reads_and_checks_yaml(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("prior: 0.2\nmatching: longest\n", encoding="utf-8")
    bad.write_text("priors: 0.2\n", encoding="utf-8")
    predictor = build_predictor(DictionaryPredictor, good)
    assert isinstance(predictor, DictionaryPredictor) and predictor.config.prior == 0.2
    with pytest.raises(InputError, match="bad.yaml.*priors"):
        build_predictor(DictionaryPredictor, bad)


def test_train_baseline_command_trains_and_saves(corpus, tmp_path):
    import typer
    from typer.testing import CliRunner

    from icdcoder.baselines.cli import train_baseline

    train, dev = corpus
    write_codiesp_layout(tmp_path / "codiesp", "train", train)
    write_codiesp_layout(tmp_path / "codiesp", "dev", dev)
    app = typer.Typer()
    app.command()(train_baseline)
    out = tmp_path / "model"
    args = ["dictionary", "--data-dir", str(tmp_path / "codiesp"), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["system"] == "dictionary" and summary["fit_report"]["extra"]["surface_forms"] >= 5
    assert DictionaryPredictor.load(out).predict(dev)


def test_dictionary_on_codiesp_dev_reaches_reference_map(codiesp_dir):
    """Real data, ~10 s: the Spanish dictionary must reach D MAP >= 0.40 on dev (measured ~0.51)."""
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.evaluate.metrics import evaluate

    train = load_codiesp(codiesp_dir, "train")
    dev = load_codiesp(codiesp_dir, "dev")
    predictor = DictionaryPredictor()
    predictor.fit(train, dev)
    scores = evaluate(dev, predictor.predict(dev), systems={"icd10cm"})
    assert scores["map"] >= 0.40


class _FakeOntology:
    """The two ontology calls the dictionary uses, for one code."""

    def codes(self, system: str) -> list[str]:
        return ["R50.9"] if system == "icd10cm" else []

    def get(self, code: str, system: str):
        from types import SimpleNamespace

        return SimpleNamespace(description="Fever, unspecified", inclusion_terms=("Pyrexia (persistent)",))


def test_ontology_terms_are_surface_forms_for_english_notes():
    train = [Document(id="en1", text="Cough for two days.", language="en")]
    index = SurfaceFormIndex.build(train, ontology=_FakeOntology())
    assert {("fever", "unspecified"), ("fever",), ("pyrexia",)} <= set(index.entries)
    text = "High PYREXIA and fever."
    hits = index.code_hits(text)
    assert [(h.code, h.system) for h in hits] == [("R50.9", "icd10cm")]
    assert [e.text_in(text) for e in hits[0].evidence] == ["PYREXIA", "fever"]
    assert hits[0].score == pytest.approx(1 - (1 - 0.5) ** 2)  # two unseen forms at the prior, noisy-or


@pytest.mark.parametrize(
    ("term", "bare"),
    [
        ("Anemia, unspecified", "Anemia"),
        ("Disorder of nostril NOS", "Disorder of nostril"),
        ("Nostril disorder, not elsewhere classified", "Nostril disorder"),
        ("Fracture of rib (closed) [initial encounter]", "Fracture of rib"),
        ("Nonspecific abnormal finding", "Nonspecific abnormal finding"),
    ],
)
def test_bare_terms_lose_their_qualifiers_and_keep_words_that_only_contain_them(term, bare):
    from icdcoder.spans.lexicon import _bare

    assert _bare(term) == bare


def test_description_variants_drop_trailing_qualifiers():
    from icdcoder.spans.lexicon import description_variants

    assert description_variants("Undescended testicle, unspecified, bilateral") == {"Undescended testicle"}
    assert description_variants("Diverticulosis of large intestine without perforation or abscess") == {
        "Diverticulosis of large intestine"
    }
    assert description_variants("Iron deficiency") == set()


class _TwoCodeOntology(_FakeOntology):
    """Two codes whose shortened descriptions collide: the shorter description keeps the variant."""

    def codes(self, system: str):
        return ["Q53.9", "Q53.20"] if system == "icd10cm" else []

    def get(self, code: str, system: str):
        from types import SimpleNamespace

        names = {"Q53.9": "Undescended testicle, unspecified", "Q53.20": "Undescended testicle, unspecified, bilateral"}
        return SimpleNamespace(description=names[code], inclusion_terms=())


def test_a_shortened_description_goes_to_the_most_general_code():
    index = SurfaceFormIndex.build([Document(id="en1", text="Nothing.", language="en")], ontology=_TwoCodeOntology())
    assert set(index.entries[("undescended", "testicle")].hits) == {"icd10cm:Q53.9"}


def _english_note(doc_id: str, sentence: str, code: str) -> Document:
    """An English note whose evidence is the whole sentence (as projected CodiEsp evidence is)."""
    text = f"{sentence} The patient went home."
    evidence = (Evidence(pieces=((0, len(sentence)),)),)
    return Document(
        id=doc_id, text=text, language="en", codes=(GoldCode(code=code, system="icd10cm", evidence=evidence),)
    )


def test_evidence_phrases_keep_only_phrases_that_recur_with_their_code():
    train = [
        _english_note("a", "He was admitted with a bladder stone and pain.", "N21.0"),
        _english_note("b", "Imaging showed a bladder stone again.", "N21.0"),
        _english_note("c", "He was admitted with a cough.", "R05"),
    ]
    config = DictionaryConfig(ontology_terms="never", evidence_phrases=3, max_form_tokens=3)
    index = SurfaceFormIndex.build(train, config=config)
    assert "icd10cm:N21.0" in index.entries[("bladder", "stone")].hits  # in both N21.0 notes
    assert ("pain",) not in index.entries  # once only
    assert ("he", "was", "admitted") not in index.entries  # recurs, but with different codes
    hits = index.code_hits("Known bladder stone.")
    assert [h.code for h in hits] == ["N21.0"]


def test_trained_and_untrained_pairs_are_read_apart():
    train = [
        Document(
            id="en1",
            text="Fever since Monday.",
            language="en",
            codes=(GoldCode(code="R50.9", system="icd10cm", evidence=()),),
        )
    ]
    index = SurfaceFormIndex.build(train, ontology=_FakeOntology())
    text = "Fever and pyrexia."
    assert [e.text_in(text) for e in index.code_hits(text, trained=True)[0].evidence] == ["Fever"]
    assert [e.text_in(text) for e in index.code_hits(text, trained=False)[0].evidence] == ["pyrexia"]
    assert len(index.code_hits(text)[0].evidence) == 2
