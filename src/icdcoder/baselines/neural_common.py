"""Parts shared by the neural baselines (``laat`` and ``plm``).

Both models end in the same head: label-wise attention (LAAT, Vu et al. 2020)
over a sequence of token states. Every label learns where to look in the note;
the most attended tokens double as the evidence for a predicted code. The
training loop (BCE, early stopping on dev, per-epoch checkpoints that a rerun
resumes from), the threshold search and the decoding of predictions with
evidence are shared too, so the two predictors differ only in their encoder.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypedDict

import numpy as np
import torch
from pydantic import Field
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from icdcoder.config import StrictModel
from icdcoder.data.schema import DIAGNOSIS_SYSTEMS, Document, Evidence
from icdcoder.errors import InputError
from icdcoder.evaluate.thresholds import best_threshold
from icdcoder.io import atomic_write, progress_bar
from icdcoder.predictor import (
    CodePrediction,
    DocumentPrediction,
    FitReport,
    peak_rss_mb,
    ranking_candidates,
    top_scored,
)

WORD_PATTERN = re.compile(r"\w+", re.UNICODE)
#: span of a position that is not a piece of the note (padding, [CLS], [SEP])
NO_SPAN = (-1, -1)


class WordToken(NamedTuple):
    text: str
    start: int
    end: int


def word_tokens(text: str) -> list[WordToken]:
    """Lower-cased word tokens with their character offsets (the tokeniser both baselines share)."""
    return [WordToken(m.group().lower(), m.start(), m.end()) for m in WORD_PATTERN.finditer(text)]


# ----------------------------------------------------------------------------- settings


class TrainSettings(StrictModel):
    """How the shared loop trains a label-attention model."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    #: stop after this many epochs without a better dev score
    patience: int = Field(3, ge=1)
    selection_metric: Literal["micro_f1", "map"] = "micro_f1"
    threads: int = Field(1, ge=1)
    seed: int = 13
    #: threshold used when no dev set is given to tune one
    default_threshold: float = Field(0.3, gt=0, lt=1)
    #: at least this many codes are asserted per note (the best ones), even below the threshold
    min_codes: int = Field(1, ge=0)
    #: evidence = the most attended token plus this many tokens on each side
    evidence_window: int = Field(2, ge=0)
    #: no new epoch starts once training has run this long (None = no limit)
    max_train_minutes: float | None = Field(None, gt=0)
    #: folder for per-epoch checkpoints; a rerun with the same data and settings resumes there
    checkpoint_dir: str | None = None


#: settings that do not change what an epoch computes: a checkpoint stays resumable across them
RUN_INDEPENDENT = {"epochs", "patience", "max_train_minutes", "checkpoint_dir", "threads"}


# ----------------------------------------------------------------------------- labels


