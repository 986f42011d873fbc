"""``icdcoder train refit``: a saved coder's retriever and signals refitted on the notes of several splits, its
settings, trees and thresholds kept; the output folder replaced whole; the test split and repeated notes refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_infer_support import NOTES, TRANSLATIONS, write_split

REPO = Path(__file__).resolve().parent.parent
#: a dev note whose code no training note carries
DEV_ONLY = ("S0005-1", "Paciente de 70 años con neumonía adquirida en la comunidad.", [("j18.9", "D", "neumonía")])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Training notes NOTES[:3]; dev notes NOTES[3:] and DEV_ONLY (no note in both); each with its translation."""
    root = tmp_path_factory.mktemp("codiesp")
    write_split(root, "train", NOTES[:3])
    write_split(root, "dev", [*NOTES[3:], DEV_ONLY])
    for split, notes in (("train", NOTES[:3]), ("dev", NOTES[3:])):
        (root / split / "text_files_en").mkdir()
        for doc_id, _text, _codes in notes:
            (root / split / "text_files_en" / f"{doc_id}.txt").write_text(TRANSLATIONS[doc_id], encoding="utf-8")
    (root / "dev" / "text_files_en" / "S0005-1.txt").write_text(
        "70-year-old patient with community-acquired pneumonia.", encoding="utf-8"
    )
    return root


@pytest.fixture(scope="module")
def coder_dir(corpus, ontology, tmp_path_factory) -> Path:
    """A retrieval-only coder (no LLM) fitted on the training split."""
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.settings import CoderSettings
    from icdcoder.train.data import fit_retriever

    folder = tmp_path_factory.mktemp("coder")
    retriever = fit_retriever(load_codiesp(corpus, "train"), ontology)
    settings = CoderSettings(use_llm=False, threshold={"icd10cm": 0.4, "icd10pcs": 0.45})
    SpanPredictor(settings).attach(None, None, retriever, ontology=ontology).save(folder)
    return folder


def _refit(model: Path, out: Path, corpus: Path, splits: str):
    from typer.testing import CliRunner

    from icdcoder.cli import app

    args = ["train", "refit", "--model", str(model), "--out", str(out), "--data-dir", str(corpus), "--splits", splits]
    return CliRunner().invoke(app, args, catch_exceptions=False)


def _trained_codes(folder: Path) -> set:
    from icdcoder.infer.coder import SpanPredictor

    return set(SpanPredictor.load(folder, check_files=False).fitted_retriever.trained_codes)


def test_refit_learns_the_dev_notes_and_keeps_the_settings(tmp_path, corpus, coder_dir):
    out = tmp_path / "released"
    out.mkdir()
    (out / "stale.txt").write_text("from an older build", encoding="utf-8")
    (out / "README.md").write_text("# the shipped coder", encoding="utf-8")
    (coder_dir / "README.md").write_text("# the benchmarked coder", encoding="utf-8")
    result = _refit(coder_dir, out, corpus, "train,dev")
    assert result.exit_code == 0, result.output[-2000:]
    report = json.loads(result.stdout)
    assert (report["splits"], report["notes"], report["english_notes"]) == (["train", "dev"], 5, 5)
    assert {code for code, _system in _trained_codes(out) - _trained_codes(coder_dir)} == {"J18.9"}
    record, original = (json.loads((folder / "coder.json").read_text()) for folder in (out, coder_dir))
    assert record["settings"] == original["settings"]
    assert record["refit"]["splits"] == ["train", "dev"] and record["refit"]["from"] == coder_dir.name
    assert (out / "lexicon" / "surface_forms.json.gz").is_file()
    assert not (out / "stale.txt").exists()  # the output was replaced whole, but for its own description
    assert (out / "README.md").read_text(encoding="utf-8") == "# the shipped coder"
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.endswith(".lock")) == ["released"]


