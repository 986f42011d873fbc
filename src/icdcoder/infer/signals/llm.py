"""The LLM's reading of each segment (fused value ``llm``), for the segments the cheap filter lets through (or for
each window of ``llm_window_words``).

``CoderSettings.llm_mode`` "generate": the LLM writes answer lines (codes with quotes), each scored by ``exp`` of the
mean token log-prob of the line; invented codes and quotes not in the note are dropped and counted. "score": one
forward pass per segment reads how likely the answer opens with each shown candidate; no quotes written, a
candidate's evidence is its training form in the segment, else the segment. The model itself belongs to the coder
(``model/`` of the coder folder, fitted by SFT): this signal learns and saves nothing.

A verifier that re-reads the fused candidates (issue 28) would be a signal of its own beside this one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from icdcoder.infer.signals.base import (
    NoteContext,
    NoteOutputs,
    NoteSignal,
    ScoredCode,
    SignalSpec,
)
from icdcoder.infer.signals.retrieval import retrieval_scale, surface_span
from icdcoder.ontology.labels import CODER_SYSTEMS
from icdcoder.prompt import answer_opening, build_prompt, parse_answer
from icdcoder.spans.segment import note_windows

if TYPE_CHECKING:
    from icdcoder.infer.coder import SpanPredictor

#: one piece of text for the LLM: (note index in the chunk, text, its start in the note, candidates shown)
Job = tuple[int, str, int, list]


class LlmSignal(NoteSignal):
    specs: ClassVar[tuple[SignalSpec, ...]] = (
        SignalSpec(
            "llm",
            "llm_weight",
            default_weight=0.5,
            grid=(0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
            description="weight of the LLM's confidence",
        ),
    )

    def __init__(self) -> None:
        self._generator = None
        self._model = None

    def score(self, coder: SpanPredictor, notes: Sequence[NoteContext], outputs: Sequence[NoteOutputs]) -> None:
        if not (coder.settings.use_llm and coder.model is not None):
            return
        jobs = [
            job
            for index, (note, output) in enumerate(zip(notes, outputs))
            for job in self._jobs(coder, index, note, output)
        ]
        if jobs:
            self.run(coder, jobs, outputs)

    def run(self, coder: SpanPredictor, jobs: list[Job], outputs: Sequence[NoteOutputs]) -> None:
        """The LLM on every job (``CoderSettings.llm_mode``); its values join the notes' outputs."""
        if coder.settings.llm_mode == "score":
            self._score_candidates(coder, jobs, outputs)
        else:
            self._generate_answers(coder, jobs, outputs)

    @staticmethod
    def _jobs(coder: SpanPredictor, index: int, note: NoteContext, output: NoteOutputs) -> list[Job]:
        """What the LLM reads of one note: the segments whose best retrieval score passes the cheap filter, or the
        note's windows; counted in ``output.llm_segments``."""
        settings, text = coder.settings, note.document.text
        if settings.llm_window_words:
            windows = note_windows(text, max_words=settings.llm_window_words)
            jobs: list[Job] = [(index, window.text(text), window.start, []) for window in windows]
        else:
            scale = retrieval_scale(coder.fitted_retriever)
            jobs = [
                (index, segment_text, segment.start, [c.as_candidate() for c in found[: settings.candidates_k]])
                for segment, segment_text, found in note.retrieved
                if (found[0].score / scale if found else 0.0) >= settings.min_retrieval_score
            ]
        output.llm_segments += len(jobs)
        return jobs

    def generator(self, coder: SpanPredictor):
        """The generator (or candidate scorer) of the coder's model, built on first use."""
        if self._generator is None or self._model is not coder.model:
            self._generator, self._model = make_generator(coder.model, coder.tokenizer, coder.settings), coder.model
        return self._generator

    def _score_candidates(self, coder: SpanPredictor, jobs: list[Job], outputs: Sequence[NoteOutputs]) -> None:
        """Each shown candidate's value: the probability that the answer opens with its line."""
        prompts = [build_prompt(text, candidates) for _, text, _, candidates in jobs]
        openings = [[answer_opening(candidate.code) for candidate in candidates] for *_, candidates in jobs]
        scores = self.generator(coder).score(prompts, openings)
        for (note_index, text, offset, candidates), logprobs in zip(jobs, scores):
            for candidate, logprob in zip(candidates, logprobs):
                resolved = coder.resolve(candidate.code)
                if resolved is None:  # a training code the ontology does not hold: retrieval alone scores it
                    continue
                code, system = resolved
                start, end = surface_span(coder.fitted_retriever, code, system, text) or (0, len(text))
                outputs[note_index].scored.append(
                    ScoredCode(code, system, {"llm": math.exp(logprob)}, start=offset + start, end=offset + end)
                )

    def _generate_answers(self, coder: SpanPredictor, jobs: list[Job], outputs: Sequence[NoteOutputs]) -> None:
        """Generate for every job in batches and merge the parsed lines into the notes' outputs."""
        prompts = [build_prompt(text, candidates) for _, text, _, candidates in jobs]
        factory = None
        if coder.settings.constrained:
            from icdcoder.models.constrained import constraint_factory

            codes = [code for code, system in coder.fitted_retriever.codes if system in CODER_SYSTEMS]
            factory = constraint_factory(coder.tokenizer, codes, {p: job[1] for p, job in zip(prompts, jobs)})
        generations = self.generator(coder).generate(prompts, logits_processor_factory=factory)
        for (note_index, text, offset, _candidates), generation in zip(jobs, generations):
            note = outputs[note_index]
            parsed = parse_answer(generation.text, text, coder.resolve)
            note.dropped.update(parsed.dropped)
            confidence = confidence_by_code(generation, coder.resolve)
            for item in parsed.items:
                note.scored.append(
                    ScoredCode(
                        item.code,
                        item.system,
                        {"llm": confidence.get(item.code, 0.0)},
                        start=offset + item.start,
                        end=offset + item.end,
                    )
                )


