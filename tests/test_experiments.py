"""``icdcoder experiment``: the registry, the runner's files, and one smoke run per experiment on tiny fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_assertion import TINY_ANN, TINY_TXT
from test_infer_support import make_codiesp

from icdcoder.errors import InputError
from icdcoder.experiments import MODULES, all_experiments, experiment
from icdcoder.experiments.runner import run_experiment, write_docs

README = """# project

<!-- experiment:codiesp_dev:start -->
old table
<!-- experiment:codiesp_dev:end -->

after
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_codiesp(tmp_path_factory.mktemp("codiesp"), english=True)


@pytest.fixture()
def places(tmp_path) -> dict[str, Path]:
    """Empty config, results and docs folders, and a README with one generated block."""
    (tmp_path / "configs").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    return {
        "config_dir": tmp_path / "configs",
        "results_dir": tmp_path / "results",
        "docs_dir": tmp_path / "docs",
        "readme": readme,
    }


def run(name: str, places: dict[str, Path], *assignments: str) -> dict:
    path = run_experiment(name, list(assignments), **places)
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["experiment"] == name and record["split"] and record["config"]
    assert record["command"].startswith(f"icdcoder experiment run {name}")
    page = (places["docs_dir"] / f"{name}.md").read_text(encoding="utf-8")
    assert "| " in page and "Regenerate: `icdcoder experiment run" in page and "## Caveats" in page
    return record


@pytest.fixture(scope="module")
def sft_coder(tmp_path_factory, corpus, tiny_lm_dir) -> Path:
    """A span coder SFT-trained for one step on the tiny model by the span_vs_document experiment."""
    root = tmp_path_factory.mktemp("span_vs_document")
    (root / "configs").mkdir()
    places = {
        "config_dir": root / "configs",
        "results_dir": root / "results",
        "docs_dir": root / "docs",
        "readme": None,
    }
    record = run(
        "span_vs_document",
        places,
        f"data_dir={corpus}",
        "variants=[smoke]",
        "dev_notes=null",
        f"runs_dir={root / 'runs'}",
        f"train_set=[backbone={tiny_lm_dir},max_steps=1]",
    )
    (row,) = record["results"]["rows"]
    assert row["variant"] == "smoke" and row["train_tokens"] > 0 and row["dev_notes"] == 4
    assert set(row["fused"]) >= {"D_f1", "D_map", "P_f1", "P_map", "llm_weight"}
    return root / "runs" / "smoke"


def test_every_module_is_registered_under_its_name_and_has_a_config_file():
    names = [found.name for found in all_experiments()]
    assert names == list(MODULES)
    for name in names:
        assert (Path(__file__).resolve().parent.parent / "configs" / "experiments" / f"{name}.yaml").is_file()
    with pytest.raises(InputError, match="unknown experiment 'nope'"):
        experiment("nope")


def test_a_bad_override_names_the_field(places):
    with pytest.raises(InputError, match="field 'tables.0'"):
        run_experiment("signal_ablation", ["tables=[bad]"], **places)
    assert not (places["results_dir"] / "signal_ablation.json").exists()


def test_pages_without_results_say_how_to_make_them(places):
    write_docs(places["results_dir"], places["docs_dir"], places["readme"])
    page = (places["docs_dir"] / "ladder.md").read_text(encoding="utf-8")
    assert "Not run yet" in page and "icdcoder experiment run ladder" in page
    assert places["readme"].read_text(encoding="utf-8") == README  # no results: the block is left alone
    assert "not run yet" in (places["docs_dir"] / "index.md").read_text(encoding="utf-8")


def test_a_results_file_that_does_not_fit_its_table_is_named_in_one_line(places):
    stale = {
        "experiment": "ranking_depth",
        "command": "icdcoder experiment run ranking_depth",
        "results": {"rows": [{}]},
    }
    places["results_dir"].mkdir(parents=True, exist_ok=True)
    (places["results_dir"] / "ranking_depth.json").write_text(json.dumps(stale), encoding="utf-8")
    with pytest.raises(InputError, match="experiment 'ranking_depth' do not fit its table .*rerun"):
        write_docs(places["results_dir"], places["docs_dir"], places["readme"])


