"""Fusion by gradient-boosted trees: the saved node arrays give scikit-learn's probabilities, a bad trees file is a
one-line error, and ``predict fit-trees`` fits, saves and tunes trees that the loaded coder then codes with."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from benchmark_scripts import load_benchmark
from test_infer_support import NOTES, write_split

from icdcoder.errors import InputError
from icdcoder.infer.trees import (
    FEATURES,
    NO_COUNTS,
    TREES_FILE,
    TrainingCounts,
    TreeEnsemble,
    TreeFusion,
    candidate_features,
)


def fitted_sklearn(rows: int = 600, seed: int = 0):
    from sklearn.ensemble import HistGradientBoostingClassifier

    from icdcoder.train.fusion_trees import TREE_PARAMETERS

    rng = np.random.default_rng(seed)
    features = rng.random((rows, len(FEATURES)))
    features[:, 3] = rng.integers(0, 2, rows)  # a 0/1 feature: its values sit on the bin edges
    labels = features[:, 0] + 0.5 * features[:, 3] + 0.3 * rng.random(rows) > 0.9
    model = HistGradientBoostingClassifier(**{**TREE_PARAMETERS, "max_iter": 30}).fit(features, labels)
    return model, rng.random((200, len(FEATURES)))


def test_saved_trees_give_scikit_learns_probabilities(tmp_path):
    model, rows = fitted_sklearn()
    rows[:50, 3] = np.round(rows[:50, 3])
    ensemble = TreeEnsemble.from_sklearn(model, {"lexical": 1.0})
    expected = model.predict_proba(rows)[:, 1]
    assert np.allclose(ensemble.probabilities(rows), expected, atol=1e-12)
    TreeFusion({"icd10cm": ensemble}, NO_COUNTS).save(tmp_path)
    loaded = TreeFusion.load(tmp_path, NO_COUNTS)
    assert np.allclose(loaded.systems["icd10cm"].probabilities(rows), expected, atol=1e-12)
    assert loaded.systems["icd10cm"].fused_weights["lexical"] == 1.0


def test_a_malformed_or_foreign_trees_file_is_a_one_line_error(tmp_path):
    model, _ = fitted_sklearn(rows=100)
    TreeFusion({"icd10cm": TreeEnsemble.from_sklearn(model, {})}, NO_COUNTS).save(tmp_path)
    path = tmp_path / TREES_FILE
    record = json.loads(path.read_text())

    record["features"] = record["features"][:-1]
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match="refit them") as found:
        TreeFusion.load(tmp_path, NO_COUNTS)
    assert TREES_FILE in str(found.value) and "\n" not in str(found.value)

    record["features"] = list(FEATURES)
    tree = record["systems"]["icd10cm"]["trees"][0]
    tree["left"][0] = 0  # a loop: evaluation would never end
    path.write_text(json.dumps(record))
    with pytest.raises(InputError, match="malformed fusion trees"):
        TreeFusion.load(tmp_path, NO_COUNTS)

    path.write_text("{not json")
    with pytest.raises(InputError, match="malformed fusion trees"):
        TreeFusion.load(tmp_path, NO_COUNTS)


@pytest.mark.parametrize("seed", range(3))
def test_the_tree_table_ranks_codes_as_aggregation_does(seed):
    import random

    from test_infer_tuning import random_outputs

    from icdcoder.infer.fusion import aggregate
    from icdcoder.infer.settings import CoderSettings
    from icdcoder.infer.tuning import TreeTable

    model, _ = fitted_sklearn(seed=seed)
    trees = TreeFusion(
        {system: TreeEnsemble.from_sklearn(model, {"lexical": 1.0}) for system in ("icd10cm", "icd10pcs")}, NO_COUNTS
    )
    outputs, _ = random_outputs(random.Random(seed), notes=6)
    table = TreeTable(outputs, trees)
    for depth in (3, 40):
        settings = CoderSettings(
            fusion="trees", max_codes_per_system=depth, threshold={"icd10cm": 0.5, "icd10pcs": 0.5}
        )
        predictions = [aggregate(note, settings, trees=trees) for note in outputs]
        for system in ("icd10cm", "icd10pcs"):
            expected = {p.doc_id: [(c.score, c.code) for c in p.ranking({system})] for p in predictions}
            assert table.rankings(settings, system) == expected


def test_codes_read_in_the_same_words_are_each_others_rivals():
    from icdcoder.infer.fusion import CodeSignals
    from icdcoder.infer.signals import SIGNALS

    def found_at(start: int, end: int, lexical: float) -> CodeSignals:
        return CodeSignals(best={"lexical": lexical}, spans={"lexical": [(start, end)]})

    found = {
        ("N28.89", "icd10cm"): found_at(10, 23, 0.4),  # "renal derecha" inside "ecografía renal derecha"
        ("N28.1", "icd10cm"): found_at(0, 23, 0.9),
        ("BT41ZZZ", "icd10pcs"): found_at(0, 23, 0.8),
        ("R51", "icd10cm"): found_at(40, 47, 0.7),  # words of its own
    }
    weights = {name: float(name == "lexical") for name in SIGNALS}
    rows, codes = candidate_features(found, "icd10cm", weights, NO_COUNTS)
    column = {name: rows[:, FEATURES.index(name)] for name in ("span_rivals", "span_gap", "other_system_rival")}
    by_code = {code: {name: values[i] for name, values in column.items()} for i, code in enumerate(codes)}
    assert by_code["N28.89"]["span_rivals"] == pytest.approx(np.log1p(1))
    assert by_code["N28.89"]["span_gap"] == pytest.approx(0.5)
    assert by_code["N28.1"]["span_gap"] == pytest.approx(-0.5)  # it leads its rival
    assert by_code["N28.89"]["other_system_rival"] == pytest.approx(0.8)
    assert by_code["R51"] == {"span_rivals": 0.0, "span_gap": 0.0, "other_system_rival": 0.0}
    assert rows[codes.index("R51"), FEATURES.index("span_length")] == pytest.approx(np.log1p(7))


def test_a_code_the_training_notes_carry_with_a_leading_candidate_reads_that_share():
    from icdcoder.infer.fusion import CodeSignals
    from icdcoder.infer.signals import SIGNALS
    from icdcoder.spans.retrieval import pair_counts

    diabetes, insulin, headache = ("E11.9", "icd10cm"), ("Z79.4", "icd10cm"), ("R51", "icd10cm")
    training = [{diabetes, insulin}, {diabetes, insulin}, {diabetes}, {headache}]
    counts = TrainingCounts({diabetes: 3, insulin: 2, headache: 1}, pair_counts(training))
    assert counts.pairs[(insulin, diabetes)] == counts.pairs[(diabetes, insulin)] == 2
    found = {
        key: CodeSignals(best={"lexical": value}) for key, value in [(diabetes, 0.9), (insulin, 0.2), (headache, 0.5)]
    }
    weights = {name: float(name == "lexical") for name in SIGNALS}
    rows, codes = candidate_features(found, "icd10cm", weights, counts)
    share = dict(zip(codes, rows[:, FEATURES.index("cooccurrence")]))
    assert share[insulin[0]] == pytest.approx(2 / 4)  # 2 of diabetes's 3 notes, add-one smoothed
    assert share[diabetes[0]] == pytest.approx(2 / 3)
    assert share[headache[0]] == 0.0


def test_fusion_by_trees_without_trees_is_a_clear_error():
    from icdcoder.infer.fusion import aggregate
    from icdcoder.infer.settings import CoderSettings
    from icdcoder.infer.signals import NoteOutputs, ScoredCode

    note = NoteOutputs(doc_id="n", scored=[ScoredCode("I10", "icd10cm", {"lexical": 1.0})])
    with pytest.raises(InputError, match="no fusion trees"):
        aggregate(note, CoderSettings(fusion="trees"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Fifteen notes (the made-up four and one that mentions an X-ray not done, three times over): every fold sees
    each code elsewhere, and each system has right and wrong candidates."""
    root = tmp_path_factory.mktemp("codiesp")
    undone = (
        "S0005-1",
        "Hipertensión arterial. No se realiza radiografía de tórax.",
        [("i10", "D", "Hipertensión arterial")],
    )
    notes = [(f"S{copy}{doc_id[1:]}", text, codes) for copy in range(3) for doc_id, text, codes in [*NOTES, undone]]
    for split in ("train", "dev"):
        write_split(root, split, notes)
    return root