@dataclass
class LabelSpace:
    """The codes a model can predict: every (code, system) seen in training, in a fixed order."""

    labels: list[tuple[str, str]]
    index: dict[tuple[str, str], int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def from_documents(cls, documents: Sequence[Document]) -> LabelSpace:
        labels: list[tuple[str, str]] = sorted({(gold.code, gold.system) for doc in documents for gold in doc.codes})
        if not labels:
            raise InputError("the training documents carry no codes: nothing to learn")
        return cls(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def targets(self, documents: Sequence[Document]) -> np.ndarray:
        """Multi-hot matrix (documents x labels); codes outside the space are ignored."""
        matrix = np.zeros((len(documents), len(self.labels)), dtype=np.float32)
        for row, doc in enumerate(documents):
            for gold in doc.codes:
                column = self.index.get((gold.code, gold.system))
                if column is not None:
                    matrix[row, column] = 1.0
        return matrix

    def diagnosis_mask(self) -> np.ndarray:
        return np.array([system in DIAGNOSIS_SYSTEMS for _, system in self.labels], dtype=bool)

    def to_json(self) -> list[list[str]]:
        return [list(label) for label in self.labels]

    @classmethod
    def from_json(cls, data: list[list[str]]) -> LabelSpace:
        return cls([(code, system) for code, system in data])


# ----------------------------------------------------------------------------- model head


class LabelWiseAttention(nn.Module):
    """LAAT head: ``Z = tanh(W H)``, ``A = softmax(U Z)`` per label, ``V = A H``, one logit per label."""

    def __init__(self, input_dim: int, attention_dim: int, num_labels: int):
        super().__init__()
        self.project = nn.Linear(input_dim, attention_dim, bias=False)
        self.label_queries = nn.Linear(attention_dim, num_labels, bias=False)
        self.output_weight = nn.Parameter(torch.empty(num_labels, input_dim))
        self.output_bias = nn.Parameter(torch.zeros(num_labels))
        nn.init.xavier_uniform_(self.output_weight)
        nn.init.xavier_uniform_(self.project.weight)
        nn.init.xavier_uniform_(self.label_queries.weight)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``hidden`` (B, n, h), ``mask`` (B, n) true on real tokens -> logits (B, L), attention (B, L, n)."""
        scores = self.label_queries(torch.tanh(self.project(hidden))).transpose(1, 2)
        scores = scores.masked_fill(~mask.unsqueeze(1), torch.finfo(scores.dtype).min)
        attention = torch.softmax(scores, dim=-1)
        label_vectors = attention @ hidden
        logits = (label_vectors * self.output_weight).sum(-1) + self.output_bias
        return logits, attention


# ----------------------------------------------------------------------------- examples


@dataclass
class Example:
    """One note made ready for a model: its tensors and the character span of every position."""

    doc_id: str
    inputs: dict[str, torch.Tensor]
    #: (start, end) per model position, ``NO_SPAN`` where the position is not note text
    spans: list[tuple[int, int]]
    num_tokens: int


Collate = Callable[[Sequence[Example]], dict[str, torch.Tensor]]
#: model(batch) -> (logits (B, L), attention (B, L, n))
Forward = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]


# ----------------------------------------------------------------------------- metrics used for model selection


def micro_f1(probabilities: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray) -> float:
    predicted = probabilities >= threshold
    true_positives = float((predicted & (targets > 0)).sum())
    denominator = float(predicted.sum() + (targets > 0).sum())
    return 2 * true_positives / denominator if denominator else 0.0


def mean_average_precision(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """MAP of the full ranking per document (documents without gold labels are skipped)."""
    precisions = []
    for scores, gold in zip(probabilities, targets, strict=True):
        if gold.sum() == 0:
            continue
        hits = gold[np.argsort(-scores, kind="stable")] > 0
        ranks = np.flatnonzero(hits) + 1
        precisions.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
    return float(np.mean(precisions)) if precisions else 0.0


def tune_thresholds(probabilities: np.ndarray, targets: np.ndarray, diagnosis: np.ndarray) -> dict[str, float]:
    """The micro-F1-best threshold of the shared grid for diagnoses and for procedures, searched separately
    (:func:`icdcoder.evaluate.thresholds.best_threshold`)."""
    tuned: dict[str, float] = {}
    for group, columns in (("diagnosis", diagnosis), ("procedure", ~diagnosis)):
        if not columns.any():
            tuned[group] = 0.5
            continue
        ranked, gold = {}, {}
        for row, (scores, labels) in enumerate(zip(probabilities[:, columns], targets[:, columns] > 0, strict=True)):
            order = np.argsort(-scores, kind="stable")
            ranked[row] = list(zip(scores[order].tolist(), order.tolist(), strict=True))
            gold[row] = set(np.flatnonzero(labels).tolist())
        tuned[group] = best_threshold(ranked, gold)["threshold"]
    return tuned


def threshold_vector(thresholds: dict[str, float], diagnosis: np.ndarray) -> np.ndarray:
    return np.where(diagnosis, thresholds["diagnosis"], thresholds["procedure"])


# ----------------------------------------------------------------------------- training loop


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able parts: a checkpoint is only resumed by the run that made it."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def batches(examples: Sequence[Example], size: int, order: Sequence[int] | None = None) -> list[list[int]]:
    order = list(range(len(examples))) if order is None else list(order)
    return [order[i : i + size] for i in range(0, len(order), size)]


def length_bucketed_batches(examples: Sequence[Example], size: int, seed: int, pool: int = 20) -> list[list[int]]:
    """Shuffled batches of similar-length notes: less padding, so far less wasted attention compute.

    Notes are shuffled, cut into pools of ``pool`` batches, sorted by length
    inside a pool, batched, and the batches shuffled again. The order depends on
    ``seed`` only, so a resumed run sees the same batches.
    """
    rng = np.random.default_rng(seed)
    order = [int(i) for i in rng.permutation(len(examples))]
    grouped: list[list[int]] = []
    for start in range(0, len(order), size * pool):
        members = sorted(order[start : start + size * pool], key=lambda i: examples[i].num_tokens)
        grouped.extend(members[i : i + size] for i in range(0, len(members), size))
    return [grouped[i] for i in rng.permutation(len(grouped))]


def epoch_progress_bar() -> Progress:
    return progress_bar(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn()
    )


@torch.no_grad()
def collect_probabilities(
    module: nn.Module, forward: Forward, examples: Sequence[Example], collate: Collate, batch_size: int
) -> np.ndarray:
    module.eval()
    rows: dict[int, np.ndarray] = {}
    for chunk in batches(examples, batch_size, by_length(examples)):
        logits, _ = forward(collate([examples[i] for i in chunk]))
        rows.update(zip(chunk, torch.sigmoid(logits.float()).numpy(), strict=True))
    return np.stack([rows[i] for i in range(len(examples))]) if rows else np.zeros((0, 0), dtype=np.float32)


def by_length(examples: Sequence[Example]) -> list[int]:
    """Indices of ``examples`` shortest first: inference batches with little padding."""
    return sorted(range(len(examples)), key=lambda i: examples[i].num_tokens)


class TrainState(TypedDict):
    """Where a training run is: what a checkpoint keeps to resume it."""

    epoch: int
    best_score: float
    best_epoch: int
    history: list[dict[str, float]]
    #: epochs since the best one (early stopping's patience)
    stale: int
    #: training seconds so far, earlier runs included
    seconds: float


@dataclass
class TrainOutcome:
    thresholds: dict[str, float]
    history: list[dict[str, float]]
    best_epoch: int
    epochs_run: int
    #: training seconds spent by earlier runs this one resumed from
    resumed_seconds: float = 0.0


def _selection_score(metric: str, probabilities: np.ndarray, targets: np.ndarray, diagnosis: np.ndarray) -> float:
    if metric == "map":
        return mean_average_precision(probabilities, targets)
    thresholds = tune_thresholds(probabilities, targets, diagnosis)
    return micro_f1(probabilities, targets, threshold_vector(thresholds, diagnosis))


def train_label_attention(
    module: nn.Module,
    forward: Forward,
    collate: Collate,
    train: tuple[Sequence[Example], np.ndarray],
    dev: tuple[Sequence[Example], np.ndarray] | None,
    labels: LabelSpace,
    settings: TrainSettings,
    run_id: str,
    learning_rates: dict[str, float] | None = None,
) -> TrainOutcome:
    """BCE training with early stopping on dev; checkpoints each epoch and resumes a matching run.

    ``run_id`` fingerprints the data and settings: a checkpoint written by a
    different run is ignored (and overwritten), never half-resumed.
    ``learning_rates`` maps parameter-name prefixes to their own learning rate
    (a pretrained encoder wants a far smaller one than a fresh head).
    """
    train_examples, train_targets = train
    optimizer = torch.optim.AdamW(
        _parameter_groups(module, settings.learning_rate, learning_rates or {}),
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
    )
    loss_function = nn.BCEWithLogitsLoss()
    diagnosis = labels.diagnosis_mask()
    state = TrainState(epoch=0, best_score=-1.0, best_epoch=0, history=[], stale=0, seconds=0.0)
    checkpoint = Path(settings.checkpoint_dir) if settings.checkpoint_dir else None
    best_weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
    if checkpoint is not None:
        best_weights = _resume(checkpoint, run_id, module, optimizer, state) or best_weights
    resumed_seconds = state["seconds"]  # the wall-clock cap and the reported cost count every run
    with epoch_progress_bar() as progress:
        task = progress.add_task("epochs", total=settings.epochs, completed=state["epoch"])
        started = time.perf_counter()
        while state["epoch"] < settings.epochs and state["stale"] < settings.patience:
            if (
                settings.max_train_minutes
                and resumed_seconds + time.perf_counter() - started > 60 * settings.max_train_minutes
            ):
                break
            epoch = state["epoch"] + 1
            loss = _train_one_epoch(
                module,
                forward,
                collate,
                train_examples,
                train_targets,
                optimizer,
                loss_function,
                settings,
                epoch,
                progress,
            )
            record: dict[str, float] = {"epoch": epoch, "train_loss": loss}
            if dev is not None:
                probabilities = collect_probabilities(module, forward, dev[0], collate, settings.batch_size)
                score = _selection_score(settings.selection_metric, probabilities, dev[1], diagnosis)
                record["dev_" + settings.selection_metric] = score
            else:
                score = -loss
            state["history"].append(record)
            state["epoch"] = epoch
            state["seconds"] = resumed_seconds + time.perf_counter() - started
            # a tie keeps the later (longer trained) weights but does not reset the patience
            state["stale"] = 0 if score > state["best_score"] else state["stale"] + 1
            if score >= state["best_score"]:
                state["best_score"], state["best_epoch"] = score, epoch
                best_weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
            if checkpoint is not None:
                _save_checkpoint(checkpoint, run_id, module, optimizer, state, best_weights)
            progress.update(task, advance=1)
    module.load_state_dict(best_weights)
    thresholds = {"diagnosis": settings.default_threshold, "procedure": settings.default_threshold}
    if dev is not None:
        probabilities = collect_probabilities(module, forward, dev[0], collate, settings.batch_size)
        thresholds = tune_thresholds(probabilities, dev[1], diagnosis)
    return TrainOutcome(thresholds, state["history"], state["best_epoch"], state["epoch"], resumed_seconds)


def _parameter_groups(module: nn.Module, default: float, by_prefix: dict[str, float]) -> list[dict[str, Any]]:
    groups: dict[float, list[nn.Parameter]] = {}
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            rate = next((lr for prefix, lr in by_prefix.items() if name.startswith(prefix)), default)
            groups.setdefault(rate, []).append(parameter)
    return [{"params": params, "lr": rate} for rate, params in groups.items()]


def _train_one_epoch(
    module: nn.Module,
    forward: Forward,
    collate: Collate,
    examples: Sequence[Example],
    targets: np.ndarray,
    optimizer: torch.optim.Optimizer,
    loss_function: nn.Module,
    settings: TrainSettings,
    epoch: int,
    progress: Progress,
) -> float:
    module.train()
    task = progress.add_task(f"epoch {epoch}", total=len(examples))
    total, count = 0.0, 0
    for chunk in length_bucketed_batches(examples, settings.batch_size, settings.seed + epoch):
        logits, _ = forward(collate([examples[i] for i in chunk]))
        loss = loss_function(logits.float(), torch.from_numpy(targets[chunk]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(chunk)
        count += len(chunk)
        progress.update(task, advance=len(chunk))
    progress.remove_task(task)
    return total / max(count, 1)


def _save_checkpoint(
    directory: Path,
    run_id: str,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    best_weights: dict[str, torch.Tensor],
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "run_id": run_id,
        "state": state,
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "best": best_weights,
    }
    with atomic_write(directory / "last.pt", "wb") as handle:
        torch.save(payload, handle)


def _resume(
    directory: Path, run_id: str, module: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState
) -> dict[str, torch.Tensor] | None:
    path = directory / "last.pt"
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("run_id") != run_id:
        return None
    module.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    state.update(payload["state"])
    return payload["best"]


# ----------------------------------------------------------------------------- decoding


def fit_report(started: float, train_tokens: int, outcome: TrainOutcome, extra: dict[str, Any]) -> FitReport:
    """The cost of a fit; a resumed fit adds the training seconds of the runs it continued."""
    return FitReport(
        wall_seconds=round(time.perf_counter() - started + outcome.resumed_seconds, 2),
        train_tokens=train_tokens,
        peak_rss_mb=round(peak_rss_mb(), 1),
        extra={
            "best_epoch": outcome.best_epoch,
            "epochs_run": outcome.epochs_run,
            "resumed_seconds": round(outcome.resumed_seconds, 2),
            **extra,
        },
    )


def widen_to_words(text: str, start: int, end: int) -> tuple[int, int]:
    """Grow a character span so it does not cut a word (subword tokens start mid-word)."""
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    while end < len(text) and text[end].isalnum():
        end += 1
    return start, end


def evidence_for(attention: np.ndarray, spans: Sequence[tuple[int, int]], text: str, window: int) -> list[Evidence]:
    """The most attended note position plus ``window`` positions either side, as one character piece."""
    real = [i for i, span in enumerate(spans) if span != NO_SPAN and i < len(attention)]
    if not real:
        return []
    best = max(real, key=lambda i: attention[i])
    around = [spans[i] for i in real if abs(i - best) <= window]
    start, end = widen_to_words(text, min(s for s, _ in around), max(e for _, e in around))
    return [Evidence(pieces=((start, end),))] if end > start else []


@torch.no_grad()
def decode_predictions(
    module: nn.Module,
    forward: Forward,
    collate: Collate,
    documents: Sequence[Document],
    examples: Sequence[Example],
    labels: LabelSpace,
    thresholds: dict[str, float],
    settings: TrainSettings,
) -> list[DocumentPrediction]:
    """Codes above their threshold (at least ``min_codes``), best first, each with attention evidence."""
    module.eval()
    cutoff = threshold_vector(thresholds, labels.diagnosis_mask())
    predictions: dict[int, DocumentPrediction] = {}
    for chunk in batches(examples, settings.batch_size, by_length(examples)):
        logits, attention = forward(collate([examples[i] for i in chunk]))
        probabilities = torch.sigmoid(logits.float()).numpy()
        for row, index in enumerate(chunk):
            chosen = _choose_labels(probabilities[row], cutoff, settings.min_codes)
            doc = documents[index]
            codes = [
                CodePrediction(
                    code=labels.labels[j][0],
                    system=labels.labels[j][1],
                    score=float(probabilities[row, j]),
                    evidence=evidence_for(
                        attention[row, j].float().numpy(), examples[index].spans, doc.text, settings.evidence_window
                    ),
                )
                for j in chosen
            ]
            ranked = top_scored(probabilities[row], labels.labels)
            predictions[index] = DocumentPrediction(
                doc_id=doc.id, codes=codes, candidates=ranking_candidates(codes, ranked)
            )
    return [predictions[i] for i in range(len(examples))]


def _choose_labels(probabilities: np.ndarray, cutoff: np.ndarray, min_codes: int) -> list[int]:
    ranked = np.argsort(-probabilities, kind="stable")
    above = [int(j) for j in ranked if probabilities[j] >= cutoff[j]]
    if len(above) < min_codes:
        above = [int(j) for j in ranked[:min_codes]]
    return above


# ----------------------------------------------------------------------------- folders


def write_json(path: Path, data: Any) -> None:
    with atomic_write(path) as handle:
        json.dump(data, handle, ensure_ascii=False, indent=2)


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError("missing file in saved model folder", path=path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"malformed JSON ({err.msg})", path=path, line=err.lineno) from None


def save_weights(path: Path, module: nn.Module) -> None:
    with atomic_write(path, "wb") as handle:
        torch.save(module.state_dict(), handle)


def load_weights(path: Path, module: nn.Module) -> None:
    if not path.is_file():
        raise InputError("missing weights in saved model folder", path=path)
    module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def save_trained(predictor: Any, directory: str | Path) -> Path:
    """The files every label-attention baseline saves: weights, label space, and meta (settings,
    thresholds, training history and cost). Returns the folder, for the baseline's own extra files."""
    from icdcoder.baselines.base import write_meta

    if predictor.network is None or predictor.labels is None:
        raise InputError(f"nothing to save: the {predictor.name} model is not trained")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder / "model.pt", predictor.network)
    write_json(folder / "labels.json", predictor.labels.to_json())
    write_meta(
        folder,
        predictor.name,
        predictor.settings,
        predictor.report or FitReport(),
        thresholds=predictor.thresholds,
        history=predictor.history,
    )
    return folder


def restore_trained(predictor: Any, folder: Path, meta: dict[str, Any]) -> None:
    """Fill a predictor whose network is built (same shape) from the files of :func:`save_trained`."""
    from icdcoder.baselines.base import fit_report_from_meta

    load_weights(folder / "model.pt", predictor.network)
    predictor.network.eval()
    predictor.thresholds = meta["thresholds"]
    predictor.history = meta.get("history", [])
    predictor.report = fit_report_from_meta(meta)