def make_generator(model, tokenizer, settings):
    """The generator for ``settings``: a candidate scorer ("score"), vLLM or transformers ``generate``."""
    from icdcoder.models.generation import HFGenerator, VLLMGenerator, pick_backend

    if settings.llm_mode == "score":
        from icdcoder.models.scoring import CandidateScorer

        return CandidateScorer(
            model, tokenizer, batch_size=settings.batch_size, max_prompt_tokens=settings.max_prompt_tokens
        )
    if pick_backend(settings.backend, settings.constrained) == "vllm":
        return VLLMGenerator.from_model(
            model, tokenizer, max_new_tokens=settings.max_new_tokens, max_prompt_tokens=settings.max_prompt_tokens
        )
    return HFGenerator(
        model,
        tokenizer,
        batch_size=settings.batch_size,
        max_new_tokens=settings.max_new_tokens,
        max_prompt_tokens=settings.max_prompt_tokens,
    )


def confidence_by_code(generation, resolve) -> dict[str, float]:
    """Confidence of each answer line, keyed by the canonical code it names (first line wins)."""
    result: dict[str, float] = {}
    for line, confidence in zip(generation.text.splitlines(), generation.line_confidences):
        head = line.split("|", 1)[0].strip()
        if not head:
            continue
        resolved = resolve(head)
        if resolved is not None:
            result.setdefault(resolved[0], confidence)
    return result


def load_for_inference(model_dir: str | Path, dtype: str = "auto"):
    """Load a saved model or adapter for generation: LoRA merged into the base, cast to ``dtype``
    (``"auto"``: see :func:`icdcoder.models.loading.cpu_inference_dtype`)."""
    import torch

    from icdcoder.models.loading import cpu_inference_dtype, load_causal_lm

    model, tokenizer = load_causal_lm(str(model_dir))
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.to(getattr(torch, cpu_inference_dtype(dtype))).eval(), tokenizer