@pytest.fixture(scope="module")
def coder_dir(tmp_path_factory, corpus, ontology):
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.settings import CoderSettings
    from icdcoder.train.config import DataSettings
    from icdcoder.train.data import fit_coder_lexicons, fit_retriever

    train = load_codiesp(corpus, "train")
    english = {"en": {"threshold": {"icd10cm": 0.4, "icd10pcs": 0.4}}}  # as tuned on English notes
    coder = SpanPredictor(CoderSettings(use_llm=False, threads=1, by_language=english)).attach(
        None, None, fit_retriever(train, ontology), ontology=ontology
    )
    fit_coder_lexicons(coder, train, DataSettings(data_dir=corpus))
    folder = tmp_path_factory.mktemp("coder")
    coder.save(folder)
    return folder


def test_fit_trees_saves_trees_the_coder_then_fuses_by(tmp_path, corpus, coder_dir):
    from typer.testing import CliRunner

    from icdcoder.cli import app
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.infer.coder import SpanPredictor

    cache = tmp_path / "candidates.jsonl"
    arguments = ["predict", "fit-trees", "--model", str(coder_dir), "--data-dir", str(corpus), "--folds", "3"]
    done = CliRunner().invoke(app, [*arguments, "--cache", str(cache)], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["best_settings"]["fusion"] == "trees" and summary["documents"] == 15
    assert len(cache.read_text().splitlines()) == 15  # every training note's out-of-fold candidates, once
    record = json.loads((coder_dir / "coder.json").read_text())
    assert record["settings"]["fusion"] == "trees" and "tuning_trees" in record
    english = record["settings"]["by_language"]["en"]  # English notes keep their weighted mean and thresholds
    assert english["fusion"] == "mean" and english["threshold"] == {"icd10cm": 0.4, "icd10pcs": 0.4}
    assert (coder_dir / TREES_FILE).is_file()

    coder = SpanPredictor.load(coder_dir)
    assert set(coder.trees) == {"es"}
    notes = load_codiesp(corpus, "dev")
    predictions = coder.predict(notes)
    gold = sum(len(note.code_set("icd10cm")) for note in notes)
    found = sum(len({c.code for c in p.codes} & note.code_set("icd10cm")) for p, note in zip(predictions, notes))
    assert found >= gold // 2  # the trees keep most of the diagnoses every other note carries
    assert all(0 < c.score < 1 for p in predictions for c in p.codes)

    # a coder fitted on some training notes fuses with these trees, reading its own notes' counts (the verifier's
    # cross-fitted candidates are its predictions)
    from icdcoder.train.config import DataSettings
    from icdcoder.train.fusion_trees import fold_coder

    training = load_codiesp(corpus, "train")
    held = fold_coder(coder, training[:10], DataSettings(data_dir=corpus))
    assert set(held.trees) == {"es"} and held.trees["es"].systems is coder.trees["es"].systems
    assert held.trees["es"].counts.notes == held.fitted_retriever.trained_note_counts != coder.trees["es"].counts.notes
    assert any(p.codes for p in held.predict(training[10:]))

    # a rerun reads the cache instead of coding the training notes again, and fits the same trees
    before = (coder_dir / TREES_FILE).read_text()
    done = CliRunner().invoke(app, [*arguments, "--cache", str(cache)], catch_exceptions=False)
    assert done.exit_code == 0 and (coder_dir / TREES_FILE).read_text() == before

    # predict tune re-tunes the trees' thresholds and leaves the weights and the mean's grid record alone
    weights = {key: value for key, value in record["settings"].items() if key.endswith("_weight")}
    tune = ["predict", "tune", "--model", str(coder_dir), "--data-dir", str(corpus), "--split", "dev"]
    done = CliRunner().invoke(app, tune, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    tuned = json.loads((coder_dir / "coder.json").read_text())
    assert tuned["settings"]["fusion"] == "trees" and tuned["tuning_trees"]["table"][0]["fusion"] == "trees"
    assert {key: tuned["settings"][key] for key in weights} == weights and "tuning" not in tuned


def test_fit_trees_refits_one_language_while_the_others_trees_are_stale(
    tmp_path, corpus, coder_dir, fold_coders_with_retrieval_only
):

    from typer.testing import CliRunner

    from icdcoder.cli import app
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.trees import trees_file

    folder = tmp_path / "coder"
    shutil.copytree(coder_dir, folder)
    stale = json.dumps({"features": ["an_older_feature"], "systems": {}}) + "\n"
    (folder / trees_file("en")).write_text(stale)  # English trees of an older version's features
    arguments = ["predict", "fit-trees", "--model", str(folder), "--data-dir", str(corpus), "--folds", "2"]
    done = CliRunner().invoke(app, arguments, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert (folder / TREES_FILE).is_file() and (folder / trees_file("en")).read_text() == stale
    with pytest.raises(InputError, match="refit them"):  # coding still refuses the stale trees
        SpanPredictor.load(folder)


def test_a_coder_that_fuses_by_trees_needs_its_trees_file(tmp_path, coder_dir):

    from icdcoder.infer.coder import SpanPredictor

    folder = tmp_path / "coder"
    shutil.copytree(coder_dir, folder)
    record = json.loads((folder / "coder.json").read_text())
    record["settings"]["fusion"] = "trees"
    (folder / "coder.json").write_text(json.dumps(record))
    (folder / TREES_FILE).unlink(missing_ok=True)
    with pytest.raises(InputError, match="fuse signals by trees"):
        SpanPredictor.load(folder)


def test_fit_trees_reads_training_and_tuning_notes_from_jsonl(
    tmp_path, corpus, coder_dir, fold_coders_with_retrieval_only
):

    from typer.testing import CliRunner

    from icdcoder.cli import app
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.data.schema import save_documents

    folder = tmp_path / "coder"
    shutil.copytree(coder_dir, folder)
    save_documents(tmp_path / "train.jsonl", load_codiesp(corpus, "train"))
    save_documents(tmp_path / "dev.jsonl", load_codiesp(corpus, "dev"))
    arguments = ["predict", "fit-trees", "--model", str(folder), "--folds", "2"]
    done = CliRunner().invoke(
        app,
        [*arguments, "--train-jsonl", str(tmp_path / "train.jsonl"), "--tune-jsonl", str(tmp_path / "dev.jsonl")],
        catch_exceptions=False,
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout.strip().splitlines()[-1])["best_settings"]["fusion"] == "trees"

    done = CliRunner().invoke(app, [*arguments, "--train-jsonl", str(tmp_path / "train.jsonl")])
    assert isinstance(done.exception, InputError) and "--tune-jsonl" in str(done.exception)


def test_a_candidates_cache_from_elsewhere_is_a_one_line_error(tmp_path):
    from icdcoder.train.fusion_trees import append_candidates, read_candidates

    cache = tmp_path / "candidates.jsonl"
    append_candidates(cache, {"n1": {"icd10cm": (np.zeros((1, len(FEATURES))), ["I10"])}})
    with cache.open("a") as handle:
        handle.write('{"doc_id": "n2"')  # a torn last line: ignored, the note is coded again
    assert list(read_candidates(cache)) == ["n1"]
    cache.write_text(
        json.dumps({"doc_id": "n3", "features": list(FEATURES), "systems": {"icd10cm": {"rows": 3}}}) + "\n"
    )
    with pytest.raises(InputError, match="candidates.jsonl:1"):
        read_candidates(cache)


def test_fit_trees_for_english_notes_fits_their_own_trees_and_leaves_the_spanish_fusion_alone(
    tmp_path, corpus, coder_dir, fold_coders_with_retrieval_only
):

    from test_infer_support import TRANSLATIONS
    from typer.testing import CliRunner

    from icdcoder.cli import app
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.trees import trees_file

    data, folder = tmp_path / "codiesp", tmp_path / "coder"
    shutil.copytree(corpus, data)
    shutil.copytree(coder_dir, folder)
    english = {**TRANSLATIONS, "S0005-1": "Arterial hypertension.\nNo chest X-ray is performed."}
    for split in ("train", "dev"):
        (data / split / "text_files_en").mkdir()
        for path in (data / split / "text_files").glob("*.txt"):
            translation = english[f"S{path.stem[2:]}"]
            (data / split / "text_files_en" / path.name).write_text(translation + "\n", encoding="utf-8")
    spanish_settings = json.loads((folder / "coder.json").read_text())["settings"]
    spanish_trees = (folder / TREES_FILE).read_bytes() if (folder / TREES_FILE).is_file() else None

    arguments = ["predict", "fit-trees", "--model", str(folder), "--data-dir", str(data), "--folds", "2"]
    done = CliRunner().invoke(app, [*arguments, "--lang", "en"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    record = json.loads((folder / "coder.json").read_text())
    assert record["settings"]["by_language"]["en"]["fusion"] == "trees" and "tuning_trees_en" in record
    assert (folder / trees_file("en")).is_file()
    unchanged = {key: value for key, value in record["settings"].items() if key != "by_language"}
    assert unchanged == {key: value for key, value in spanish_settings.items() if key != "by_language"}

    coder = SpanPredictor.load(folder)
    assert set(coder.trees) == {"en"} | ({"es"} if spanish_trees is not None else set())
    assert ((folder / TREES_FILE).read_bytes() if (folder / TREES_FILE).is_file() else None) == spanish_trees
    english_notes = load_codiesp(data, "dev", language="en")
    scores = [c.score for p in coder.predict(english_notes) for c in p.codes]
    assert scores and all(0 < score < 1 for score in scores)  # the English trees' probabilities

    (folder / trees_file("en")).unlink()
    with pytest.raises(InputError, match="'en' notes by trees"):
        SpanPredictor.load(folder)
    done = CliRunner().invoke(app, [*arguments, "--lang", "en", "--train-jsonl", str(tmp_path / "x.jsonl")])
    assert isinstance(done.exception, InputError) and "give --data-dir" in str(done.exception)


def test_tree_feature_trials_score_every_trial_from_notes_coded_once(
    tmp_path, corpus, coder_dir, fold_coders_with_retrieval_only, monkeypatch
):
    from icdcoder.spans.retrieval import CandidateRetriever
    from icdcoder.train import fusion_trees

    monkeypatch.setitem(fusion_trees.TREE_PARAMETERS, "max_iter", 5)  # a few trees: the trials, not the fit, are tested
    embedded: list[str] = []

    def first_letter_vectors(retriever, texts) -> np.ndarray:  # a stand-in encoder: texts sharing a first letter agree
        embedded.extend(texts)
        return np.array(
            [[float(text[:1].lower() == letter) for letter in "abcdefghijklmnopqrstuvwxyz"] for text in texts]
        )

    monkeypatch.setattr(CandidateRetriever, "embed_texts", first_letter_vectors)
    trials = load_benchmark("tree_feature_trials.py")
    coded = trials.coded_notes(coder_dir, corpus, 3, tmp_path)
    assert len(coded["train"]) == 15 and len(coded["dev"]) == 15 and set(coded["counts"]) == {0, 1, 2, "shipped"}
    assert trials.coded_notes(coder_dir, corpus, 3, tmp_path)["train"].keys() == coded["train"].keys()  # the cache
    with pytest.raises(SystemExit, match="give another --cache folder"):  # made for another data folder
        trials.coded_notes(coder_dir, tmp_path, 3, tmp_path)
    for name in (
        "shipped",
        "category_share",
        "parent_child",
        "assertion",
        "tfidf",
        "context_words",
        "title_similarity",
        "feature_subsampling",
    ):
        scores = trials.trial_scores(coded, name)
        assert set(scores) == {"icd10cm", "icd10pcs"}
        assert all(0 <= found["f1"] <= 1 and 0 <= found["map"] <= 1 for found in scores.values()), name
        assert 0 <= scores["icd10cm"]["sibling_false_positives"] <= scores["icd10cm"]["false_positives"]
    translated = tmp_path / "translated"  # the same notes with an "English" translation: their own text, line by line
    shutil.copytree(corpus, translated)
    for split in ("train", "dev"):
        shutil.copytree(translated / split / "text_files", translated / split / "text_files_en")
    coded = trials.coded_notes(coder_dir, translated, 3, tmp_path / "translated_cache")
    embedded.clear()
    similarities = trials.title_similarities(coded)
    candidates = {
        (note_id, *key)
        for split in ("train", "dev")
        for note_id, (_, _, found) in coded[split].items()
        for key in found
    }
    assert set(similarities) == candidates  # one value (or None) per candidate of every note
    assert any(value is not None for value in similarities.values())
    assert "Hipertensión arterial. No se realiza radiografía de tórax." in embedded  # the line translating its sentence


def test_tree_feature_trials_read_siblings_and_parents_among_the_candidates():
    trials = load_benchmark("tree_feature_trials.py")
    codes = ["C90.0", "C90.3", "C90.30", "I10"]
    rows = np.zeros((len(codes), len(FEATURES)))
    rows[:, FEATURES.index("fused")] = [0.9, 0.5, 0.7, 0.2]
    counts = TrainingCounts({("C90.0", "icd10cm"): 3, ("I10", "icd10cm"): 9}, {})
    item = trials.NoteSystem({}, "icd10cm", codes, counts, None, rows, {})
    share = trials.category_share(item)
    assert share[:, 1].tolist() == [0, 2, 1, 0]  # rank among the note's candidates of its category
    assert share[0, 0] == pytest.approx(4 / 6) and share[3, 0] == pytest.approx(1.0)
    family = trials.parent_child(item)
    assert family.tolist() == [[0, 0], [0, 1], [1, 0], [0, 0]]
    similarity = {("n1", "C90.0", "icd10cm"): 0.8, ("n1", "C90.3", "icd10cm"): 0.5, ("n1", "C90.30", "icd10cm"): None}
    similarity[("n1", "I10", "icd10cm")] = 0.4
    note = type("Note", (), {"id": "n1"})()
    close = trials.title_similarity(trials.NoteSystem({}, "icd10cm", codes, counts, note, rows, similarity))
    assert close[:, 0].tolist() == [0.8, 0.5, trials.NO_SIMILARITY, 0.4]  # C90.30: no span, no similarity
    assert close[0, 1] == pytest.approx(0.3) and close[1, 1] == pytest.approx(-0.3)  # against the closest sibling
    assert close[2, 1] == close[3, 1] == trials.NO_SIMILARITY  # its own similarity unknown; no sibling
    ranked = {"n1": [(0.9, "C90.0"), (0.6, "C90.30"), (0.5, "I10"), (0.1, "E11.9")]}
    counted = trials.false_positives(ranked, {"n1": {"C90.0", "C90.3"}}, 0.5)
    assert counted == {"false_positives": 2, "sibling_false_positives": 1}  # C90.30 (a sibling) and I10
