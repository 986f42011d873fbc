"""The span-level LLM verifier (issue 28): labels, prompts, scoring, training — on a tiny random model."""

from __future__ import annotations

from pathlib import Path

import pytest

from icdcoder.data.schema import Document, Evidence, GoldCode
from icdcoder.errors import InputError
from icdcoder.models.verifier import (
    VerifierScorer,
    build_verifier_prompt,
    candidate_prompt_ids,
    fused_with_verdict,
    load_verifier,
)
from icdcoder.predictor import CodePrediction, DocumentPrediction
from icdcoder.train.verifier import (
    ScoreBand,
    VerifierCandidate,
    VerifierConfig,
    candidates_of,
    evidence_window,
    in_band,
    label_kind,
    load_verifier_config,
    read_candidates,
    train_verifier,
    training_examples,
    write_candidates,
)

REPO = Path(__file__).resolve().parent.parent
NOTE = "Paciente de 60 años. Presenta infarto agudo de miocardio inferior. Se realiza TAC de tórax sin hallazgos."


def candidate(
    code: str = "I21.19",
    system: str = "icd10cm",
    score: float = 0.2,
    kind: str | None = "positive",
    sentence: str = NOTE,
) -> VerifierCandidate:
    start = sentence.find("infarto")
    return VerifierCandidate(
        "d1", code, system, score, sentence, start, start + 7 if start >= 0 else -1, siblings=["I21.3"], kind=kind
    )


@pytest.fixture(scope="module")
def tiny_scorer(tiny_lm_dir):
    from icdcoder.models.loading import load_causal_lm

    model, tokenizer = load_causal_lm(str(tiny_lm_dir))
    return VerifierScorer(model.eval(), tokenizer, batch_size=4)


def test_label_kinds_tell_positives_from_hard_negatives():
    gold = {("I21.19", "icd10cm"), ("N18.30", "icd10cm"), ("BW03ZZZ", "icd10pcs")}
    assert label_kind("I21.19", "icd10cm", gold) == "positive"
    assert label_kind("I21.1", "icd10cm", gold) == "specificity"  # ancestor of a gold code
    assert label_kind("N18.9", "icd10cm", gold) == "sibling"  # same category, other branch
    assert label_kind("E11.9", "icd10cm", gold) == "negative"
    assert label_kind("BW03ZZZ", "icd10cm", gold) == "negative"  # systems are not mixed


def test_evidence_window_keeps_the_span_inside_its_sentence():
    start = NOTE.find("infarto")
    window, span_start, span_end = evidence_window(NOTE, start, start + len("infarto agudo"), max_words=6)
    assert window[span_start:span_end] == "infarto agudo"
    assert "Paciente" not in window and "TAC" not in window  # other sentences are left out
    assert len(window.split()) <= 6


def test_candidates_of_a_prediction_are_labelled_with_siblings_and_evidence():
    start = NOTE.find("infarto")
    gold = GoldCode(code="I21.19", system="icd10cm", evidence=(Evidence(pieces=((start, start + 30),)),))
    document = Document(id="d1", text=NOTE, language="es", codes=(gold,))
    prediction = DocumentPrediction(
        "d1",
        codes=[
            CodePrediction("I21.19", "icd10cm", 0.4, evidence=[Evidence(pieces=((start, start + 30),))]),
            CodePrediction("I21.3", "icd10cm", 0.2, evidence=[Evidence(pieces=((start, start + 7),))]),
            CodePrediction("Z99.9", "icd10cm", 0.1),  # no evidence: skipped
        ],
    )
    found = candidates_of(document, prediction, max_words=12, labelled=True, trained={("I21.19", "icd10cm")})
    assert [(c.code, c.kind, c.untrained) for c in found] == [("I21.19", "positive", False), ("I21.3", "sibling", True)]
    assert found[1].siblings == ["I21.19"]
    assert found[0].evidence == [[start, start + 30]]
    assert found[0].sentence[found[0].span_start : found[0].span_end] == NOTE[start : start + 30]


def test_band_and_training_examples(tmp_path):
    band = ScoreBand(low={"icd10cm": 0.1}, high={"icd10cm": 0.3})
    pool = [
        candidate(score=s, kind=k)
        for s, k in [(0.05, "positive"), (0.15, "positive"), (0.2, "sibling"), (0.25, "negative"), (0.5, "positive")]
    ]
    assert [c.score for c in in_band(pool, band)] == [0.15, 0.2, 0.25]
    chosen = training_examples(pool, max_examples=2)
    assert sorted(c.kind for c in chosen) == ["positive", "sibling"]  # hard negatives before other negatives
    write_candidates(tmp_path / "c.jsonl", pool)
    assert read_candidates(tmp_path / "c.jsonl") == pool


