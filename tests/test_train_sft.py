"""SFT on the tiny random model: runs, writes run_meta.json with a token count, resumes, saves a loadable coder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_infer_support import make_codiesp

REPO = Path(__file__).resolve().parent.parent


def _smoke_config(tmp_path: Path, tiny_lm_dir: Path, corpus: Path, **extra):
    from icdcoder.config import load_config
    from icdcoder.train.config import SftConfig

    overrides = {
        "backbone": str(tiny_lm_dir),
        "output_dir": str(tmp_path / "run"),
        "data": {"data_dir": str(corpus)},
        **extra,
    }
    return load_config(REPO / "configs/sft/smoke.yaml", SftConfig, overrides=overrides)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_codiesp(tmp_path_factory.mktemp("codiesp"))


def test_smoke_sft_writes_run_meta_and_a_loadable_coder(tmp_path, tiny_lm_dir, corpus, ontology):
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.train.coder_folder import train_coder

    config = _smoke_config(tmp_path, tiny_lm_dir, corpus)
    report = train_coder(config, ontology=ontology)
    run = tmp_path / "run"
    meta = json.loads((run / "run_meta.json").read_text())
    assert meta["train_tokens"] > 0 and meta["train_tokens"] == report.train_tokens
    assert meta["steps"] == 4
    assert 0 < meta["steps_seconds"] <= meta["wall_seconds"]
    assert sum(meta["examples_by_provenance"].values()) == meta["examples"] > 0
    assert 0 <= meta["examples_cut"] <= meta["examples"]
    assert meta["config"]["backbone"] == str(tiny_lm_dir)
    adapter = json.loads((run / "model" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_lm_dir)
    assert (run / "retriever" / "retriever.json").is_file() and (run / "coder.json").is_file()
    coder = SpanPredictor.load(run)
    assert coder.model is not None and coder.retriever is not None
    assert (
        coder.signals["lexicon"].index is not None and coder.settings.language == "es"
    )  # the run's lexicon travels with the coder


def test_resume_continues_from_the_last_checkpoint(tmp_path, tiny_lm_dir, corpus, ontology):
    from icdcoder.train.coder_folder import train_coder

    first = _smoke_config(tmp_path, tiny_lm_dir, corpus, max_steps=2)
    train_coder(first, ontology=ontology)
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir()
    second = _smoke_config(tmp_path, tiny_lm_dir, corpus, max_steps=4)
    train_coder(second, resume=True, ontology=ontology)
    state = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    meta = json.loads((tmp_path / "run" / "run_meta.json").read_text())
    assert meta["steps"] == 4
    assert meta["resumed_from"].endswith("checkpoint-2") and meta["steps_this_run"] == 2


def test_cli_overrides_and_bad_config_errors(tmp_path, tiny_lm_dir, corpus):
    from icdcoder.errors import InputError
    from icdcoder.train.cli import parse_overrides

    assert parse_overrides(["data.candidates_k=3", "lora.r=4", "backbone=x"]) == {
        "data": {"candidates_k": 3},
        "lora": {"r": 4},
        "backbone": "x",
    }
    with pytest.raises(InputError, match="--set"):
        parse_overrides(["novalue"])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "icdcoder.cli",
            "train",
            "sft",
            "--config",
            str(REPO / "configs/sft/smoke.yaml"),
            "--set",
            "lora.rank=3",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "lora.rank" in result.stderr and "Traceback" not in result.stderr


def test_export_turns_a_checkpoint_into_a_loadable_coder(tmp_path, tiny_lm_dir, corpus, ontology):
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.train.coder_folder import export_checkpoint, train_coder

    config = _smoke_config(tmp_path, tiny_lm_dir, corpus, max_steps=2)
    train_coder(config, ontology=ontology)
    exported = export_checkpoint(
        config, tmp_path / "run" / "checkpoints" / "checkpoint-2", tmp_path / "exported", ontology=ontology
    )
    adapter = json.loads((exported / "model" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_lm_dir)
    coder = SpanPredictor.load(exported)
    assert coder.model is not None and coder.retriever is not None
    meta = json.loads((exported / "run_meta.json").read_text())
    assert meta["steps"] == 2 and meta["train_tokens"] > 0 and meta["wall_seconds"] is None


def test_examples_cut_at_max_length_are_counted_unless_packed():
    from datasets import Dataset

    from icdcoder.train.sft import _count_cut

    tokenised = Dataset.from_dict({"input_ids": [[1, 2, 3], [1, 2, 3, 4, 5], [5, 4, 3, 2, 1]]})
    assert _count_cut(tokenised, 5) == 2
    assert _count_cut(tokenised, 6) == 0
    assert _count_cut(tokenised, None) == 0  # packed: every row fills max_length by design


def test_a_document_model_trained_without_candidates_still_codes_notes(tmp_path, tiny_lm_dir, corpus, ontology):
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.train.coder_folder import train_coder

    data = {"data_dir": str(corpus), "max_documents": 4, "spans": False, "document_ratio": 0.5, "candidates_k": 0}
    train_coder(_smoke_config(tmp_path, tiny_lm_dir, corpus, max_steps=1, data=data), ontology=ontology)
    coder = SpanPredictor.load(tmp_path / "run")
    assert coder.retriever is not None
    prediction = coder.predict(load_codiesp(corpus, "train")[:1])[0]
    assert prediction.doc_id


def test_auto_bf16_on_cpu_follows_the_cpu_flags(tmp_path, monkeypatch):
    from icdcoder.models import loading
    from icdcoder.models.loading import cpu_has_native_bf16, cpu_inference_dtype

    native = tmp_path / "native"
    native.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    emulated = tmp_path / "emulated"
    emulated.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert cpu_has_native_bf16(native)
    assert not cpu_has_native_bf16(emulated)
    assert not cpu_has_native_bf16(tmp_path / "missing")
    # inference: "auto" follows the same flags; an explicit dtype is kept
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)
    assert cpu_inference_dtype("auto") == "float32" and cpu_inference_dtype("bfloat16") == "bfloat16"
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    assert cpu_inference_dtype("auto") == "bfloat16" and cpu_inference_dtype("float32") == "float32"
