"""Neural baselines (laat, plm) on tiny made-up notes: learn a keyword, round-trip, evidence, resume."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from icdcoder.baselines.laat import LaatPredictor, LaatSettings
from icdcoder.baselines.neural_common import (
    Example,
    LabelSpace,
    LabelWiseAttention,
    evidence_for,
    length_bucketed_batches,
    mean_average_precision,
    tune_thresholds,
    widen_to_words,
    word_tokens,
)
from icdcoder.baselines.plm import PlmPredictor, PlmSettings, default_encoder_path
from icdcoder.config import load_config
from icdcoder.data.schema import Document, GoldCode
from icdcoder.errors import InputError
from icdcoder.registry import predictor_class

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent
FILLER = "el paciente acude a consulta por dolor y fiebre desde hace varios dias sin otros antecedentes".split()
KEYWORDS = {"pneumonia": ("J18.9", "icd10cm"), "fracture": ("S72.0", "icd10cm"), "radiography": ("BW03ZZZ", "icd10pcs")}


def make_note(seed: int, keyword: str) -> Document:
    """Shuffled filler words with one keyword inserted; the keyword alone decides the code."""
    rng = random.Random(seed)
    words = FILLER[:]
    rng.shuffle(words)
    words.insert(rng.randrange(len(words)), keyword)
    code, system = KEYWORDS[keyword]
    return Document(
        id=f"n{seed}", text=" ".join(words) + ".", language="es", codes=(GoldCode(code=code, system=system),)
    )


def make_notes(start: int, count: int) -> list[Document]:
    keywords = sorted(KEYWORDS)
    return [make_note(start + i, keywords[i % len(keywords)]) for i in range(count)]


TRAIN, DEV, HELD_OUT = make_notes(0, 18), make_notes(100, 6), make_notes(200, 6)
FAST_TRAIN = {"epochs": 12, "batch_size": 6, "learning_rate": 0.01, "patience": 20, "threads": 1}


def assert_keyword_learned(predictions, documents) -> None:
    """The code tied to each held-out note's keyword ranks first, with evidence inside the text."""
    for prediction, doc in zip(predictions, documents, strict=True):
        assert prediction.doc_id == doc.id
        best = prediction.ranked()[0]
        assert best.code == doc.codes[0].code
        for code in prediction.codes:
            assert 0.0 <= code.score <= 1.0
            for evidence in code.evidence:
                assert 0 <= evidence.start < evidence.end <= len(doc.text)


# ----------------------------------------------------------------------------- shared parts


def test_word_tokens_keep_offsets_and_lowercase() -> None:
    text = "Fiebre, TOS y   dolor-torácico"
    tokens = word_tokens(text)
    assert [t.text for t in tokens] == ["fiebre", "tos", "y", "dolor", "torácico"]
    assert all(text[t.start : t.end].lower() == t.text for t in tokens)


def test_label_attention_ignores_masked_positions() -> None:
    torch.manual_seed(0)
    head = LabelWiseAttention(input_dim=4, attention_dim=3, num_labels=2)
    hidden = torch.randn(1, 5, 4)
    mask = torch.tensor([[True, True, True, False, False]])
    logits, attention = head(hidden, mask)
    assert logits.shape == (1, 2) and attention.shape == (1, 2, 5)
    assert torch.allclose(attention.sum(-1), torch.ones(1, 2))
    assert float(attention.detach()[..., 3:].abs().max()) == 0.0
    changed = hidden.clone()
    changed[0, 3:] = 100.0
    assert torch.allclose(head(changed, mask)[0], logits)


def test_thresholds_and_map_on_known_matrix() -> None:
    probabilities = np.array([[0.9, 0.2, 0.6], [0.1, 0.8, 0.3]])
    targets = np.array([[1, 0, 1], [0, 1, 0]], dtype=np.float32)
    assert mean_average_precision(probabilities, targets) == pytest.approx(1.0)
    reversed_map = mean_average_precision(1 - probabilities, targets)
    assert reversed_map < 0.7
    thresholds = tune_thresholds(probabilities, targets, np.array([True, True, False]))
    assert 0.2 < thresholds["diagnosis"] <= 0.8
    assert 0.3 < thresholds["procedure"] <= 0.6


def test_length_buckets_cover_every_note_once_and_group_similar_lengths() -> None:
    lengths = [5, 100, 7, 90, 6, 95, 8, 80]
    examples = [Example(str(i), {}, [], n) for i, n in enumerate(lengths)]
    batches = length_bucketed_batches(examples, size=2, seed=1, pool=4)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 10 for b in batches)
    assert batches == length_bucketed_batches(examples, size=2, seed=1, pool=4)


def test_label_space_targets_and_empty_training() -> None:
    space = LabelSpace.from_documents(TRAIN)
    assert len(space) == 3
    matrix = space.targets(DEV)
    assert matrix.shape == (len(DEV), 3) and (matrix.sum(1) == 1).all()
    assert LabelSpace.from_json(space.to_json()).labels == space.labels
    with pytest.raises(InputError, match="no codes"):
        LabelSpace.from_documents([Document(id="x", text="nada", language="es")])


def test_evidence_widens_subwords_to_whole_words() -> None:
    text = "dolor toracico agudo"
    assert widen_to_words(text, 8, 11) == (6, 14)
    spans = [(-1, -1), (0, 5), (6, 10), (10, 14), (15, 20)]
    attention = np.array([0.9, 0.0, 0.1, 0.8, 0.1])  # position 0 is [CLS]: never evidence
    [evidence] = evidence_for(attention, spans, text, window=0)
    assert evidence.text_in(text) == "toracico"


