"""``icdcoder code`` and ``icdcoder predict codiesp`` on a tiny coder folder (tiny random model + made-up corpus)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_infer_support import NOTES, make_codiesp

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_codiesp(tmp_path_factory.mktemp("codiesp"))


@pytest.fixture(scope="module")
def coder_dir(tmp_path_factory, tiny_lm_dir, corpus, ontology) -> Path:
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.settings import CoderSettings
    from icdcoder.models.loading import load_causal_lm
    from icdcoder.train.data import fit_retriever

    model, tokenizer = load_causal_lm(str(tiny_lm_dir))
    retriever = fit_retriever(load_codiesp(corpus, "train"), ontology)
    settings = CoderSettings(
        batch_size=8,
        max_new_tokens=8,
        threads=1,
        llm_weight=0.0,
        surface_bonus=1.0,
        threshold={"icd10cm": 0.5, "icd10pcs": 0.5},
    )
    folder = tmp_path_factory.mktemp("coder")
    SpanPredictor(settings).attach(model, tokenizer, retriever, ontology=ontology).save(folder)
    return folder


def _icdcoder(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """The real command line in a fresh process (used where the one-line error handling matters)."""
    return subprocess.run(
        [sys.executable, "-m", "icdcoder.cli", *args], capture_output=True, text=True, cwd=REPO, input=stdin
    )


def _in_process(*args: str, stdin: str | None = None):
    """The same commands in this process (no second torch import: keeps the file fast)."""
    from typer.testing import CliRunner

    from icdcoder.cli import app

    return CliRunner().invoke(app, list(args), input=stdin, catch_exceptions=False)


def test_code_prints_json_with_evidence_inside_the_note(tmp_path, coder_dir):
    note = tmp_path / "note.txt"
    note.write_text(NOTES[0][1], encoding="utf-8")
    result = _in_process("code", str(note), "--model", str(coder_dir), "--json")
    assert result.exit_code == 0, result.output[-2000:]
    assert result.stdout.startswith("{") and len(result.stdout.splitlines()) == 1  # progress goes to stderr
    payload = json.loads(result.stdout)
    codes = {row["code"]: row for row in payload["codes"]}
    assert "I10" in codes and codes["I10"]["description"]
    # the record `predict jsonl` writes (plus descriptions): `evaluate jsonl` reads it back
    from icdcoder.infer.records import prediction_from_record

    read_back = prediction_from_record(payload, "stdout", 1)
    assert [(c.code, c.score) for c in read_back.ranked()] == [(row["code"], row["score"]) for row in payload["codes"]]
    for row in payload["codes"]:
        for evidence in row["evidence"]:
            assert NOTES[0][1][evidence["start"] : evidence["end"]] == evidence["quote"]


def test_code_reads_stdin_and_prints_a_table(coder_dir):
    result = _in_process("code", "-", "--model", str(coder_dir), stdin=NOTES[1][1])
    assert result.exit_code == 0, result.output[-2000:]
    assert "N39.0" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "file not found"), (b"   \n", "empty"), (b"\xff\xfe bad", "UTF-8")],
)
def test_code_bad_input_is_one_line(tmp_path, coder_dir, content, message):
    note = tmp_path / "note.txt"
    if content is not None:
        note.write_bytes(content)
    result = _icdcoder("code", str(note), "--model", str(coder_dir))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_predict_codiesp_writes_the_three_files(tmp_path, corpus, coder_dir):
    out = tmp_path / "pred"
    result = _in_process(
        "predict",
        "codiesp",
        "--data-dir",
        str(corpus),
        "--split",
        "dev",
        "--out-dir",
        str(out),
        "--model",
        str(coder_dir),
    )
    assert result.exit_code == 0, result.output[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["documents"] == len(NOTES)
    for name in ("D.tsv", "P.tsv", "X.tsv"):
        assert (out / name).is_file()
    d_rows = (out / "D.tsv").read_text().splitlines()
    assert d_rows and all(len(row.split("\t")) == 2 for row in d_rows)
    assert "S0001-1\ti10" in d_rows
    scored = _in_process("evaluate", "codiesp", "--data-dir", str(corpus), "--split", "dev", "--pred-dir", str(out))
    assert scored.exit_code == 0, scored.output[-2000:]
    assert json.loads(scored.stdout)["D"]["micro_f1"] > 0.5


def _write_fingerprint(partial: Path, corpus: Path, coder_dir: Path) -> None:
    """The fingerprint ``predict codiesp`` records for the dev split with the default settings."""
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.infer.cli import MAX_NOTE_CHARS, run_fingerprint
    from icdcoder.infer.records import FINGERPRINT_SUFFIX, documents_digest

    documents = load_codiesp(corpus, "dev", language="es", with_translation=True, labelled=False)
    fingerprint = run_fingerprint(
        documents_digest(documents), coder_dir, "span", "codiesp", max_note_chars=MAX_NOTE_CHARS
    )
    partial.with_name(partial.name + FINGERPRINT_SUFFIX).write_text(json.dumps(fingerprint), encoding="utf-8")


def test_predict_codiesp_resumes_an_interrupted_run(tmp_path, corpus, coder_dir):
    args = ["predict", "codiesp", "--data-dir", str(corpus), "--split", "dev", "--model", str(coder_dir)]
    whole = _in_process(*args, "--out-dir", str(tmp_path / "whole"))
    assert whole.exit_code == 0 and json.loads(whole.stdout.strip().splitlines()[-1])["resumed"] == 0
    first, second, *_ = (tmp_path / "whole" / "predictions.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    (interrupted / "predictions.jsonl.partial").write_text(first + second[:20], encoding="utf-8")  # cut mid-record
    _write_fingerprint(interrupted / "predictions.jsonl.partial", corpus, coder_dir)
    result = _in_process(*args, "--out-dir", str(interrupted))
    assert result.exit_code == 0, result.output[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["resumed"] == 1
    assert not (interrupted / "predictions.jsonl.partial").exists()
    for name in ("D.tsv", "P.tsv", "X.tsv", "predictions.jsonl"):
        assert (interrupted / name).read_text(encoding="utf-8") == (tmp_path / "whole" / name).read_text(
            encoding="utf-8"
        )


def test_predict_codiesp_codes_a_split_without_annotations(tmp_path, corpus, coder_dir):
    import shutil

    unlabelled = tmp_path / "codiesp"
    shutil.copytree(corpus / "dev" / "text_files", unlabelled / "background" / "text_files")
    out = tmp_path / "pred"
    result = _in_process(
        "predict",
        "codiesp",
        "--data-dir",
        str(unlabelled),
        "--split",
        "background",
        "--out-dir",
        str(out),
        "--model",
        str(coder_dir),
    )
    assert result.exit_code == 0, result.output[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["documents"] == len(NOTES)
    assert "S0001-1\ti10" in (out / "D.tsv").read_text().splitlines()
    scored = _icdcoder(
        "evaluate", "codiesp", "--data-dir", str(unlabelled), "--split", "background", "--pred-dir", str(out)
    )
    assert scored.returncode == 2 and "backgroundD.tsv: file not found" in scored.stderr
    exported = tmp_path / "background.jsonl"
    result = _in_process(
        "data",
        "export",
        "codiesp",
        "--data-dir",
        str(unlabelled),
        "--split",
        "background",
        "--no-labels",
        "--out",
        str(exported),
        "--quiet",
    )
    assert result.exit_code == 0, result.output[-2000:]
    assert json.loads(result.stdout) == {"documents": len(NOTES), "codes": 0, "out": str(exported)}


def test_predict_jsonl_then_evaluate_jsonl_score_as_the_codiesp_route_does(tmp_path, corpus, coder_dir):
    exported = tmp_path / "dev.jsonl"
    assert (
        _in_process(
            "data", "export", "codiesp", "--data-dir", str(corpus), "--split", "dev", "--out", str(exported), "--quiet"
        ).exit_code
        == 0
    )
    pred = tmp_path / "pred" / "dev.jsonl"
    result = _in_process("predict", "jsonl", "--input", str(exported), "--out", str(pred), "--model", str(coder_dir))
    assert result.exit_code == 0, result.output[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["coded"] == len(NOTES)
    scored = json.loads(_in_process("evaluate", "jsonl", "--gold", str(exported), "--pred", str(pred)).stdout)
    _in_process(
        "predict",
        "codiesp",
        "--data-dir",
        str(corpus),
        "--split",
        "dev",
        "--out-dir",
        str(tmp_path / "tsv"),
        "--model",
        str(coder_dir),
    )
    official = json.loads(
        _in_process(
            "evaluate", "codiesp", "--data-dir", str(corpus), "--split", "dev", "--pred-dir", str(tmp_path / "tsv")
        ).stdout
    )
    assert official["D"]["micro_f1"] > 0.5
    assert scored["by_system"]["icd10cm"]["micro_f1"] == pytest.approx(official["D"]["micro_f1"])
    assert scored["by_system"]["icd10cm"]["map"] == pytest.approx(official["D"]["map"])


def test_predict_jsonl_takes_notes_without_a_language_and_refuses_bad_lines_in_one_line(tmp_path, coder_dir):
    notes = tmp_path / "notes.jsonl"
    notes.write_text(json.dumps({"id": "a", "text": NOTES[0][1]}, ensure_ascii=False) + "\n", encoding="utf-8")
    pred = tmp_path / "pred.jsonl"
    result = _in_process(
        "predict", "jsonl", "--input", str(notes), "--out", str(pred), "--lang", "es", "--model", str(coder_dir)
    )
    assert result.exit_code == 0, result.output[-2000:]
    (record,) = [json.loads(line) for line in pred.read_text(encoding="utf-8").splitlines()]
    assert record["id"] == "a" and "I10" in {code["code"] for code in record["codes"]}
    notes.write_text('{"id": "a", "text": "x"}\n{"id": "b"}\n', encoding="utf-8")
    failed = _icdcoder(
        "predict", "jsonl", "--input", str(notes), "--out", str(tmp_path / "other.jsonl"), "--model", str(coder_dir)
    )
    assert failed.returncode == 2 and f"{notes}:2: field 'text'" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1 and not (tmp_path / "other.jsonl").exists()
    notes.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', encoding="utf-8")
    twice = _icdcoder(
        "predict", "jsonl", "--input", str(notes), "--out", str(tmp_path / "other.jsonl"), "--model", str(coder_dir)
    )
    assert twice.returncode == 2 and "note id 'a' occurs twice" in twice.stderr


def test_predict_with_an_unknown_system_or_missing_model_is_one_line(tmp_path, corpus, coder_dir):
    result = _icdcoder(
        "predict",
        "codiesp",
        "--data-dir",
        str(corpus),
        "--split",
        "dev",
        "--out-dir",
        str(tmp_path),
        "--model",
        str(coder_dir),
        "--system",
        "nope",
    )
    assert result.returncode == 2 and "unknown system" in result.stderr
    result = _icdcoder("code", "-", "--model", str(tmp_path / "missing"), stdin="dolor")
    assert result.returncode == 2 and "model folder not found" in result.stderr


def test_train_lexicons_then_code_reads_the_translation(tmp_path, coder_dir):
    import shutil

    from test_infer_support import write_translations

    write_translations(make_codiesp(tmp_path / "codiesp"), "train")
    model = tmp_path / "coder"
    shutil.copytree(coder_dir, model)
    built = _in_process("train", "lexicons", "--model", str(model), "--data-dir", str(tmp_path / "codiesp"))
    assert built.exit_code == 0, built.output[-2000:]
    assert set(json.loads(built.stdout)["surface_forms"]) == {"lexicon", "english_lexicon"}
    assert json.loads(built.stdout)["concepts_counted"] > 0 and (model / "concepts.json").is_file()
    assert json.loads(built.stdout)["value_templates"]["es"] > 0 and (model / "quantities.json").is_file()  # "tipo 2"
    settings = json.loads((model / "coder.json").read_text())
    settings["settings"].update(ontology_weight=1.0, retrieval_weight=0.0, threshold={"icd10cm": 0.1, "icd10pcs": 0.1})
    (model / "coder.json").write_text(json.dumps(settings))
    note, english = tmp_path / "note.txt", tmp_path / "note_en.txt"
    note.write_text("Paciente con fiebre alta.", encoding="utf-8")
    english.write_text("Patient with high fever.", encoding="utf-8")
    plain = json.loads(_in_process("code", str(note), "--model", str(model), "--json").stdout)
    assert "R50.9" not in {row["code"] for row in plain["codes"]}
    read = json.loads(
        _in_process("code", str(note), "--model", str(model), "--translation", str(english), "--json").stdout
    )
    (fever,) = [row for row in read["codes"] if row["code"] == "R50.9"]
    assert fever["evidence"] == []  # "fever" is in the translation: the evidence is the note's sentence it translates
    assert fever["sentence_evidence"] == [{"start": 0, "end": 25, "quote": "Paciente con fiebre alta.", "traits": []}]
    table = _in_process("code", str(note), "--model", str(model), "--translation", str(english))
    assert "0-25 sentence" in table.stdout


def test_predict_tune_records_the_tuning_and_counts_dropped_answers(tmp_path, corpus, coder_dir):
    import shutil

    model = tmp_path / "coder"
    shutil.copytree(coder_dir, model)
    cache = tmp_path / "stage1.jsonl"
    args = (
        "predict",
        "tune",
        "--model",
        str(model),
        "--data-dir",
        str(corpus),
        "--split",
        "dev",
        "--cache",
        str(cache),
        "--dtype",
        "float32",
    )
    result = _in_process(*args)
    assert result.exit_code == 0, result.output[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["documents"] == len(NOTES) and summary["llm_segments"] > 0
    assert summary["dtype"] == "float32"
    assert isinstance(summary["dropped"], dict) and set(summary["llm_alone"]) >= {"D_f1", "D_map", "P_f1", "P_map"}
    record = json.loads((model / "coder.json").read_text())
    assert record["tuning"]["table"] and record["settings"]["threshold"] == summary["best_settings"]["threshold"]
    assert record["settings"]["dtype"] == "float32"
    assert len(cache.read_text().splitlines()) == len(NOTES)
    again = json.loads(_in_process(*args).stdout.strip().splitlines()[-1])  # from the cache: same answers, same tuning
    assert again["best_settings"] == summary["best_settings"] and again["dropped"] == summary["dropped"]


def test_predict_tune_in_scoring_mode_scores_candidates_and_saves_the_mode(tmp_path, corpus, coder_dir):
    import shutil

    model = tmp_path / "coder"
    shutil.copytree(coder_dir, model)
    cache = tmp_path / "stage1.jsonl"
    args = (
        "predict",
        "tune",
        "--model",
        str(model),
        "--data-dir",
        str(corpus),
        "--split",
        "dev",
        "--cache",
        str(cache),
    )
    result = _in_process(*args, "--llm-mode", "score")
    assert result.exit_code == 0, result.output[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["llm_mode"] == "score" and summary["llm_segments"] > 0
    assert summary["dropped"] == {}  # nothing is written, so no answer line can be dropped
    scored = [item for line in cache.read_text().splitlines() for item in json.loads(line)["scored"]]
    assert (
        sum(item["signals"].get("llm", 0.0) > 0 for item in scored) >= summary["llm_segments"]
    )  # each shown candidate gets a probability
    assert json.loads((model / "coder.json").read_text())["settings"]["llm_mode"] == "score"


def test_predict_tune_no_llm_skips_the_model_and_saves_the_choice(tmp_path, corpus, coder_dir):
    import shutil

    model = tmp_path / "coder"
    shutil.copytree(coder_dir, model)
    result = _in_process(
        "predict",
        "tune",
        "--model",
        str(model),
        "--data-dir",
        str(corpus),
        "--split",
        "dev",
        "--no-llm",
        "--objective",
        "f1",
    )
    assert result.exit_code == 0, result.output[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["llm_segments"] == 0 and "llm_alone" not in summary and summary["dtype"] is None
    settings = json.loads((model / "coder.json").read_text())["settings"]
    assert settings["use_llm"] is False and settings["tuning_objective"] == "f1"  # re-tuning keeps the objective


def test_predict_tune_rejects_an_unknown_precision(tmp_path, corpus, coder_dir):
    from icdcoder.errors import InputError

    with pytest.raises(InputError, match="--dtype must be auto, float32 or bfloat16"):
        _in_process(
            "predict", "tune", "--model", str(coder_dir), "--data-dir", str(corpus), "--split", "dev", "--dtype", "fp8"
        )
    with pytest.raises(InputError, match="--llm-mode must be generate or score"):
        _in_process(
            "predict",
            "tune",
            "--model",
            str(coder_dir),
            "--data-dir",
            str(corpus),
            "--split",
            "dev",
            "--llm-mode",
            "rank",
        )
    with pytest.raises(InputError, match="--objective must be f1\\+map or f1"):
        _in_process(
            "predict",
            "tune",
            "--model",
            str(coder_dir),
            "--data-dir",
            str(corpus),
            "--split",
            "dev",
            "--objective",
            "map",
        )


def test_coding_with_the_llm_off_does_not_import_torch():
    script = (
        "import sys\n"
        "from icdcoder.data.schema import Document\n"
        "from icdcoder.infer.cli import DEFAULT_MODEL_DIR\n"
        "from icdcoder.infer.coder import SpanPredictor\n"
        "coder = SpanPredictor.load(DEFAULT_MODEL_DIR)\n"
        "assert not coder.settings.use_llm and coder.settings.threads\n"
        "coder.predict([Document(id='n', text='Paciente con fiebre.', language='es')])\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"  # importing torch costs seconds that a coder without an LLM does not need


def test_the_readme_sample_output_is_what_make_run_prints():
    """Each row of the README's sample table (code, score, assertion, first evidence span) is the shipped coder's."""
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("```text\n", 1)[1].split("```", 1)[0]
    rows = re.findall(r"^ (\S+) .*? (\d\.\d\d)\s+(\w+)\s+(\d+)-(\d+) \"", block, flags=re.MULTILINE)
    assert len(rows) == 3
    sample = Path(__file__).resolve().parent.parent / "examples" / "sample_note.txt"
    result = _in_process("code", str(sample), "--json")
    coded = {row["code"]: row for row in json.loads(result.stdout)["codes"]}
    for code, score, assertion, start, end in rows:
        found = coded[code]
        first = found["evidence"][0]
        assert (f"{found['score']:.2f}", found["assertion"], first["start"], first["end"]) == (
            score,
            assertion,
            int(start),
            int(end),
        )
