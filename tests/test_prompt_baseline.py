"""The prompting baseline: few-shot prompts in the shared format, any causal LM (tiny random model here)."""

from __future__ import annotations

import pytest
from test_infer_support import make_codiesp


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    from icdcoder.data.codiesp import load_codiesp

    return load_codiesp(make_codiesp(tmp_path_factory.mktemp("codiesp")), "train")


def test_few_shot_prompt_predict_save_load(tmp_path, tiny_lm_dir, documents, ontology):
    import torch

    from icdcoder.baselines.prompt import PromptPredictor, PromptSettings
    from icdcoder.registry import predictor_class

    torch.set_num_threads(1)
    assert predictor_class("prompt") is PromptPredictor
    predictor = PromptPredictor(PromptSettings(model=str(tiny_lm_dir), shots=2, max_new_tokens=8, batch_size=8))
    predictor._ontology = ontology
    report = predictor.fit(documents)
    assert report.extra["shots"] == 2
    assert all("Answer:\n" in shot and shot.split("Answer:\n", 1)[1].strip() for shot in predictor.shot_texts)
    prompt = predictor._prompt("dolor torácico")
    assert prompt.startswith(predictor.shot_texts[0]) and prompt.endswith("Answer:\n")

    predictions = predictor.predict(documents)
    assert [p.doc_id for p in predictions] == [d.id for d in documents]
    texts = {d.id: d.text for d in documents}
    for prediction in predictions:  # a random model mostly writes garbage: whatever survives must be valid
        for code in prediction.codes:
            assert ontology.is_valid(code.code, code.system)
            assert all(0 <= e.start < e.end <= len(texts[prediction.doc_id]) for e in code.evidence)

    predictor.save(tmp_path / "prompt")
    loaded = PromptPredictor.load(tmp_path / "prompt")
    assert loaded.shot_texts == predictor.shot_texts and loaded.settings == predictor.settings


def test_prompt_with_candidates_shows_them(tiny_lm_dir, documents, ontology):
    from icdcoder.baselines.prompt import PromptPredictor, PromptSettings

    predictor = PromptPredictor(PromptSettings(model=str(tiny_lm_dir), shots=0, candidates_k=3))
    predictor._ontology = ontology
    predictor.fit(documents)
    prompt = predictor._prompt("infección urinaria")
    assert "Candidates:\nN39.0" in prompt