def test_codiesp_dev_tabulates_every_system_and_fills_the_readme(places, corpus):
    systems = "[{name: dictionary, system: dictionary}, {name: broken, system: no-such-system}]"
    record = run(
        "codiesp_dev",
        places,
        f"data_dir={corpus}",
        f"systems={systems}",
        "isolate=false",
        f"output_dir={places['results_dir']}",
        f"work_dir={places['results_dir'] / 'work'}",
    )
    statuses = {row["name"]: row["status"] for row in record["results"]["systems"]}
    assert statuses == {"dictionary": "ok", "broken": "failed"}
    readme = places["readme"].read_text(encoding="utf-8")
    assert "old table" not in readme and "| dictionary | 1.000 |" in readme and "| broken | failed" in readme
    assert readme.endswith("<!-- experiment:codiesp_dev:end -->\n\nafter\n")


def test_codiesp_dev_en_reads_the_english_notes(places, corpus):
    record = run(
        "codiesp_dev_en",
        places,
        f"data_dir={corpus}",
        "systems=[{name: tfidf, system: tfidf}]",
        "isolate=false",
        f"output_dir={places['results_dir']}",
        f"work_dir={places['results_dir'] / 'work'}",
    )
    (row,) = record["results"]["systems"]
    assert row["status"] == "ok" and row["lang"] == "en"


def test_assertion_nubes_scores_groups_and_english_cases(places, tmp_path):
    folder = tmp_path / "nubes" / "SAMPLE-001"
    folder.mkdir(parents=True)
    (folder / "doc.txt").write_text(TINY_TXT, encoding="utf-8")
    (folder / "doc.ann").write_text(TINY_ANN, encoding="utf-8")
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        json.dumps(
            {
                "id": "a",
                "split": "dev",
                "text": "He denies chest pain.",
                "spans": [{"start": 10, "end": 20, "traits": ["negated"]}],
            }
        )
        + "\n",
        encoding="utf-8",
    )
    record = run("assertion_nubes", places, f"data_dir={tmp_path / 'nubes'}", f"en_cases={cases}")
    tuning = record["results"]["groups"]["tuning"]
    assert tuning["events"]["negated"]["f1"] == 1.0 and tuning["events"]["uncertain"]["f1"] == 1.0
    assert record["results"]["english_cases"]["dev"]["scores"]["negated"]["f1"] == 1.0


def test_signal_ablation_keeps_the_best_row_of_each_set_of_signals(places, tmp_path):
    zero = dict.fromkeys(("llm", "lexical", "english", "ontology", "procedure", "concept", "quantity"), 0.0)
    rows = [
        {**{f"{k}_weight": v for k, v in zero.items()}, "D_f1": 0.5, "D_map": 0.4, "P_f1": 0.3, "P_map": 0.2},
        {
            **{f"{k}_weight": v for k, v in zero.items()},
            "lexical_weight": 1.0,
            "D_f1": 0.6,
            "D_map": 0.5,
            "P_f1": 0.3,
            "P_map": 0.2,
        },
        {
            **{f"{k}_weight": v for k, v in zero.items()},
            "lexical_weight": 2.0,
            "D_f1": 0.7,
            "D_map": 0.5,
            "P_f1": 0.3,
            "P_map": 0.2,
        },
        {
            **{f"{k}_weight": v for k, v in zero.items()},
            "llm_weight": 1.0,
            "D_f1": 0.9,
            "D_map": 0.9,
            "P_f1": 0.9,
            "P_map": 0.9,
        },
    ]
    model = tmp_path / "coder"
    model.mkdir()
    (model / "coder.json").write_text(json.dumps({"tuning": {"table": rows}}), encoding="utf-8")
    record = run("signal_ablation", places, f"model={model}", "tables=[tuning]")
    found = [(row["signals"], row["weights"], row["D_f1"]) for row in record["results"]["rows"]]
    assert found == [("retrieval only", {}, 0.5), ("+ Spanish lexicon", {"lexical": 2.0}, 0.7)]  # LLM rows in no group
    with pytest.raises(InputError, match="no 'tuning_en' table"):
        run_experiment("signal_ablation", [f"model={model}", "tables=[tuning_en]"], **places)


def test_span_vs_document_trains_from_scratch_and_scores(sft_coder):
    assert (sft_coder / "coder.json").is_file() and (sft_coder / "run_meta.json").is_file()