def test_registry_and_configs_resolve() -> None:
    assert predictor_class("laat") is LaatPredictor
    assert predictor_class("plm") is PlmPredictor
    laat = load_config(REPO / "configs/baselines/laat.yaml", LaatSettings)
    plm = load_config(REPO / "configs/baselines/plm_finetune.yaml", PlmSettings)
    assert laat.word_vectors.cache_path and plm.finetune_encoder and plm.chunk_tokens == 128
    with pytest.raises(InputError, match="epochs"):
        load_config(REPO / "configs/baselines/laat.yaml", LaatSettings, {"train": {"epochs": 0}})


# ----------------------------------------------------------------------------- laat


def laat_settings(tmp_path: Path, **train) -> LaatSettings:
    return LaatSettings.model_validate(
        {
            "word_vectors": {
                "vector_size": 16,
                "min_count": 1,
                "epochs": 3,
                "cache_path": str(tmp_path / "w2v" / "vectors.kv"),
            },
            "hidden_size": 16,
            "attention_dim": 16,
            "dropout": 0.0,
            "train": {**FAST_TRAIN, **train},
        }
    )


def test_laat_learns_keyword_and_round_trips(tmp_path: Path) -> None:
    predictor = LaatPredictor(laat_settings(tmp_path))
    report = predictor.fit(TRAIN, DEV)
    assert report.train_tokens > 0 and report.wall_seconds > 0 and report.peak_rss_mb > 0
    assert (tmp_path / "w2v" / "vectors.kv").is_file()
    predictions = predictor.predict(HELD_OUT)
    assert_keyword_learned(predictions, HELD_OUT)
    keyword_hits = 0
    for prediction, doc in zip(predictions, HELD_OUT, strict=True):
        evidence = prediction.ranked()[0].evidence[0]
        keyword_hits += any(k in evidence.text_in(doc.text) for k in KEYWORDS)
    assert keyword_hits >= len(HELD_OUT) - 1

    predictor.save(tmp_path / "model")
    for name in ("model.pt", "vocab.json", "labels.json", "meta.json"):
        assert (tmp_path / "model" / name).is_file()
    loaded = LaatPredictor.load(tmp_path / "model")
    assert loaded.report.train_tokens == report.train_tokens
    again = loaded.predict(HELD_OUT)
    assert [[(c.code, round(c.score, 5)) for c in p.codes] for p in again] == [
        [(c.code, round(c.score, 5)) for c in p.codes] for p in predictions
    ]


def test_laat_resumes_from_checkpoint(tmp_path: Path) -> None:
    checkpoints = str(tmp_path / "ckpt")
    first = LaatPredictor(laat_settings(tmp_path, epochs=2, checkpoint_dir=checkpoints)).fit(TRAIN, DEV)
    assert (tmp_path / "ckpt" / "last.pt").is_file()
    resumed = LaatPredictor(laat_settings(tmp_path, epochs=3, checkpoint_dir=checkpoints))
    report = resumed.fit(TRAIN, DEV)
    # the cost of a resumed fit includes the epochs the first run trained
    assert 0 < report.extra["resumed_seconds"] <= first.wall_seconds
    assert report.wall_seconds > report.extra["resumed_seconds"]
    straight = LaatPredictor(laat_settings(tmp_path, epochs=3))
    straight.fit(TRAIN, DEV)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for got, want in zip(resumed.history, straight.history, strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)
    # other training settings make another run: its checkpoint is not resumed
    other = LaatPredictor(laat_settings(tmp_path, epochs=1, learning_rate=0.02, checkpoint_dir=checkpoints))
    other.fit(TRAIN, DEV)
    assert [h["epoch"] for h in other.history] == [1]


def test_laat_needs_training_and_a_real_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not trained"):
        LaatPredictor().predict(HELD_OUT)
    with pytest.raises(InputError):
        LaatPredictor.load(tmp_path / "missing")


# ----------------------------------------------------------------------------- plm


@pytest.mark.parametrize("finetune", [False, True])
def test_plm_learns_keyword_and_round_trips(tmp_path: Path, finetune: bool) -> None:
    settings = PlmSettings.model_validate(
        {
            "chunk_tokens": 32,
            "max_chunks": 2,
            "attention_dim": 16,
            "dropout": 0.0,
            "finetune_encoder": finetune,
            "encoder_learning_rate": 1e-4,
            "train": {**FAST_TRAIN, "epochs": 10 if not finetune else 6},
        }
    )
    predictor = PlmPredictor(settings)
    predictor.fit(TRAIN, DEV)
    predictions = predictor.predict(HELD_OUT)
    assert_keyword_learned(predictions, HELD_OUT)
    predictor.save(tmp_path / "plm")
    loaded = PlmPredictor.load(tmp_path / "plm")
    again = loaded.predict(HELD_OUT)
    assert [p.ranked()[0].code for p in again] == [p.ranked()[0].code for p in predictions]
    assert [round(p.ranked()[0].score, 4) for p in again] == [round(p.ranked()[0].score, 4) for p in predictions]


def test_plm_truncates_long_notes_to_chunks() -> None:
    predictor = PlmPredictor(PlmSettings(chunk_tokens=16, max_chunks=2))
    predictor._load_encoder(default_encoder_path())
    long_note = Document(id="long", text=" ".join(["fiebre"] * 200), language="es")
    example = predictor._example(long_note)
    assert example.inputs["ids"].shape == (2, 16)
    assert example.num_tokens <= 2 * 14
    real = [span for span in example.spans if span != (-1, -1)]
    assert len(real) == example.num_tokens and all(0 <= s < e <= len(long_note.text) for s, e in real)
