"""Training data and LoRA training for the span-level LLM verifier (issue 28).

The verifier reads one candidate code of the coder in its evidence sentence and answers keep/drop
(:mod:`icdcoder.models.verifier`). Its training data comes from the coder itself: the training notes are coded
cross-fitted (each fold by a coder whose retriever and lexicons were built on the other folds, so its candidates
carry inference-time errors), every candidate is labelled by the note's gold codes, and the candidates whose fused
score lies in an uncertain band around the threshold become examples:

- ``positive``: a gold code;
- ``specificity``: not gold, but a gold code of the note is its ancestor or descendant (I21 vs I21.9);
- ``sibling``: not gold, but a gold code of the note shares its category (N18.30 vs N18.9);
- ``negative``: any other wrong candidate.

The coder is used only through its public interface (``SpanPredictor.predict`` with its thresholds lowered), so
every candidate carries the fused score and evidence that the shipped coder ranks by.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import typer
from pydantic import Field

from icdcoder.config import StrictModel, load_config
from icdcoder.data.schema import Document
from icdcoder.errors import InputError
from icdcoder.io import atomic_write, read_text
from icdcoder.train.config import LoraSettings

log = logging.getLogger(__name__)

KINDS = ("positive", "specificity", "sibling", "negative")
#: characters that end a sentence of a CodiEsp note
_SENTENCE_END = re.compile(r"[.;\n]\s")


class ScoreBand(StrictModel):
    """The fused scores, per system, whose candidates the verifier reads: ``low <= score < high``."""

    low: dict[str, float] = Field(default_factory=lambda: {"icd10cm": 0.1, "icd10pcs": 0.15})
    high: dict[str, float] = Field(default_factory=lambda: {"icd10cm": 0.3, "icd10pcs": 0.4})

    def contains(self, system: str, score: float) -> bool:
        return self.low.get(system, 0.0) <= score < self.high.get(system, 1.0)


class VerifierConfig(StrictModel):
    """One verifier run (``configs/verifier/*.yaml``)."""

    backbone: str = "smollm2-135m"
    lora: LoraSettings = LoraSettings(
        r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
    )
    band: ScoreBand = ScoreBand()
    max_prompt_tokens: int = Field(128, ge=32)
    #: words of the evidence sentence kept around the evidence span
    sentence_words: int = Field(24, ge=4)
    #: sibling candidates of the same category shown with the code
    siblings: int = Field(2, ge=0)
    #: training examples kept (all positives first up to half, then hard negatives before the others)
    max_examples: int = Field(4000, ge=1)
    epochs: float = Field(1.0, gt=0.0)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(3e-4, gt=0.0)
    #: stop after this many seconds of training (the adapter is saved either way); null: no limit
    max_seconds: float | None = Field(None, gt=0.0)
    threads: int | None = Field(None, ge=1)
    #: where training and scoring run ("auto": a CUDA GPU where torch sees one, in bfloat16 autocast; else the CPU)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    output_dir: Path = Path("/work/verifier_runs/adapter")


def load_verifier_config(path: str | Path, overrides: dict | None = None) -> VerifierConfig:
    return load_config(path, VerifierConfig, overrides)


@dataclass
class VerifierCandidate:
    """One code the coder proposed for one note, with what the verifier reads and, for labelled notes, its label."""

    doc_id: str
    code: str
    system: str
    #: the coder's fused score
    score: float
    #: the evidence sentence (or window) of the note
    sentence: str
    #: the evidence span inside ``sentence`` (-1, -1: the code was found only in the translation's sentence)
    span_start: int = -1
    span_end: int = -1
    #: other candidate codes of the note in the same category, best first
    siblings: list[str] = field(default_factory=list)
    untrained: bool = False
    kind: str | None = None
    #: the coder's evidence for the code, as ``[start, end]`` offsets into the note (what CodiEsp-X scores)
    evidence: list[list[int]] = field(default_factory=list)

    @property
    def gold(self) -> bool | None:
        return None if self.kind is None else self.kind == "positive"


def evidence_window(text: str, start: int, end: int, max_words: int) -> tuple[str, int, int]:
    """The sentence of ``text`` around ``[start, end)``, cut to about ``max_words`` words centred on the span; the
    window and the span's offsets inside it."""
    left = max((m.end() for m in _SENTENCE_END.finditer(text, 0, start)), default=0)
    found = _SENTENCE_END.search(text, end)
    right = found.start() + 1 if found else len(text)
    before = text[left:start].split()
    after = text[end:right].split()
    span_words = len(text[start:end].split())
    room = max(0, max_words - span_words)
    keep_before = min(len(before), max(room // 2, room - len(after)))
    keep_after = min(len(after), room - keep_before)
    head = " ".join(before[len(before) - keep_before :]) if keep_before else ""
    tail = " ".join(after[:keep_after])
    span = " ".join(text[start:end].split())
    window_start = len(head) + 1 if head else 0
    window = " ".join(part for part in (head, span, tail) if part)
    return window, window_start, window_start + len(span)


def label_kind(code: str, system: str, gold: AbstractSet[tuple[str, str]]) -> str:
    """``positive``, ``specificity``, ``sibling`` or ``negative`` (see the module docstring)."""
    if (code, system) in gold:
        return "positive"
    bare = code.replace(".", "")
    related = [g.replace(".", "") for g, s in gold if s == system]
    if any(g.startswith(bare) or bare.startswith(g) for g in related):
        return "specificity"
    if any(g[:3] == bare[:3] for g in related):
        return "sibling"
    return "negative"


def category(code: str) -> str:
    """The 3-character category of an ICD-10 code (the first 3 characters of a PCS code: section, body system, operation)."""
    return code.replace(".", "")[:3]


def candidates_of(
    document: Document, prediction, max_words: int, labelled: bool, trained: AbstractSet[tuple[str, str]] = frozenset()
) -> list[VerifierCandidate]:
    """Every code of one note's prediction as a :class:`VerifierCandidate` (a code without evidence is skipped);
    ``trained``: the codes the coder's training notes carry (the others are marked ``untrained``)."""
    gold = {(g.code, g.system) for g in document.codes} if labelled else set()
    by_category: dict[tuple[str, str], list[str]] = {}
    for item in prediction.ranked():
        by_category.setdefault((category(item.code), item.system), []).append(item.code)
    result = []
    for item in prediction.ranked():
        pieces = item.evidence or item.sentence_evidence
        if not pieces:
            continue
        start, end = pieces[0].start, pieces[0].end
        if item.evidence:
            sentence, span_start, span_end = evidence_window(document.text, start, end, max_words)
        else:
            sentence, span_start, span_end = " ".join(document.text[start:end].split()[:max_words]), -1, -1
        siblings = [c for c in by_category[(category(item.code), item.system)] if c != item.code]
        result.append(
            VerifierCandidate(
                doc_id=document.id,
                code=item.code,
                system=item.system,
                score=item.score,
                sentence=sentence,
                span_start=span_start,
                span_end=span_end,
                siblings=siblings[:4],
                untrained=(item.code, item.system) not in trained,
                kind=label_kind(item.code, item.system, gold) if labelled else None,
                evidence=[[e.start, e.end] for e in item.evidence],
            )
        )
    return result


def with_thresholds_lowered(coder):
    """``coder`` set to keep every code with a positive fused score (its ranking and scores unchanged)."""
    settings = coder.settings
    zero = {system: 0.0 for system in settings.threshold}
    lowered = {"threshold": zero, "untrained_threshold": {}}
    coder.settings = settings.model_copy(
        update={
            **lowered,
            "by_language": {lang: o.model_copy(update=lowered) for lang, o in settings.by_language.items()},
        }
    )
    return coder


def coder_candidates(
    coder, documents: Sequence[Document], max_words: int, trained: set[tuple[str, str]], labelled: bool = True
) -> list[VerifierCandidate]:
    """The candidates of ``coder`` (its thresholds lowered) for ``documents``; ``trained``: the codes of its training notes."""
    predictions = with_thresholds_lowered(coder).predict(list(documents))
    return [
        c
        for document, p in zip(documents, predictions)
        for c in candidates_of(document, p, max_words, labelled, trained)
    ]


def gold_codes(documents: Sequence[Document]) -> set[tuple[str, str]]:
    return {(g.code, g.system) for document in documents for g in document.codes}


def cross_fitted_candidates(
    coder_dir: str | Path, train: Sequence[Document], data_settings, folds: int, max_words: int
) -> list[VerifierCandidate]:
    """The training notes' candidates, each fold coded by the coder of ``coder_dir`` (its settings) with a retriever and
    lexicons built on the other folds only."""
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.train.fusion_trees import fold_coder, split_fold

    shipped = SpanPredictor.load(coder_dir)
    candidates: list[VerifierCandidate] = []
    for fold in range(folds):
        started = time.time()
        held_out, rest = split_fold(train, fold, folds)
        coder = fold_coder(shipped, rest, data_settings)
        candidates += coder_candidates(coder, held_out, max_words, gold_codes(rest))
        log.info("fold %d: %d notes coded in %.0f s", fold, len(held_out), time.time() - started)
    return candidates


def write_candidates(path: str | Path, candidates: Sequence[VerifierCandidate]) -> None:
    with atomic_write(path) as handle:
        for candidate in candidates:
            handle.write(json.dumps(asdict(candidate), ensure_ascii=False) + "\n")


def read_candidates(path: str | Path) -> list[VerifierCandidate]:
    """Candidates written by :func:`write_candidates`; a malformed line is an :class:`InputError` naming it."""
    result = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            result.append(VerifierCandidate(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as err:
            raise InputError(
                f"line {number}: not a verifier candidate ({str(err).splitlines()[0]})", path=path
            ) from None
    return result


def in_band(candidates: Sequence[VerifierCandidate], band: ScoreBand) -> list[VerifierCandidate]:
    return [c for c in candidates if band.contains(c.system, c.score)]


def training_examples(
    candidates: Sequence[VerifierCandidate], max_examples: int, seed: int = 0
) -> list[VerifierCandidate]:
    """Labelled candidates for training: positives up to half of ``max_examples``, then hard negatives (specificity,
    sibling), then other negatives; shuffled."""
    rng = random.Random(seed)
    by_kind = {kind: [c for c in candidates if c.kind == kind] for kind in KINDS}
    for group in by_kind.values():
        rng.shuffle(group)
    positives = by_kind["positive"][: max_examples // 2]
    negatives = (by_kind["specificity"] + by_kind["sibling"] + by_kind["negative"])[: max_examples - len(positives)]
    chosen = positives + negatives
    rng.shuffle(chosen)
    return chosen


def kind_counts(candidates: Sequence[VerifierCandidate]) -> dict[str, int]:
    return dict(Counter(c.kind or "unlabelled" for c in candidates))


def train_verifier(config: VerifierConfig, examples: Sequence[VerifierCandidate], ontology) -> dict:
    """LoRA-train ``config.backbone`` to answer yes (keep) / no (drop) for each example: cross-entropy over the two
    answer tokens' logits at the prompt's end, the same quantity :class:`icdcoder.models.verifier.VerifierScorer`
    reads. Saves the adapter and tokenizer to ``config.output_dir``; returns what training cost."""
    import torch
    from peft import get_peft_model

    from icdcoder.models.loading import compute_device, load_causal_lm
    from icdcoder.models.verifier import VerifierScorer, candidate_prompt_ids

    examples = [e for e in examples if e.gold is not None]
    if not examples:
        raise InputError("no labelled verifier examples to train on")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model, tokenizer = load_causal_lm(config.backbone)
    peft_config = config.lora.to_peft()
    if peft_config is None:
        raise InputError("the verifier trains a LoRA adapter: set lora.enabled true")
    device = compute_device(config.device)
    model = get_peft_model(model, peft_config).to(device)
    scorer = VerifierScorer(model, tokenizer, max_prompt_tokens=config.max_prompt_tokens)
    prompts = [(candidate_prompt_ids(tokenizer, e, ontology, config), 1 if e.gold else 0) for e in examples]
    encoded = [(ids, label) for ids, label in prompts if ids is not None]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    steps = max(1, math.ceil(len(encoded) * config.epochs / config.batch_size))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 10) * max(0.0, 1 - step / steps)
    )
    rng = random.Random(config.seed)
    order: list[int] = []
    started, tokens, losses, step = time.time(), 0, [], 0
    model.train()
    while step < steps:
        if len(order) < config.batch_size:
            order += rng.sample(range(len(encoded)), len(encoded))
        batch, order = [encoded[i] for i in order[: config.batch_size]], order[config.batch_size :]
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = scorer.answer_logits([ids for ids, _ in batch])
        answers = torch.tensor([1 - label for _, label in batch], device=logits.device)
        loss = torch.nn.functional.cross_entropy(logits, answers)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        tokens += sum(len(ids) for ids, _ in batch)
        losses.append(loss.item())
        step += 1
        if step % 20 == 0:
            log.info(
                "step %d/%d loss %.4f (%.0f tokens/s)",
                step,
                steps,
                sum(losses[-20:]) / 20,
                tokens / (time.time() - started),
            )
        if config.max_seconds and time.time() - started > config.max_seconds:
            break
    for saved in model.peft_config.values():
        saved.base_model_name_or_path = (
            config.backbone
        )  # so that ``load_causal_lm(output_dir)`` finds the base anywhere
    model.save_pretrained(config.output_dir)
    tokenizer.save_pretrained(config.output_dir)
    adapter_bytes = sum(p.stat().st_size for p in Path(config.output_dir).glob("adapter_model.*"))
    return {
        "device": device,
        "examples": len(encoded),
        "steps": step,
        "planned_steps": steps,
        "train_tokens": tokens,
        "wall_seconds": round(time.time() - started, 1),
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "adapter_mb": round(adapter_bytes / 2**20, 2),
        "output_dir": str(config.output_dir),
    }


def train_verifier_command(
    config: Annotated[Path, typer.Option("--config", help="Verifier config (configs/verifier/*.yaml).")],
    candidates: Annotated[
        Path, typer.Option("--candidates", help="Labelled candidate dump (JSONL) of the training notes.")
    ],
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a field: a.b=value (repeatable)")] = None,
) -> None:
    """Train the span-level verifier's LoRA adapter on the band candidates of a cross-fitted candidate dump
    (the candidates stage of 'icdcoder experiment run verifier_study'); prints what training cost as JSON."""
    from icdcoder.ontology import load_ontology
    from icdcoder.train.cli import parse_overrides

    settings = load_verifier_config(config, overrides=parse_overrides(set_ or []))
    examples = training_examples(
        in_band(read_candidates(candidates), settings.band), settings.max_examples, settings.seed
    )
    typer.echo(
        json.dumps({"examples_by_kind": kind_counts(examples), **train_verifier(settings, examples, load_ontology())})
    )