def test_candidates_scores_a_variant_in_the_precision_asked(tmp_path, corpus, sft_coder):
    places = {
        "config_dir": tmp_path,
        "results_dir": tmp_path / "results",
        "docs_dir": tmp_path / "docs",
        "readme": None,
    }
    record = run(
        "candidates",
        places,
        f"data_dir={corpus}",
        "variants=[smoke]",
        "dev_notes=2",
        f"runs_dir={tmp_path / 'runs'}",
        f"reuse={{smoke: {sft_coder}}}",
    )
    (row,) = record["results"]["rows"]
    assert row["dtype"] == "float32" and row["dev_notes"] == 2 and row["reused"] == str(sft_coder)


def test_tuning_holdout_cross_fits_each_variant(places, tmp_path, corpus, sft_coder, fold_coders_with_retrieval_only):
    from typer.testing import CliRunner

    from icdcoder.cli import app

    arguments = ["tuning_holdout", places, f"data_dir={corpus}", "langs=[es]", "folds=2"]
    with pytest.raises(InputError, match="no fusion trees for 'es' notes"):
        run(*arguments, f"model={sft_coder}", "variants=[trees]")
    model = tmp_path / "coder"
    shutil.copytree(sft_coder, model)
    record = json.loads((model / "coder.json").read_text(encoding="utf-8"))
    record["settings"]["use_llm"] = False  # fusion trees are fitted for a coder without its LLM
    (model / "coder.json").write_text(json.dumps(record), encoding="utf-8")
    fitted = ["predict", "fit-trees", "--model", str(model), "--data-dir", str(corpus), "--folds", "2"]
    assert CliRunner().invoke(app, fitted, catch_exceptions=False).exit_code == 0
    record = run(*arguments, f"model={model}", "variants=[trees, shipped, without_concept]")
    rows = record["results"]["rows"]
    assert [(row["variant"], row["one_threshold"]) for row in rows] == [
        ("trees", False),
        ("trees", True),
        ("shipped", False),
        ("shipped", True),
        ("without_concept", False),
        ("without_concept", True),
    ]
    assert all(len(row["fold_weights"]) == 2 and "D_f1" in row["cross_fitted"] for row in rows)
    # the trees' rows tune only their thresholds
    assert all(set(picked) == {"threshold", "untrained_threshold"} for picked in rows[0]["fold_weights"])


def test_ladder_trains_rl_from_the_sft_coder_with_the_experiments_data(places, tmp_path, corpus, sft_coder):
    record = run(
        "ladder",
        places,
        f"data_dir={corpus}",
        f"sft=[{sft_coder}]",
        "grpo_config=configs/rl/smoke.yaml",
        "rl_set=[max_steps=1]",
        "seeds=[0]",
        "rungs=[sft, grpo]",
        f"runs_dir={tmp_path / 'runs'}",
        "span_eval=2",
    )
    rungs = record["results"]["rungs"]
    assert set(rungs) == {"sft", "grpo"} and "span_plain_f1" in rungs["grpo"][0]
    meta = json.loads((tmp_path / "runs" / "grpo" / "seed0" / "run_meta.json").read_text(encoding="utf-8"))
    assert meta["config"]["data"]["data_dir"] == str(corpus)  # data_dir reaches the RL data config


@pytest.fixture(scope="module")
def corpus_of_eight(tmp_path_factory) -> Path:
    """The tiny corpus twice over (eight notes, new ids): enough notes for three folds of a few notes each."""
    from test_infer_support import NOTES, TRANSLATIONS, write_split

    root = tmp_path_factory.mktemp("codiesp_eight")
    copies = {doc_id.replace("S0", "S1", 1): doc_id for doc_id, _, _ in NOTES}
    notes = NOTES + [(copy, text, codes) for copy, (_, text, codes) in zip(copies, NOTES)]
    for split in ("train", "dev"):
        write_split(root, split, notes)
        (root / split / "text_files_en").mkdir()
        for doc_id, _, _ in notes:
            english = TRANSLATIONS[copies.get(doc_id, doc_id)]
            (root / split / "text_files_en" / f"{doc_id}.txt").write_text(english + "\n", encoding="utf-8")
    return root


