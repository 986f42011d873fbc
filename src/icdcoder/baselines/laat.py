"""``laat``: word embeddings -> BiLSTM -> label-wise attention (Vu et al. 2020, LAAT).

Embeddings start from the project's own Word2Vec vectors (see
:mod:`icdcoder.baselines.word_vectors`). The label space is every code seen in
training (diagnoses and procedures); thresholds are tuned on dev; evidence is
the most attended word window, mapped back to character offsets.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from icdcoder.baselines.base import read_meta
from icdcoder.baselines.neural_common import (
    RUN_INDEPENDENT,
    Example,
    LabelSpace,
    LabelWiseAttention,
    TrainSettings,
    decode_predictions,
    fingerprint,
    fit_report,
    read_json,
    restore_trained,
    save_trained,
    seed_everything,
    train_label_attention,
    word_tokens,
    write_json,
)
from icdcoder.baselines.word_vectors import WordVectorSettings, load_or_train_word_vectors
from icdcoder.config import StrictModel
from icdcoder.data.schema import Document
from icdcoder.errors import InputError
from icdcoder.predictor import DocumentPrediction, FitReport, Predictor

PAD, UNK = "<pad>", "<unk>"


class LaatSettings(StrictModel):
    word_vectors: WordVectorSettings = WordVectorSettings()
    #: notes are cut after this many word tokens
    max_tokens: int = Field(2000, ge=1)
    hidden_size: int = Field(128, ge=1)
    attention_dim: int = Field(128, ge=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    train: TrainSettings = TrainSettings()


class LaatNetwork(nn.Module):
    def __init__(self, vocabulary_size: int, embedding_dim: int, settings: LaatSettings, num_labels: int):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary_size, embedding_dim, padding_idx=0)
        self.dropout = nn.Dropout(settings.dropout)
        self.encoder = nn.LSTM(embedding_dim, settings.hidden_size, batch_first=True, bidirectional=True)
        self.head = LabelWiseAttention(2 * settings.hidden_size, settings.attention_dim, num_labels)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, lengths = batch["ids"], batch["lengths"]
        embedded = self.dropout(self.embedding(ids))
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        hidden, _ = pad_packed_sequence(self.encoder(packed)[0], batch_first=True, total_length=ids.shape[1])
        mask = torch.arange(ids.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        return self.head(self.dropout(hidden), mask)


def collate_word_ids(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([max(len(e.inputs["ids"]), 1) for e in examples])
    ids = torch.zeros(len(examples), int(lengths.max()), dtype=torch.long)
    for row, example in enumerate(examples):
        ids[row, : len(example.inputs["ids"])] = example.inputs["ids"]
    return {"ids": ids, "lengths": lengths}


class LaatPredictor(Predictor):
    name = "laat"
    config_model = LaatSettings

    def __init__(self, settings: LaatSettings | None = None):
        self.settings = settings or LaatSettings()
        self.vocabulary: list[str] = []
        self.word_index: dict[str, int] = {}
        self.labels: LabelSpace | None = None
        self.network: LaatNetwork | None = None
        self.thresholds: dict[str, float] = {}
        self.report: FitReport | None = None
        self.history: list[dict[str, float]] = []

    # -- preparing notes

    def _set_vocabulary(self, words: Sequence[str]) -> None:
        self.vocabulary = [PAD, UNK, *words]
        self.word_index = {word: i for i, word in enumerate(self.vocabulary)}

    def _example(self, doc: Document) -> Example:
        tokens = word_tokens(doc.text)[: self.settings.max_tokens]
        unknown = self.word_index[UNK]
        ids = torch.tensor([self.word_index.get(t.text, unknown) for t in tokens], dtype=torch.long)
        return Example(doc.id, {"ids": ids}, [(t.start, t.end) for t in tokens], len(tokens))

    def _examples(self, documents: Sequence[Document]) -> list[Example]:
        return [self._example(doc) for doc in documents]

    def _build_network(self, labels: LabelSpace, vectors=None) -> LaatNetwork:
        dim = self.settings.word_vectors.vector_size
        network = LaatNetwork(len(self.vocabulary), dim, self.settings, len(labels))
        if vectors is not None:
            weights = network.embedding.weight.data
            weights[2:] = torch.from_numpy(np.asarray(vectors.vectors, dtype=np.float32))
            weights[0].zero_()
        return network

    # -- Predictor

    def fit(self, train: Sequence[Document], dev: Sequence[Document] | None = None) -> FitReport:
        started = time.perf_counter()
        settings = self.settings
        seed_everything(settings.train.seed, settings.train.threads)
        vectors = load_or_train_word_vectors(settings.word_vectors, [doc.text for doc in train])
        self._set_vocabulary(list(vectors.index_to_key))
        self.labels = LabelSpace.from_documents(train)
        self.network = self._build_network(self.labels, vectors)
        train_examples = self._examples(train)
        dev_part = (self._examples(dev), self.labels.targets(dev)) if dev else None
        run_id = fingerprint(
            settings.model_dump(exclude={"train": RUN_INDEPENDENT}),
            self.labels.to_json(),
            [d.id for d in train],
            [d.id for d in dev or ()],
            len(self.vocabulary),
        )
        outcome = train_label_attention(
            self.network,
            self.network,
            collate_word_ids,
            (train_examples, self.labels.targets(train)),
            dev_part,
            self.labels,
            settings.train,
            run_id,
        )
        self.thresholds, self.history = outcome.thresholds, outcome.history
        tokens = sum(e.num_tokens for e in train_examples) * outcome.epochs_run
        self.report = fit_report(
            started, tokens, outcome, {"labels": len(self.labels), "vocabulary": len(self.vocabulary)}
        )
        return self.report

    def predict(self, documents: Sequence[Document]) -> list[DocumentPrediction]:
        if self.network is None or self.labels is None:
            raise InputError("the laat model is not trained: call fit or load first")
        return decode_predictions(
            self.network,
            self.network,
            collate_word_ids,
            documents,
            self._examples(documents),
            self.labels,
            self.thresholds,
            self.settings.train,
        )

    def save(self, directory: str | Path) -> None:
        folder = save_trained(self, directory)
        write_json(folder / "vocab.json", self.vocabulary)

    @classmethod
    def load(cls, directory: str | Path) -> LaatPredictor:
        folder = Path(directory)
        meta = read_meta(folder, cls.name)
        predictor = cls(LaatSettings.model_validate(meta["config"]))
        predictor._set_vocabulary(read_json(folder / "vocab.json")[2:])
        predictor.labels = LabelSpace.from_json(read_json(folder / "labels.json"))
        predictor.network = predictor._build_network(predictor.labels)
        restore_trained(predictor, folder, meta)
        return predictor
