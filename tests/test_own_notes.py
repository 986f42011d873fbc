"""Training and tuning on your own notes as JSONL (MIMIC, MDACE, an exported CodiEsp split): the same coder as from a
CodiEsp folder, and one-line errors for notes the span coder cannot learn from."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_infer_support import make_codiesp

REPO = Path(__file__).resolve().parent.parent


def _in_process(*args: str):
    from typer.testing import CliRunner

    from icdcoder.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _icdcoder(*args: str) -> subprocess.CompletedProcess:
    """The real command line in a fresh process, where the one-line error handling matters."""
    return subprocess.run([sys.executable, "-m", "icdcoder.cli", *args], capture_output=True, text=True, cwd=REPO)


def _summary(result) -> dict:
    assert result.exit_code == 0, result.output[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_codiesp(tmp_path_factory.mktemp("codiesp"), english=True)


@pytest.fixture(scope="module")
def exported(corpus, tmp_path_factory) -> dict[str, Path]:
    """The corpus's English notes (with their projected evidence) as the JSONL a user brings."""
    folder = tmp_path_factory.mktemp("jsonl")
    paths = {split: folder / f"{split}_en.jsonl" for split in ("train", "dev")}
    for split, path in paths.items():
        _summary(
            _in_process(
                "data",
                "export",
                "codiesp",
                "--data-dir",
                str(corpus),
                "--split",
                split,
                "--lang",
                "en",
                "--out",
                str(path),
                "--quiet",
            )
        )
    return paths


@pytest.fixture(scope="module")
def coder_dir(corpus, ontology, tmp_path_factory) -> Path:
    """A retrieval-only coder folder (no LLM): what `train lexicons` and `predict tune` work on."""
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.settings import CoderSettings
    from icdcoder.train.data import fit_retriever

    folder = tmp_path_factory.mktemp("coder")
    retriever = fit_retriever(load_codiesp(corpus, "train"), ontology)
    SpanPredictor(CoderSettings(use_llm=False)).attach(None, None, retriever, ontology=ontology).save(folder)
    return folder


def _copy(coder_dir: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(coder_dir, tmp_path / name))


def _saved_lexicons(folder: Path) -> dict[str, str]:
    files = sorted(path for path in folder.rglob("*") if path.is_file() and path.parent.name.startswith("lexicon"))
    files += [folder / name for name in ("concepts.json", "quantities.json") if (folder / name).is_file()]
    return {
        str(path.relative_to(folder)): gzip.decompress(path.read_bytes()).decode()
        if path.suffix == ".gz"
        else path.read_text()
        for path in files
    }


def test_lexicons_from_jsonl_equal_those_from_the_codiesp_folder(tmp_path, corpus, exported, coder_dir):
    from_folder, from_jsonl = _copy(coder_dir, tmp_path, "folder"), _copy(coder_dir, tmp_path, "jsonl")
    by_folder = _summary(
        _in_process("train", "lexicons", "--model", str(from_folder), "--data-dir", str(corpus), "--lang", "en")
    )
    by_jsonl = _summary(
        _in_process("train", "lexicons", "--model", str(from_jsonl), "--jsonl", str(exported["train"]), "--lang", "en")
    )
    assert by_jsonl["surface_forms"]["english_lexicon"] > 0
    assert {**by_folder, "model": ""} == {**by_jsonl, "model": ""}
    saved = _saved_lexicons(from_jsonl)
    assert "lexicon_en/surface_forms.json.gz" in saved and saved == _saved_lexicons(from_folder)


def test_tuning_on_jsonl_picks_what_tuning_on_the_split_picks(tmp_path, corpus, exported, coder_dir):
    on_split = _summary(
        _in_process(
            "predict",
            "tune",
            "--model",
            str(_copy(coder_dir, tmp_path, "a")),
            "--data-dir",
            str(corpus),
            "--split",
            "dev",
            "--lang",
            "en",
        )
    )
    on_jsonl = _summary(
        _in_process(
            "predict",
            "tune",
            "--model",
            str(_copy(coder_dir, tmp_path, "b")),
            "--jsonl",
            str(exported["dev"]),
            "--lang",
            "en",
        )
    )
    assert on_jsonl["jsonl"] == str(exported["dev"]) and "split" not in on_jsonl
    assert on_jsonl["documents"] == on_split["documents"] > 0 and on_jsonl["segments"] == on_split["segments"]
    assert on_jsonl["best_settings"] == on_split["best_settings"]


def test_sft_trains_a_coder_from_jsonl(tmp_path, tiny_lm_dir, exported, ontology):
    from icdcoder.config import load_config
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.train.coder_folder import train_coder
    from icdcoder.train.config import SftConfig

    overrides = {
        "backbone": str(tiny_lm_dir),
        "output_dir": str(tmp_path / "run"),
        "max_steps": 1,
        "data": {"documents_jsonl": str(exported["train"]), "lang": "en"},
    }
    report = train_coder(
        load_config(REPO / "configs/sft/smoke.yaml", SftConfig, overrides=overrides), ontology=ontology
    )
    assert report.train_tokens > 0
    coder = SpanPredictor.load(tmp_path / "run")
    assert (
        coder.model is not None
        and coder.signals["english_lexicon"].index is not None
        and coder.signals["lexicon"].index is None
    )  # English notes