def test_every_config_validates_with_its_yaml_and_defaults():
    from icdcoder.experiments.runner import CONFIG_DIR, load_experiment_config

    configs = Path(__file__).resolve().parent.parent / CONFIG_DIR
    for found in all_experiments():
        config = load_experiment_config(found, configs, [])
        assert isinstance(config, found.config) and found.caveats.strip() and found.cost


def test_specificity_renames_untrained_codes_and_scores_the_step_off_and_on(places, corpus, sft_coder):
    record = run("specificity", places, f"data_dir={corpus}", f"model={sft_coder}", "langs=[es]")
    (renamed,) = record["results"]["renamed"]
    assert renamed["lang"] == "es" and renamed["gold_before"] <= renamed["renamed"]
    rows = record["results"]["rows"]
    assert [row["specify_untrained"] for row in rows] == [False, True] and all("D_f1" in row for row in rows)


def test_unseen_threshold_scores_each_system_at_each_threshold(places, corpus, sft_coder):
    record = run(
        "unseen_threshold", places, f"data_dir={corpus}", f"model={sft_coder}", "langs=[es]", "thresholds=[0.05, 0.2]"
    )
    rows = record["results"]["rows"]
    assert [(row["task"], row["untrained_threshold"]) for row in rows] == [
        ("D", 0.05),
        ("D", 0.2),
        ("P", 0.05),
        ("P", 0.2),
    ]
    assert all(0.0 <= row["micro_f1"] <= 1.0 for row in rows)


def test_ranking_depth_only_raises_map_and_recall_as_the_ranking_deepens(places, corpus, sft_coder):
    record = run("ranking_depth", places, f"data_dir={corpus}", f"model={sft_coder}", "langs=[es]", "depths=[1, 40]")
    shallow, deep = record["results"]["rows"]
    assert (shallow["depth"], deep["depth"]) == (1, 40)
    assert shallow["D_mean_length"] <= 1 < deep["D_mean_length"]
    for key in ("D_map", "D_recall", "P_map", "P_recall"):
        assert 0.0 <= shallow[key] <= deep[key] <= 1.0
    assert set(deep["D_bands"]) == {"unseen_recall", "rare_recall", "frequent_recall"}
    assert "unseen / rare / frequent" in (places["docs_dir"] / "ranking_depth.md").read_text(encoding="utf-8")


def test_learned_fusion_cross_fits_the_grid_and_the_trees(
    places, tmp_path, corpus_of_eight, sft_coder, fold_coders_with_retrieval_only, monkeypatch
):
    import shutil

    from threadpoolctl import threadpool_limits

    from icdcoder.experiments import learned_fusion
    from icdcoder.infer.coder import SpanPredictor

    trees_predictions: list = []  # the "trees on ..." rows' predictions
    as_predictions = learned_fusion.as_predictions

    def recorded(dev, by_system):
        trees_predictions.extend(as_predictions(dev, by_system))
        return trees_predictions[-len(dev) :]

    monkeypatch.setattr(learned_fusion, "as_predictions", recorded)
    coder = shutil.copytree(sft_coder, tmp_path / "coder")
    SpanPredictor.load(coder, use_llm=False).write_settings(coder)  # as shipped: no LLM weight in the grid
    with threadpool_limits(limits=1, user_api="openmp"):  # the trees' OpenMP threads crawl on a busy 2-core CPU
        record = run(
            "learned_fusion",
            places,
            f"data_dir={corpus_of_eight}",
            f"model={coder}",
            "langs=[es]",
            "folds=3",  # the thresholds of a fold are tuned on the other folds cross-fitted again: 3 at least
            "weights=[0, 1]",
        )
    fusions = [row["fusion"] for row in record["results"]["rows"]]
    assert fusions == [
        "grid",
        "trees on dev folds",
        "trees on training notes",
        "trees on training notes + dev folds",
        "trees as a signal",
        "trees as a signal",
    ]
    assert all("D_map" in (row.get("cross_fitted") or row["in_sample_thresholds"]) for row in record["results"]["rows"])
    assert len(trees_predictions) == 24 and any(prediction.candidates for prediction in trees_predictions)
    for prediction in trees_predictions:
        decided = {(code.code, code.system) for code in prediction.codes}
        assert all((code.code, code.system) not in decided and code.score > 0 for code in prediction.candidates)