def test_a_malformed_candidate_line_is_a_one_line_error(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"doc_id": "d1"}\n')
    with pytest.raises(InputError, match="line 1"):
        read_candidates(path)


def test_prompts_stay_within_the_token_bound(tiny_scorer, ontology):
    config = VerifierConfig(max_prompt_tokens=48, sentence_words=200)
    long_sentence = (
        " ".join(["dolor torácico opresivo irradiado"] * 60)
        + " infarto agudo de miocardio "
        + " ".join(["sin cambios"] * 60)
    )
    ids = candidate_prompt_ids(tiny_scorer.tokenizer, candidate(sentence=long_sentence), ontology, config)
    assert ids is not None and len(ids) <= 48
    assert "infarto" in tiny_scorer.tokenizer.decode(ids)  # the evidence survives the cut
    assert build_verifier_prompt("x", "I21.19", "d").endswith("Answer:\n")


class WithBos:
    """A tokenizer that opens every text with its beginning-of-text token, as Gemma's does."""

    def __init__(self, tokenizer):
        self.tokenizer, self.bos_token_id = tokenizer, tokenizer.bos_token_id

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return [self.bos_token_id, *ids] if add_special_tokens else ids


@pytest.mark.parametrize("bound", [32, 48])  # 32: below the shortest prompt, the tail is kept
def test_a_tokenizer_that_opens_with_bos_keeps_it_first_within_the_bound(tiny_scorer, ontology, bound):
    config = VerifierConfig(max_prompt_tokens=bound, sentence_words=200, siblings=0)
    long_sentence = "dolor torácico opresivo " * 40 + "infarto agudo de miocardio"
    long_code = candidate(code="S52.531A", sentence=long_sentence)  # a long title
    plain = candidate_prompt_ids(tiny_scorer.tokenizer, long_code, ontology, config)
    opened = candidate_prompt_ids(WithBos(tiny_scorer.tokenizer), long_code, ontology, config)
    bos = tiny_scorer.tokenizer.bos_token_id
    assert plain is not None and opened is not None
    assert plain[0] != bos and opened[0] == bos
    assert len(opened) <= bound and opened[-3:] == plain[-3:]


def test_scoring_returns_probabilities_and_drops_invented_codes(tiny_scorer, ontology):
    pool = [
        candidate(),
        candidate(code="BW03ZZZ", system="icd10pcs"),
        candidate(code="Q99.999"),
        candidate(code="I21.3"),
    ]
    found = tiny_scorer.score_candidates(pool, ontology, VerifierConfig())
    assert sorted(found.probabilities) == [0, 1, 3]
    assert found.dropped == {"unknown_code": 1}
    assert all(0.0 <= p <= 1.0 for p in found.probabilities.values())


def test_fusing_the_verdict_keeps_the_order_outside_the_band():
    assert fused_with_verdict(0.2, 1.0, 0.5, 0.1, 0.3) == pytest.approx(0.6)
    assert fused_with_verdict(0.2, None, 0.5, 0.1, 0.3) == 0.2  # no verdict: the coder's score
    assert fused_with_verdict(0.35, None, 0.5, 0.1, 0.3) == pytest.approx(0.675)  # above the band: verified
    assert fused_with_verdict(0.05, 0.9, 0.5, 0.1, 0.3) == pytest.approx(0.025)  # below: rejected
    assert fused_with_verdict(0.2, 0.7, 0.0, 0.1, 0.3) == 0.2