def test_notes_without_evidence_build_lexicons_and_teach_the_llm_only_with_silver_evidence(
    tmp_path, tiny_lm_dir, exported, coder_dir, ontology
):
    """Codes without offsets (MIMIC's) still weigh the ontology terms a note matches; the answer format quotes evidence,
    so they make SFT examples, with spans or whole notes, only once evidence is located for them."""
    from icdcoder.config import load_config
    from icdcoder.data.schema import load_documents, save_documents
    from icdcoder.errors import InputError
    from icdcoder.train.coder_folder import train_coder
    from icdcoder.train.config import SftConfig

    bare = tmp_path / "no_evidence.jsonl"
    save_documents(
        bare,
        [
            doc.model_copy(update={"codes": tuple(gold.model_copy(update={"evidence": ()}) for gold in doc.codes)})
            for doc in load_documents(exported["train"])
        ],
    )
    lexicons = _summary(
        _in_process(
            "train",
            "lexicons",
            "--model",
            str(_copy(coder_dir, tmp_path, "coder")),
            "--jsonl",
            str(bare),
            "--lang",
            "en",
        )
    )
    assert lexicons["surface_forms"]["english_lexicon"] > 0 and lexicons["concepts_counted"] > 0
    for document_ratio in (0.0, 1.0):
        overrides = {
            "backbone": str(tiny_lm_dir),
            "output_dir": str(tmp_path / "run"),
            "max_steps": 1,
            "data": {"documents_jsonl": str(bare), "lang": "en", "document_ratio": document_ratio},
        }
        with pytest.raises(InputError, match="no_evidence.jsonl: no training example carries a code"):
            train_coder(load_config(REPO / "configs/sft/smoke.yaml", SftConfig, overrides=overrides), ontology=ontology)
    overrides["data"] = {"documents_jsonl": str(bare), "lang": "en", "silver_evidence": True}
    train_coder(load_config(REPO / "configs/sft/smoke.yaml", SftConfig, overrides=overrides), ontology=ontology)
    meta = json.loads((tmp_path / "run" / "run_meta.json").read_text())
    assert meta["examples_by_provenance"]["span"] > 0


def test_a_baseline_trains_on_jsonl_and_codes_jsonl(tmp_path, exported):
    model = tmp_path / "dictionary"
    _summary(
        _in_process(
            "train",
            "baseline",
            "dictionary",
            "--train-jsonl",
            str(exported["train"]),
            "--tune-jsonl",
            str(exported["dev"]),
            "--lang",
            "en",
            "--out",
            str(model),
        )
    )
    pred = tmp_path / "pred.jsonl"
    _summary(
        _in_process(
            "predict",
            "jsonl",
            "--input",
            str(exported["dev"]),
            "--out",
            str(pred),
            "--model",
            str(model),
            "--system",
            "dictionary",
        )
    )
    scored = json.loads(_in_process("evaluate", "jsonl", "--gold", str(exported["dev"]), "--pred", str(pred)).stdout)
    assert scored["by_system"]["icd10cm"]["micro_f1"] > 0.5  # dev repeats train in the tiny corpus


def test_notes_the_span_coder_cannot_learn_from_are_one_line_errors(tmp_path, coder_dir):
    from icdcoder.data.schema import Document, GoldCode, save_documents

    icd9 = tmp_path / "icd9.jsonl"
    save_documents(
        icd9,
        [
            Document(
                id="a", text="Essential hypertension.", language="en", codes=(GoldCode(code="401.9", system="icd9cm"),)
            )
        ],
    )
    uncoded = tmp_path / "uncoded.jsonl"
    save_documents(uncoded, [Document(id="a", text="Essential hypertension.", language="en")])
    model = str(_copy(coder_dir, tmp_path, "coder"))
    cases = [
        (
            ("train", "lexicons", "--model", model, "--jsonl", str(icd9), "--lang", "en"),
            "icd9.jsonl: no training note carries an ICD-10-CM",
        ),
        (
            ("predict", "tune", "--model", model, "--jsonl", str(uncoded), "--lang", "en"),
            "uncoded.jsonl: no note carries gold codes",
        ),
        (("predict", "tune", "--model", model), "give --data-dir (a CodiEsp folder) or --jsonl"),
        (("predict", "tune", "--model", model, "--data-dir", str(tmp_path), "--jsonl", str(uncoded)), "not both"),
    ]
    for args, message in cases:
        result = _icdcoder(*args)
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
        assert len(result.stderr.strip().splitlines()) == 1