def test_learned_fusion_ranks_the_codes_below_threshold_as_candidates():
    from icdcoder.data.schema import Document
    from icdcoder.experiments.learned_fusion import as_predictions
    from icdcoder.ontology.labels import CODER_SYSTEMS

    by_system = {system: {0: ([], [])} for system in CODER_SYSTEMS}
    ranking = [(0.9, "R52", False), (0.4, "R05", True), (0.2, "J18.9", False), (0.0, "R50.9", False)]
    by_system["icd10cm"] = {0: ([(0.9, "R52"), (0.4, "R05")], ranking)}  # R05: above its untrained threshold
    by_system["icd10pcs"] = {0: ([], [(0.3, "BW03ZZZ", False)])}
    (prediction,) = as_predictions([Document(id="n1", text="fiebre", language="es")], by_system)
    assert [(code.code, code.score) for code in prediction.codes] == [("R52", 0.9), ("R05", 0.4)]
    assert [(code.code, code.system) for code in prediction.candidates] == [
        ("BW03ZZZ", "icd10pcs"),
        ("J18.9", "icd10cm"),
    ]
    # R50.9: a zero score ranks no code
    assert [code.code for code in prediction.ranking()] == ["R52", "R05", "BW03ZZZ", "J18.9"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (  # silver_sft's
            {"threads": 1, "llm": True, "lang": "en", "limit": 60},
            ["--split", "dev", "--lang", "en", "--cache", "c.jsonl", "--threads", "1", "--llm", "--limit", "60"],
        ),
        (  # span_vs_document's
            {"threads": 2, "llm": True, "limit": 60, "dtype": "float32"},
            ["--split", "dev", "--cache", "c.jsonl", "--threads", "2", "--llm", "--limit", "60", "--dtype", "float32"],
        ),
        ({"threads": 1, "llm": False}, ["--split", "dev", "--cache", "c.jsonl", "--threads", "1", "--no-llm"]),
        ({"threads": 1}, ["--split", "dev", "--cache", "c.jsonl", "--threads", "1"]),
    ],
)
def test_tune_args_spell_each_option_given(options, expected):
    from icdcoder.experiments.common import tune_args

    arguments = tune_args(model=Path("coder"), data_dir=Path("codiesp"), cache=Path("c.jsonl"), **options)
    assert arguments == ["predict", "tune", "--model", "coder", "--data-dir", "codiesp", *expected]


def test_translation_embeddings_fuses_the_nearest_titles_as_a_signal(places, corpus, sft_coder, monkeypatch):
    """A fixed encoder stands in for MiniLM (embedding the label space's titles takes minutes; test_spans_retrieval
    runs the real one): every segment points at the first code of the label space, every other title away from it."""
    import numpy as np

    from icdcoder.spans.retrieval import CandidateRetriever

    def titles(retriever, found) -> np.ndarray:
        vectors = np.tile(np.array([0.0, 1.0], dtype=np.float32), (len(found), 1))
        vectors[0] = (1.0, 0.0)
        return vectors

    def segments(retriever, texts) -> np.ndarray:
        return np.tile(np.array([1.0, 0.0], dtype=np.float32), (len(texts), 1))

    monkeypatch.setattr(CandidateRetriever, "embed_code_titles", titles)
    monkeypatch.setattr(CandidateRetriever, "embed_texts", segments)
    record = run(
        "translation_embeddings", places, f"data_dir={corpus}", f"model={sft_coder}", "weights=[0, 2]", "top=1"
    )
    rows = record["results"]["rows"]
    assert [(row["top"], row["weight"]) for row in rows] == [(1, 0.0), (1, 2.0)] and "D_unseen_recall" in rows[0]


def test_retrieval_recall_reports_recall_at_k_per_query_kind(places, corpus):
    record = run("retrieval_recall", places, f"data_dir={corpus}", "mode=seen")
    results = record["results"]
    assert results["label_space_size"] > 0 and "+translated" in results["sources"]
    assert results["evidence"]["all"]["r@50"] == 1.0  # every code of a note seen in train is in a 50-code space
    assert results["segment"]["all"]["n"] > 0


