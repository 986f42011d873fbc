"""The span LLM coder on the tiny random model: generation never crashes, constrained decoding yields
valid codes, fit/predict/save/load round-trips with evidence inside the note, fusion tuning works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_infer_support import NOTES, make_codiesp


@pytest.fixture(scope="module")
def tiny_model(tiny_lm_dir):
    import torch

    from icdcoder.models.loading import load_causal_lm

    torch.set_num_threads(1)
    return load_causal_lm(str(tiny_lm_dir))


@pytest.fixture(scope="module")
def corpus_docs(tmp_path_factory):
    from icdcoder.data.codiesp import load_codiesp

    root = make_codiesp(tmp_path_factory.mktemp("codiesp"))
    return load_codiesp(root, "train")


@pytest.fixture(scope="module")
def retriever(corpus_docs, ontology):
    from icdcoder.train.data import fit_retriever

    return fit_retriever(corpus_docs, ontology)


def test_line_confidences_align_with_lines():
    from icdcoder.models.generation import line_confidences

    pieces = ["I10", " |", " hip", "\n", "E11", ".9", " | dm"]
    logprobs = [-0.1, -0.1, -0.1, -5.0, -1.0, -1.0, -1.0]
    text = "".join(pieces)
    confidences = line_confidences(pieces, logprobs, text)
    assert len(confidences) == 2
    assert confidences[0] == pytest.approx(0.9048, abs=1e-3)  # exp(-0.1): the newline token belongs to no line
    assert confidences[1] == pytest.approx(0.3679, abs=1e-3)


def test_generation_and_parsing_never_crash_on_garbage(tiny_model, ontology):
    from icdcoder.models.generation import HFGenerator
    from icdcoder.prompt import build_prompt, parse_answer

    model, tokenizer = tiny_model
    generator = HFGenerator(model, tokenizer, batch_size=3, max_new_tokens=12)
    sources = ["dolor torácico", "", "ñ" * 300, "I10 | NONE\n\n|||"]
    generations = generator.generate([build_prompt(s) for s in sources])
    assert len(generations) == len(sources)
    for source, generation in zip(sources, generations):
        parsed = parse_answer(generation.text, source, lambda c: ontology.resolve(c, systems=("icd10cm", "icd10pcs")))
        assert all(source[i.start : i.end] for i in parsed.items)
        assert len(generation.line_confidences) == len(generation.text.splitlines())
        assert all(0.0 <= c <= 1.0 for c in generation.line_confidences)


def test_constrained_decoding_yields_valid_codes_and_verbatim_quotes(tiny_model, ontology):
    from icdcoder.models.constrained import constraint_factory
    from icdcoder.models.generation import HFGenerator
    from icdcoder.prompt import build_prompt, parse_answer

    model, tokenizer = tiny_model
    codes = ["I10", "E11.9", "R07.9", "N39.0", "BW03ZZZ"]
    sources = [note[1][:120] for note in NOTES[:3]]
    prompts = [build_prompt(s) for s in sources]
    generator = HFGenerator(model, tokenizer, batch_size=3, max_new_tokens=16)
    generations = generator.generate(
        prompts, logits_processor_factory=constraint_factory(tokenizer, codes, dict(zip(prompts, sources)))
    )
    resolve = lambda c: ontology.resolve(c, systems=("icd10cm", "icd10pcs"))  # noqa: E731
    for source, generation in zip(sources, generations):
        lines = [line for line in generation.text.splitlines() if line.strip()]
        assert lines, "constrained decoding must write at least one line"
        for line in lines:
            if line == "NONE":
                continue
            head, _, quote = line.partition("|")
            assert head.strip() in codes, line
            if quote.strip():  # a line cut by max_new_tokens can end right after the separator
                assert quote.strip() in source
        parsed = parse_answer(generation.text, source, resolve)
        assert parsed.dropped.get("unknown_code", 0) == 0 and parsed.dropped.get("malformed", 0) == 0


def test_coder_predict_save_load_round_trip(tmp_path, tiny_model, retriever, corpus_docs, ontology):
    from icdcoder.errors import InputError
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.settings import CoderSettings

    model, tokenizer = tiny_model
    settings = CoderSettings(batch_size=4, max_new_tokens=12, threshold={"icd10cm": 0.0, "icd10pcs": 0.0})
    coder = SpanPredictor(settings).attach(model, tokenizer, retriever, ontology=ontology)
    predictions = coder.predict(corpus_docs)
    assert [p.doc_id for p in predictions] == [d.id for d in corpus_docs]
    by_id = {d.id: d for d in corpus_docs}
    for prediction in predictions:
        text = by_id[prediction.doc_id].text
        assert prediction.codes, "retrieval fusion gives every made-up note some codes"
        for code in prediction.codes:
            assert code.system in ("icd10cm", "icd10pcs") and 0.0 <= code.score <= 1.0
            for evidence in code.evidence:
                assert 0 <= evidence.start < evidence.end <= len(text)
    # the surface form of a training code is found, with its evidence, in the note that holds it
    first = predictions[0]
    hypertension = [c for c in first.codes if c.code == "I10"]
    assert (
        hypertension
        and by_id[first.doc_id].text[hypertension[0].evidence[0].start : hypertension[0].evidence[0].end].lower()
        == "hipertensión arterial"
    )

    coder.save(tmp_path / "coder")
    assert (tmp_path / "coder" / "model" / "config.json").is_file() or (
        tmp_path / "coder" / "model" / "adapter_config.json"
    ).is_file()
    loaded = SpanPredictor.load(tmp_path / "coder")
    assert loaded.settings == coder.settings
    again = loaded.predict(corpus_docs[:1])
    assert [(c.code, c.score) for c in again[0].codes] == [(c.code, c.score) for c in predictions[0].codes]
    coder.settings = coder.settings.model_copy(update={"use_llm": False})
    coder.write_settings(tmp_path / "coder")
    assert SpanPredictor.load(tmp_path / "coder").model is None
    assert SpanPredictor.load(tmp_path / "coder").llm_dtype is None
    assert SpanPredictor.load(tmp_path / "coder", use_llm=True).model is not None
    # the precision override reaches the loaded weights
    for dtype in ("bfloat16", "float32"):
        overridden = SpanPredictor.load(tmp_path / "coder", use_llm=True, dtype=dtype)
        assert overridden.llm_dtype == dtype and str(next(overridden.model.parameters()).dtype) == f"torch.{dtype}"
    with pytest.raises(InputError, match="^dtype: ") as caught:
        SpanPredictor.load(tmp_path / "coder", dtype="float16")  # an override is validated as the file is
    assert "\n" not in str(caught.value)
    # another folder's LLM in the coder's place (the coder's own moved away, so only the adapter can supply one)
    (tmp_path / "coder" / "model").rename(tmp_path / "other_llm")
    assert SpanPredictor.load(tmp_path / "coder", use_llm=True).model is None
    swapped = SpanPredictor.load(tmp_path / "coder", adapter=tmp_path / "other_llm", use_llm=True)
    assert swapped.model is not None and swapped.settings.retrieval_k == coder.settings.retrieval_k
    with pytest.raises(InputError, match="no such adapter folder") as caught:
        SpanPredictor.load(tmp_path / "coder", adapter=tmp_path / "missing", use_llm=True)
    assert "missing" in str(caught.value)


def test_tuning_picks_thresholds_that_beat_predicting_everything(retriever, corpus_docs, ontology):
    from icdcoder.evaluate.metrics import micro_prf
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.fusion import aggregate
    from icdcoder.infer.settings import CoderSettings

    coder = SpanPredictor(CoderSettings(use_llm=False)).attach(None, None, retriever, ontology=ontology)
    outputs = coder.segment_outputs(corpus_docs)
    result = coder.tune(corpus_docs, outputs)
    assert result["table"] and set(result["best_settings"]) >= {"llm_weight", "threshold", "untrained_threshold"}
    assert set(coder.settings.untrained_threshold) == {"icd10cm"}  # the default untrained_threshold_systems

    def f1(settings):
        predictions = [aggregate(o, settings) for o in outputs]
        gold = {d.id: {g.code for g in d.codes} for d in corpus_docs}
        return micro_prf(gold, {p.doc_id: [c.code for c in p.codes] for p in predictions})["micro_f1"]

    everything = coder.settings.model_copy(
        update={"threshold": {"icd10cm": 0.0, "icd10pcs": 0.0}, "untrained_threshold": {}}
    )
    assert f1(coder.settings) >= f1(everything)
    assert f1(coder.settings) > 0.5


def test_load_rejects_a_folder_without_coder_json(tmp_path):
    from icdcoder.errors import InputError
    from icdcoder.infer.coder import SpanPredictor

    with pytest.raises(InputError, match="coder.json"):
        SpanPredictor.load(tmp_path)


#: codes a Spanish note and an English one as a ``predict jsonl`` worker does, then lists the LLM libraries loaded
_CODE_WITHOUT_TORCH = """
import json, sys
from icdcoder.data.schema import Document
from icdcoder.infer.cli import DEFAULT_MODEL_DIR
from icdcoder.infer.records import batch_lines
from icdcoder.registry import predictor_class

