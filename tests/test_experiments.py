"""``icdcoder experiment``: the registry, the runner's files, and one smoke run per experiment on tiny fixtures."""

from __future__ import annotations

import json
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


def test_tuning_holdout_cross_fits_each_variant(places, corpus, sft_coder):
    record = run(
        "tuning_holdout",
        places,
        f"data_dir={corpus}",
        f"model={sft_coder}",
        "langs=[es]",
        "folds=2",
        "variants=[shipped, without_concept]",
    )
    rows = record["results"]["rows"]
    assert [(row["variant"], row["one_threshold"]) for row in rows] == [
        ("shipped", False),
        ("shipped", True),
        ("without_concept", False),
        ("without_concept", True),
    ]
    assert all(len(row["fold_weights"]) == 2 and "D_f1" in row["cross_fitted"] for row in rows)


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
