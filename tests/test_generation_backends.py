"""Which generation backend a coder uses, and the vLLM backend's plumbing.

No GPU and no vLLM here: a stand-in ``vllm`` module with the calls the backend makes (``LLM(model=...)``,
``SamplingParams(...)``, ``LLM.generate``) checks that the coder hands vLLM its merged weights and turns vLLM's
outputs into the same answers, confidences and evidence as the HF backend. It cannot check vLLM itself."""

from __future__ import annotations

import importlib.machinery
import math
import sys
import types
from pathlib import Path

import pytest
from test_infer_support import NOTES


class _Logprob:
    def __init__(self, logprob: float, decoded_token: str):
        self.logprob = logprob
        self.decoded_token = decoded_token


class _FakeLLM:
    """Answers every prompt with one line naming I10 and a quote of the note, each token at log-prob -0.5."""

    loaded_from: list[set[str]] = []
    answer = ["I10", " |", " hipertensión", " arterial", "\n"]

    def __init__(self, model: str):
        self.loaded_from.append({path.name for path in Path(model).iterdir()})

    def generate(self, prompts, params, use_tqdm=False):
        assert params.kwargs["temperature"] == 0.0 and params.kwargs["logprobs"] == 0
        completion = types.SimpleNamespace(
            text="".join(self.answer),
            token_ids=list(range(len(self.answer))),
            logprobs=[{i: _Logprob(-0.5, piece)} for i, piece in enumerate(self.answer)],
        )
        return [types.SimpleNamespace(outputs=[completion]) for _ in prompts]


class _FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM, module.SamplingParams = _FakeLLM, _FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    _FakeLLM.loaded_from.clear()
    return module


def test_pick_backend_without_vllm(monkeypatch):
    from icdcoder.errors import InputError
    from icdcoder.models import generation

    monkeypatch.setattr(generation, "vllm_available", lambda: False)
    assert generation.pick_backend("auto") == "hf" and generation.pick_backend("hf") == "hf"
    with pytest.raises(InputError, match="vllm package is not installed"):
        generation.pick_backend("vllm")


def test_pick_backend_with_vllm_and_a_gpu(monkeypatch, fake_vllm):
    import torch

    from icdcoder.errors import InputError
    from icdcoder.models import generation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert generation.pick_backend("auto") == "vllm"
    assert generation.pick_backend("auto", constrained=True) == "hf"  # the trie constraint is a transformers processor
    assert generation.pick_backend("hf") == "hf"
    with pytest.raises(InputError, match="constrained decoding runs on the hf backend only"):
        generation.pick_backend("vllm", constrained=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert generation.pick_backend("auto") == "hf" and generation.pick_backend("vllm") == "vllm"


def test_coder_on_the_vllm_backend_codes_as_on_hf(tiny_lm_dir, fake_vllm, ontology, tmp_path):
    import torch
    from test_infer_support import make_codiesp

    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.settings import CoderSettings
    from icdcoder.models.generation import HFGenerator, VLLMGenerator
    from icdcoder.models.loading import load_causal_lm
    from icdcoder.train.data import fit_retriever

    torch.set_num_threads(1)
    model, tokenizer = load_causal_lm(str(tiny_lm_dir))
    notes = load_codiesp(make_codiesp(tmp_path / "codiesp"), "train")
    retriever = fit_retriever(notes, ontology)
    settings = CoderSettings(
        backend="vllm",
        llm_weight=1.0,
        retrieval_weight=0.0,
        threshold={"icd10cm": 0.0, "icd10pcs": 0.0},
        max_new_tokens=8,
    )
    coder = SpanPredictor(settings).attach(model, tokenizer, retriever, ontology=ontology)
    note = next(document for document in notes if document.text == NOTES[0][1])
    (prediction,) = coder.predict([note])
    assert isinstance(coder.signals["llm"].generator(coder), VLLMGenerator)
    assert {"config.json", "tokenizer.json"} <= _FakeLLM.loaded_from[0]  # vLLM read the weights the coder holds
    (hypertension,) = [code for code in prediction.codes if code.code == "I10"]
    assert hypertension.score == pytest.approx(math.exp(-0.5), abs=1e-6)  # the line's mean log-prob, as HF computes it
    assert note.text[hypertension.evidence[0].start : hypertension.evidence[0].end] == "hipertensión arterial"
    hf = SpanPredictor(settings.model_copy(update={"backend": "hf"})).attach(
        model, tokenizer, retriever, ontology=ontology
    )
    assert isinstance(hf.signals["llm"].generator(hf), HFGenerator)