coder = predictor_class("span").load(DEFAULT_MODEL_DIR)
notes = [
    Document(id="es", text=open(sys.argv[1], encoding="utf-8").read(), language="es"),
    Document(id="en", text="Acute inferior myocardial infarction in a patient with type 2 diabetes.", language="en"),
]
lines = batch_lines(coder, notes, "clinical").splitlines()
print(json.dumps({"codes": [len(json.loads(line)["codes"]) for line in lines],
                  "loaded": sorted({"torch", "transformers"} & set(sys.modules))}))
"""


def test_the_shipped_coder_codes_without_loading_torch():
    """Its LLM is off and its retriever has no embeddings: torch's libraries would only add to every worker's memory."""
    sample = Path(__file__).resolve().parent.parent / "examples" / "sample_note.txt"
    done = subprocess.run(
        [sys.executable, "-c", _CODE_WITHOUT_TORCH, str(sample)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(codes > 0 for codes in result["codes"]) and result["loaded"] == []


def test_document_models_read_whole_windows_without_candidates(tiny_model, retriever, corpus_docs, ontology):
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.settings import CoderSettings
    from icdcoder.spans.segment import note_windows

    model, tokenizer = tiny_model
    jobs_by_setting = {}
    for window in (None, 12):
        coder = SpanPredictor(CoderSettings(llm_window_words=window, segment_max_words=6)).attach(
            model, tokenizer, retriever, ontology=ontology
        )
        jobs = []
        coder.signals["llm"].run = lambda _coder, batch, _outputs, jobs=jobs: jobs.extend(batch)
        outputs = coder.segment_outputs(corpus_docs[:1])
        jobs_by_setting[window] = (jobs, outputs[0])
    note = corpus_docs[0].text
    windows = note_windows(note, max_words=12)
    jobs, outputs = jobs_by_setting[12]
    assert [(text, start) for _, text, start, _ in jobs] == [(w.text(note), w.start) for w in windows]
    assert all(candidates == [] for *_, candidates in jobs) and outputs.llm_segments == len(windows)
    span_jobs, span_outputs = jobs_by_setting[None]
    assert len(span_jobs) > len(windows) and all(candidates for *_, candidates in span_jobs)
    assert outputs.scored == span_outputs.scored  # retrieval and lexicons do not change


def test_tuning_reports_what_the_llm_alone_is_worth():
    from icdcoder.data.schema import Document, GoldCode
    from icdcoder.infer.settings import CoderSettings
    from icdcoder.infer.signals import NoteOutputs, ScoredCode
    from icdcoder.infer.tuning import tune_fusion

    dev = [
        Document(id=f"n{i}", text="nota", language="es", codes=(GoldCode(code="I10", system="icd10cm"),))
        for i in range(3)
    ]
    # the LLM names the gold code; retrieval prefers a wrong one
    outputs = [
        NoteOutputs(
            doc_id=d.id,
            llm_segments=1,
            scored=[
                ScoredCode("I10", "icd10cm", {"llm": 0.9, "retrieval": 0.2}),
                ScoredCode("E11.9", "icd10cm", {"llm": 0.1, "retrieval": 0.9}),
            ],
        )
        for d in dev
    ]
    result = tune_fusion(outputs, dev, CoderSettings())
    assert result["llm_alone"]["D_f1"] == 1.0 and result["llm_alone"]["D_map"] == 1.0
    without_llm = max(row["D_f1"] for row in result["table"] if row["llm_weight"] == 0)
    assert without_llm < 1.0
    for note in outputs:
        note.llm_segments = 0
    assert "llm_alone" not in tune_fusion(outputs, dev, CoderSettings())


def test_llm_alone_settings_with_tuned_thresholds_keep_only_the_llms_codes():
    from icdcoder.data.schema import Document, GoldCode
    from icdcoder.infer.fusion import aggregate
    from icdcoder.infer.settings import CoderSettings
    from icdcoder.infer.signals import NoteOutputs, ScoredCode
    from icdcoder.infer.tuning import llm_alone, with_tuned_thresholds

    dev = [
        Document(id=f"n{i}", text="nota", language="es", codes=(GoldCode(code="I10", system="icd10cm"),))
        for i in range(3)
    ]
    outputs = [
        NoteOutputs(
            doc_id=d.id,
            llm_segments=1,
            scored=[
                ScoredCode("I10", "icd10cm", {"llm": 0.9, "retrieval": 0.2}),
                ScoredCode("E11.9", "icd10cm", {"llm": 0.1, "retrieval": 0.9, "lexical": 1.0}),
                ScoredCode("R52", "icd10cm", {"retrieval": 1.0, "english": 1.0, "ontology": 1.0}),
            ],
        )
        for d in dev
    ]
    settings = with_tuned_thresholds(outputs, dev, llm_alone(CoderSettings(lexical_weight=2.0, english_weight=1.0)))
    assert settings.llm_weight == 1.0 and settings.retrieval_weight == settings.lexical_weight == 0.0
    assert 0.1 < settings.threshold["icd10cm"] <= 0.9  # keeps I10, drops the LLM's weak E11.9
    assert [[c.code for c in aggregate(o, settings).codes] for o in outputs] == [["I10"]] * 3


def test_untrained_category_codes_are_named_by_their_default_specific_code(tmp_path, retriever, corpus_docs, ontology):
    import copy
    import json

    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.fusion import aggregate
    from icdcoder.infer.settings import CoderSettings
    from icdcoder.infer.signals import NoteOutputs, ScoredCode
    from icdcoder.infer.store import outputs_to_json

    # a made-up coder whose training notes carried the category E11 itself: it keeps that level
    trained = copy.copy(retriever)
    trained.trained_codes = retriever.trained_codes | {("E11", "icd10cm")}
    note = corpus_docs[0]
    stage1 = NoteOutputs(
        doc_id=note.id,
        scored=[
            ScoredCode("N00", "icd10cm", {"ontology": 0.5}, start=0, end=5),  # a category title matched
            ScoredCode("N00.9", "icd10cm", {"retrieval": 0.2}),
            ScoredCode("E11", "icd10cm", {"lexical": 0.9}),
            ScoredCode("I10", "icd10cm", {"lexical": 0.9}),
            ScoredCode("0DT", "icd10pcs", {"retrieval": 0.4}),
        ],
    )
    cache = tmp_path / "stage1.jsonl"
    cache.write_text("".join(json.dumps(record) + "\n" for record in outputs_to_json([stage1])), encoding="utf-8")

    def coded(specify: bool) -> dict[str, dict]:
        settings = CoderSettings(
            use_llm=False,
            specify_untrained=specify,
            lexical_weight=1.0,
            ontology_weight=1.0,
            threshold={"icd10cm": 0.0, "icd10pcs": 0.0},
        )
        coder = SpanPredictor(settings).attach(None, None, trained, ontology=ontology)
        [outputs] = coder.segment_outputs([note], cache=cache)
        return {c.code: c for c in aggregate(outputs, settings).codes}

    assert set(coded(False)) == {"N00", "N00.9", "E11", "I10", "0DT"}
    specified = coded(True)
    assert set(specified) == {"N00.9", "E11", "I10", "0DT"}
    # the renamed code keeps the category match's evidence and merges with the retrieval signal already there
    assert [(e.start, e.end) for e in specified["N00.9"].evidence] == [(0, 5)]
    assert specified["N00.9"].score > coded(False)["N00.9"].score


def test_codes_no_training_note_carries_are_marked_and_kept_at_their_own_threshold(retriever, corpus_docs, ontology):
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.fusion import aggregate
    from icdcoder.infer.settings import CoderSettings
    from icdcoder.infer.signals import NoteOutputs, ScoredCode

    note = corpus_docs[0]
    trained_code = sorted(code for code, system in retriever.trained_codes if system == "icd10cm")[0]
    stage1 = NoteOutputs(
        doc_id=note.id,
        scored=[
            ScoredCode(trained_code, "icd10cm", {"lexical": 0.3}),
            ScoredCode("N00.9", "icd10cm", {"ontology": 0.3}),
        ],
    )
    shared = CoderSettings(
        use_llm=False, specify_untrained=False, lexical_weight=1.0, ontology_weight=1.0, threshold={"icd10cm": 0.1}
    )
    coder = SpanPredictor(shared).attach(None, None, retriever, ontology=ontology)
    finished = coder.finished(stage1)
    assert [item.untrained for item in finished.scored] == [False, True]

    def predicted(settings: CoderSettings) -> set[str]:
        return {c.code for c in aggregate(finished, settings).codes}

    # both codes score 0.15: one threshold keeps both; a higher threshold for untrained codes drops only N00.9
    assert predicted(shared) == {trained_code, "N00.9"}
    assert predicted(shared.model_copy(update={"untrained_threshold": {"icd10cm": 0.2}})) == {trained_code}
    lower = shared.model_copy(update={"threshold": {"icd10cm": 0.2}, "untrained_threshold": {"icd10cm": 0.1}})
    assert predicted(lower) == {"N00.9"}
    assert (
        predicted(lower.model_copy(update={"untrained_threshold": {"icd10pcs": 0.1}})) == set()
    )  # other system: no effect


def test_candidate_scores_equal_a_full_forward_pass(tiny_model):
    import torch

    from icdcoder.models.scoring import CandidateScorer
    from icdcoder.prompt import Candidate, answer_opening, build_prompt

    model, tokenizer = tiny_model
    prompts = [
        build_prompt(
            "hipertensión arterial", [Candidate("I10", "Essential hypertension"), Candidate("E11.9", "Type 2 diabetes")]
        ),
        build_prompt("dolor", []),
        build_prompt(
            "TAC abdominal con contraste y dolor torácico de larga evolución", [Candidate("BW25", "CT abdomen")]
        ),
    ]
    openings = [[answer_opening("I10"), answer_opening("E11.9")], [], [answer_opening("BW25"), "NONE"]]
    scores = CandidateScorer(model, tokenizer, batch_size=2).score(prompts, openings)
    assert [len(s) for s in scores] == [2, 0, 2]
    for prompt, texts, got in zip(prompts, openings, scores):
        for text, value in zip(texts, got):
            prompt_ids = tokenizer(prompt)["input_ids"]
            ids = prompt_ids + tokenizer(text, add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                logprobs = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
            expected = sum(logprobs[i - 1, ids[i]].item() for i in range(len(prompt_ids), len(ids)))
            assert value == pytest.approx(expected, abs=1e-3)


def test_the_output_layer_reads_strided_inputs_unchanged(tiny_model):
    import torch

    from icdcoder.models.loading import contiguous_head_inputs

    model, tokenizer = tiny_model  # loaded by load_causal_lm, which adds the hook
    ids = torch.tensor([tokenizer("dolor torácico y fiebre")["input_ids"]])
    with torch.inference_mode():
        every_position = model(ids).logits[:, -1]
        last_position = model(ids, logits_to_keep=1).logits[:, -1]
        again = contiguous_head_inputs(model)(ids, logits_to_keep=1).logits[:, -1]  # a second hook changes nothing
    assert torch.allclose(every_position, last_position, atol=1e-5) and torch.equal(last_position, again)


def test_scoring_mode_scores_every_shown_candidate(tiny_model, retriever, corpus_docs, ontology):
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.settings import CoderSettings

    model, tokenizer = tiny_model
    settings = CoderSettings(
        llm_mode="score",
        candidates_k=3,
        batch_size=4,
        specify_untrained=False,
        threshold={"icd10cm": 0.0, "icd10pcs": 0.0},
    )
    coder = SpanPredictor(settings).attach(model, tokenizer, retriever, ontology=ontology)
    jobs = []
    llm = coder.signals["llm"]
    run_llm = llm.run
    llm.run = lambda coder, batch, outputs: (jobs.extend(batch), run_llm(coder, batch, outputs))
    outputs = coder.segment_outputs(corpus_docs[:2])
    shown = {(note_index, start, c.code) for note_index, _, start, candidates in jobs for c in candidates}
    scored = {
        (note_index, item.code)
        for note_index, note in enumerate(outputs)
        for item in note.scored
        if item.signals.get("llm", 0.0) > 0
    }
    assert shown and {(n, code) for n, _, code in shown} == scored
    texts = [d.text for d in corpus_docs[:2]]
    for note_index, note in enumerate(outputs):
        for item in (i for i in note.scored if i.signals.get("llm", 0.0) > 0):
            assert 0.0 < item.signals.get("llm", 0.0) <= 1.0
            assert 0 <= item.start < item.end <= len(texts[note_index])  # the training form, else the segment
    assert coder.predict(corpus_docs[:1])[0].codes


def test_scoring_mode_needs_candidates():
    from pydantic import ValidationError

    from icdcoder.infer.settings import CoderSettings

    for bad in ({"candidates_k": 0}, {"llm_window_words": 20}):
        with pytest.raises(ValidationError, match="'score' scores the candidates"):
            CoderSettings(llm_mode="score", **bad)


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parent.parent / "configs" / "coder").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_coder_config_validates(path):
    from icdcoder.infer.settings import load_coder_settings

    assert load_coder_settings(path).segment_max_words >= 5