def test_replace_folder_puts_the_old_one_back_when_the_new_one_cannot_take_its_place(tmp_path, monkeypatch):
    from icdcoder.train.refit import replace_folder

    old, new = tmp_path / "coder", tmp_path / "staging" / "coder"
    old.mkdir()
    (old / "coder.json").write_text("old", encoding="utf-8")
    new.mkdir(parents=True)
    (new / "coder.json").write_text("new", encoding="utf-8")
    real_rename = Path.rename

    def failing_rename(self, target):
        if self == new:
            raise OSError("disk gone")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError):
        replace_folder(new, old)
    monkeypatch.undo()
    assert (old / "coder.json").read_text() == "old"
    replace_folder(new, old)
    assert (old / "coder.json").read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["coder", "staging"]  # nothing set aside is left


@pytest.mark.parametrize(
    ("splits", "message"),
    [("train,test", "the test split is never trained on"), ("train,train", "notes are in more than one of the splits")],
)
def test_refit_refuses_the_test_split_and_repeated_notes(tmp_path, corpus, coder_dir, splits, message):
    out = tmp_path / "released"
    command = [sys.executable, "-m", "icdcoder.cli", "train", "refit", "--model", str(coder_dir), "--out", str(out)]
    result = subprocess.run(
        [*command, "--data-dir", str(corpus), "--splits", splits], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_more_training_notes_codes_each_dev_note_by_coders_and_trees_fitted_without_it(
    tmp_path, corpus, coder_dir, monkeypatch
):
    from benchmark_scripts import load_benchmark

    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.train import fusion_trees

    bench = load_benchmark("more_training_notes.py")
    monkeypatch.setattr(bench, "DEV_FOLDS", 2)
    monkeypatch.setattr(bench, "TREE_FOLDS", 2)
    merged = bench.merged_corpus(corpus, tmp_path / "merged")
    notes = ["S0001-1", "S0002-1", "S0003-1", "S0004-1", "S0005-1"]
    assert sorted(path.name for path in (merged / "train" / "text_files").iterdir()) == [f"{n}.txt" for n in notes]
    coders, trees = [], []
    real_fold_coder = fusion_trees.fold_coder

    def recording_fold_coder(coder, documents, settings):
        coders.append(sorted(document.id for document in documents))
        return real_fold_coder(coder, documents, settings)

    def recording_fit(candidates, documents, settings, counts):
        """Which notes each fold's trees would learn from (this tiny corpus has no wrong procedure candidate to fit
        real trees on; the coder fuses by weighted mean, so the stand-in is never read)."""
        assert set(candidates) == {document.id for document in documents}
        trees.append(sorted(document.id for document in documents))
        return object()

    monkeypatch.setattr(fusion_trees, "fold_coder", recording_fold_coder)
    monkeypatch.setattr(fusion_trees, "fit_tree_fusion", recording_fit)
    assert not SpanPredictor.load(coder_dir, check_files=False).trees
    alone = bench.coded_dev(coder_dir, corpus, merged, with_dev=False)
    assert coders == [notes[:3]] and not trees
    pooled = bench.coded_dev(coder_dir, corpus, merged, with_dev=True, refit_trees=True)
    assert trees == [[*notes[:3], "S0005-1"], [*notes[:3], "S0004-1"]]  # each dev fold's trees learn without it
    assert [held for held in trees if held in coders] == trees  # and so does its coder
    for language in ("es", "en"):
        assert [p.doc_id for p in alone.predictions[language]] == ["S0004-1", "S0005-1"]
    assert list(pooled.predictions) == ["es"]  # the English notes' trees would not be refitted
    assert sorted(p.doc_id for p in pooled.predictions["es"]) == ["S0004-1", "S0005-1"]
    assert alone.fold == pooled.fold == {"S0004-1": 0, "S0005-1": 1}
    assert ("J18.9", "icd10cm") not in alone.trained["S0005-1"]  # no training note carries it
    scores = bench.pooled_scores(corpus, alone.predictions["es"], tmp_path / "submission")
    assert scores["n_documents"] == 2 and bench.row("x", "en", scores).endswith(" | - |")


def test_more_training_notes_decides_each_fold_at_the_thresholds_tuned_on_the_others():
    """Note A (fold 0) ranks its gold code above a wrong one, note B (fold 1) below it. Tuned on B, the threshold keeps
    both of A's codes (ties go to the lowest threshold: 0); tuned on A, it lies between A's scores (0.225) and keeps
    B's wrong code alone. Pooled: one right decision of three, two gold codes: F1 2/5. An untrained code of A scored
    0.05 is kept only where B's tuning says so: B has no untrained code, so it keeps the shared threshold, 0. A code
    left under its threshold becomes a candidate without its evidence."""
    from benchmark_scripts import load_benchmark

    from icdcoder.data.schema import Evidence
    from icdcoder.evaluate.metrics import micro_prf
    from icdcoder.infer.settings import CoderSettings
    from icdcoder.predictor import CodePrediction, DocumentPrediction

    bench = load_benchmark("more_training_notes.py")
    quote = [Evidence(pieces=((0, 5),))]

    def note(doc_id: str, scores: dict[str, float]) -> DocumentPrediction:
        codes = [CodePrediction(code, "icd10cm", score, evidence=quote) for code, score in scores.items()]
        return DocumentPrediction(doc_id, codes)

    def kept(predictions: list[DocumentPrediction]) -> dict[str, list[str]]:
        return {p.doc_id: [code.code.lower() for code in p.codes] for p in predictions}

    coded = bench.CodedDev(
        {"es": [note("A", {"R51": 0.3, "R05": 0.2}), note("B", {"R05": 0.25, "R51": 0.15})]},
        {"A": 0, "B": 1},
        {"A": {("R51", "icd10cm"), ("R05", "icd10cm")}, "B": {("R51", "icd10cm"), ("R05", "icd10cm")}},
        CoderSettings(use_llm=False, threshold={"icd10cm": 0.5, "icd10pcs": 0.5}),
    )
    gold = {"A": [("R51", "icd10cm")], "B": [("R51", "icd10cm")]}
    truth = {"A": {"r51"}, "B": {"r51"}}
    crossed = bench.cross_fitted(coded, "es", gold)
    assert kept(crossed) == {"A": ["r51", "r05"], "B": ["r05"]}
    assert micro_prf(truth, kept(crossed))["micro_f1"] == pytest.approx(2 / 5)
    assert [(c.code, c.evidence) for c in crossed[1].candidates] == [("R51", [])]
    assert [c.evidence for c in crossed[1].codes] == [quote]
    coded.predictions["es"][0].codes.append(CodePrediction("Z99.9", "icd10cm", 0.05))
    assert micro_prf(truth, kept(bench.cross_fitted(coded, "es", gold)))["micro_f1"] == pytest.approx(2 / 6)
    assert kept(bench.shipped_decisions(coded, "es")) == {"A": [], "B": []}  # the coder's own 0.5


def test_more_training_notes_fold_coders_give_every_ranked_code_its_evidence():
    from benchmark_scripts import load_benchmark

    from icdcoder.infer.fusion import code_threshold
    from icdcoder.infer.settings import CoderSettings, FusionOverride

    bench = load_benchmark("more_training_notes.py")
    settings = CoderSettings(
        use_llm=False,
        threshold={"icd10cm": 0.4, "icd10pcs": 0.5},
        untrained_threshold={"icd10cm": 0.1},
        by_language={"en": FusionOverride(threshold={"icd10cm": 0.3, "icd10pcs": 0.2})},
    )
    zero = bench.every_code_decided(settings)
    for language in ("es", "en"):
        for system in bench.SYSTEMS:
            assert code_threshold(zero.for_language(language), system, False) == 0.0
            assert code_threshold(zero.for_language(language), system, True) == 0.0
    assert settings.for_language("en").threshold["icd10cm"] == 0.3  # the coder's own settings are left alone


@pytest.mark.parametrize(
    ("setting", "message"),
    [({"language": "en"}, "the coder learns from 'en' notes; these are es"), ({"use_llm": True}, "whose LLM is off")],
)
def test_refit_refuses_a_coder_it_cannot_refit(tmp_path, corpus, coder_dir, setting, message):
    import shutil

    from icdcoder.errors import InputError

    model = Path(shutil.copytree(coder_dir, tmp_path / "coder"))
    record = json.loads((model / "coder.json").read_text())
    record["settings"].update(setting)
    (model / "coder.json").write_text(json.dumps(record))
    with pytest.raises(InputError, match=message):
        _refit(model, tmp_path / "out", corpus, "train,dev")
    assert not (tmp_path / "out").exists()