def test_alignment_coverage_reports_each_split(places, corpus):
    record = run("alignment_coverage", places, f"data_dir={corpus}")
    rows = record["results"]["rows"]
    assert [row["split"] for row in rows] == ["train", "dev"] and rows[0]["documents"] == 4
    assert rows[0]["docs_all_one_to_one"] == 1.0


def test_silver_evidence_grades_located_spans_against_the_gold(places, corpus):
    record = run("silver_evidence", places, f"data_dir={corpus}", "min_share=[0.5, 1.0]")
    rows = record["results"]["rows"]
    assert [(row["system"], row["min_share"]) for row in rows] == [
        ("icd10cm", 0.5),
        ("icd10pcs", 0.5),
        ("icd10cm", 1.0),
        ("icd10pcs", 1.0),
    ]
    assert all(row["on_gold"] <= row["located"] <= row["codes"] for row in rows) and rows[0]["codes"] > 0


def test_llm_modes_scores_each_weight_and_the_llm_alone(places, tmp_path, corpus, sft_coder):
    record = run(
        "llm_modes",
        places,
        f"data_dir={corpus}",
        f"model={sft_coder}",
        "runs=[{mode: score, gate: 0}]",
        "weights=[0, 1]",
        f"runs_dir={tmp_path / 'runs'}",
    )
    rows = record["results"]["rows"]
    assert [row["llm_weight"] for row in rows] == [0.0, 1.0, "alone"] and rows[0]["llm_segments"] > 0
    assert (tmp_path / "runs" / "es_score_gate0.jsonl").is_file()


def test_silver_sft_trains_the_silver_variant_on_notes_without_offsets(tmp_path, corpus, monkeypatch):
    """The training command each variant gets (the run itself is the span_vs_document protocol, tested above)."""
    from icdcoder.data.schema import load_documents
    from icdcoder.experiments import silver_sft

    commands = []
    monkeypatch.setattr(silver_sft, "run_cli", lambda arguments, log: commands.append(arguments))
    config = silver_sft.SilverSftConfig(data_dir=corpus, runs_dir=tmp_path, steps=3, train_set=["backbone=tiny"])
    for variant in config.variants:
        silver_sft.train(variant, config)
    assert "data.silver_evidence=true" in commands[1] and "data.silver_evidence=true" not in commands[0]
    assert all(
        "max_steps=3" in command and "backbone=tiny" in command and "data.lang=en" in command for command in commands
    )
    documents = f"data.documents_jsonl={tmp_path / 'train_en_no_offsets.jsonl'}"
    assert documents in commands[1] and documents not in commands[0]
    bare = load_documents(tmp_path / "train_en_no_offsets.jsonl")
    assert len(bare) == 4 and all(gold.evidence == () for document in bare for gold in document.codes)


#: a verifier band that holds every candidate (the tiny coder's candidates rarely fall in the shipped one)
EVERY_CANDIDATE = "band.low.icd10cm=0, band.low.icd10pcs=0, band.high.icd10cm=2, band.high.icd10pcs=2"


def test_verifier_study_runs_every_stage(
    places, tmp_path, corpus, sft_coder, tiny_lm_dir, fold_coders_with_retrieval_only
):
    record = run(
        "verifier_study",
        places,
        f"data_dir={corpus}",
        f"model={sft_coder}",
        "folds=2",
        "threads=1",
        f"runs_dir={tmp_path / 'runs'}",
        f"verifier_set=[backbone={tiny_lm_dir}, lora.layers_to_transform=null, max_examples=8, batch_size=4, threads=1, {EVERY_CANDIDATE}]",
    )
    results = record["results"]
    assert [row["split"] for row in results["candidates"]] == ["dev", "train"]
    assert results["oracle"][0]["system"] == "coder alone"
    for name in ("smollm2", "gemma3"):  # one verifier per default config, each in its own runs folder
        assert results["train"][name]["training"]["steps"] >= 1 and (tmp_path / "runs" / name / "adapter").is_dir()
        assert results["speed"][name]["coder_notes_per_s"] > 0
    assert list(results["measure"]) == ["smollm2", "gemma3", "oracle"]
    assert [row["system"] for row in results["measure"]["oracle"]["rows"]] == ["LLM off", "verifier on"]
    table = experiment("verifier_study").table(results)
    assert "+ verifier SmolLM2-135M" in table and "+ verifier Gemma-3-270M" in table