def test_training_runs_and_saves_a_loadable_adapter(tiny_lm_dir, ontology, tmp_path):
    config = VerifierConfig(
        backbone=str(tiny_lm_dir),
        batch_size=2,
        max_examples=4,
        output_dir=tmp_path / "adapter",
        threads=1,
        lora={"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    )
    examples = [
        candidate(kind="positive"),
        candidate(code="I21.3", kind="sibling"),
        candidate(code="E11.9", kind="negative"),
    ]
    summary = train_verifier(config, examples, ontology)
    assert summary["steps"] == 2 and summary["examples"] == 3
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert summary["adapter_mb"] < 25
    scorer = load_verifier(str(tmp_path / "adapter"), dtype="float32")
    assert 0.0 <= scorer.score_candidates(examples[:1], ontology, config).probabilities[0] <= 1.0


def test_training_without_labels_is_a_clear_error(tiny_lm_dir, ontology, tmp_path):
    config = VerifierConfig(backbone=str(tiny_lm_dir), output_dir=tmp_path / "adapter")
    with pytest.raises(InputError, match="no labelled"):
        train_verifier(config, [candidate(kind=None)], ontology)


def test_shipped_verifier_configs_validate():
    for path in sorted((REPO / "configs" / "verifier").glob("*.yaml")):
        config = load_verifier_config(path)
        assert config.max_prompt_tokens <= 128


def test_train_verifier_command_trains_on_a_candidate_dump(tiny_lm_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from icdcoder.cli import app

    dump = tmp_path / "train_candidates.jsonl"
    write_candidates(
        dump,
        [candidate(kind="positive"), candidate(code="I21.3", kind="sibling"), candidate(score=0.9, kind="negative")],
    )
    config = tmp_path / "verifier.yaml"
    config.write_text(
        f"backbone: {tiny_lm_dir}\nbatch_size: 2\nthreads: 1\nlora: {{r: 2, alpha: 4, target_modules: [q_proj]}}\noutput_dir: {tmp_path / 'adapter'}\n"
    )
    result = CliRunner().invoke(
        app, ["train", "verifier", "--config", str(config), "--candidates", str(dump)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index('{"examples_by_kind"') :].splitlines()[0])
    assert summary["examples_by_kind"] == {"positive": 1, "sibling": 1}  # the 0.9 candidate lies above the band
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_train_verifier_command_names_a_malformed_config_field(tmp_path, capsys):
    from icdcoder.cli import main

    config = tmp_path / "verifier.yaml"
    config.write_text("max_prompt_tokens: 4\n")
    with pytest.raises(SystemExit) as stopped:
        main(["train", "verifier", "--config", str(config), "--candidates", str(tmp_path / "none.jsonl")])
    assert stopped.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "max_prompt_tokens" in message and "verifier.yaml" in message and len(message.splitlines()) == 1


def test_the_device_follows_what_torch_sees(monkeypatch):
    import torch

    from icdcoder.models.loading import compute_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert compute_device("auto") == "cpu" and compute_device("cpu") == "cpu"
    with pytest.raises(InputError, match="device: cuda was asked for"):
        compute_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert compute_device("auto") == "cuda"


def test_a_gpu_verifier_config_asks_for_cuda_and_trains_every_band_example():
    gpu = load_verifier_config(REPO / "configs" / "verifier" / "gemma3_gpu.yaml")
    assert gpu.device == "cuda" and gpu.lora.layers_to_transform is None and gpu.max_examples >= 10_000
    assert gpu.band.contains("icd10cm", 0.35) and gpu.band.contains("icd10pcs", 0.375)  # the trees' thresholds


def test_the_study_picks_the_verifier_weight_per_system():
    """A verifier right on diagnoses and backwards on procedures: the diagnoses take it, the procedures leave it."""
    from icdcoder.experiments.verifier_study import tuned_fusion

    docs, candidates, probabilities = [], [], {}
    for i in range(10):
        doc = f"n{i}"
        docs.append(
            Document(
                id=doc,
                text="nota",
                language="es",
                codes=(GoldCode(code="A00", system="icd10cm"), GoldCode(code="0AAA", system="icd10pcs")),
            )
        )
        for code, system, gold in (("A00", "icd10cm", True), ("Z99", "icd10cm", False)):
            probabilities[len(candidates)] = 0.9 if gold else 0.1
            candidates.append(VerifierCandidate(doc_id=doc, code=code, system=system, score=0.4, sentence="nota"))
        for code, system, gold in (("0AAA", "icd10pcs", True), ("0ZZZ", "icd10pcs", False)):
            probabilities[len(candidates)] = 0.1 if gold else 0.9
            candidates.append(VerifierCandidate(doc_id=doc, code=code, system=system, score=0.4, sentence="nota"))
    band = ScoreBand(low={"icd10cm": 0.1, "icd10pcs": 0.1}, high={"icd10cm": 0.7, "icd10pcs": 0.7})
    weights, thresholds = tuned_fusion(docs, candidates, probabilities, band, [0.0, 0.5, 0.8])
    assert weights == {"icd10cm": 0.5, "icd10pcs": 0.0}
    assert 0.25 < thresholds["icd10cm"] <= 0.65 and thresholds["icd10pcs"] <= 0.4  # both procedures kept
