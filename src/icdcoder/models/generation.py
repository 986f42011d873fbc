"""Batched generation backends with a confidence per answer line.

The HF backend runs greedy ``generate`` with left padding and ``output_scores``;
the log-probability of every generated token is kept, and a line's confidence is
``exp(mean log-prob)`` of the tokens that wrote it. The vLLM backend gives the same
``Generation`` objects; :func:`pick_backend` chooses it where vLLM is installed and a
CUDA device is present (vLLM is never required).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from icdcoder.errors import InputError


@dataclass
class Generation:
    """One completion and the confidence of each of its lines (aligned with ``text.splitlines()``)."""

    text: str
    line_confidences: list[float] = field(default_factory=list)


def line_confidences(token_texts: Sequence[str], token_logprobs: Sequence[float], text: str) -> list[float]:
    """Mean-log-prob confidence per line of ``text`` from per-token texts and log-probs.

    A token that holds a newline closes the line it is in; tokens that are only
    whitespace after the last newline belong to no line.
    """
    n_lines = len(text.splitlines())
    sums = [0.0] * max(n_lines, 1)
    counts = [0] * max(n_lines, 1)
    line = 0
    for piece, logprob in zip(token_texts, token_logprobs):
        if line < len(sums) and piece.strip():
            sums[line] += logprob
            counts[line] += 1
        line += piece.count("\n")
    return [math.exp(s / c) if c else 0.0 for s, c in zip(sums, counts)][:n_lines]


class PromptBatches:
    """Prompts through a ``transformers`` causal LM in batches of similar length, left-padded (what
    :class:`HFGenerator` and :class:`icdcoder.models.scoring.CandidateScorer` share)."""

    def __init__(self, model, tokenizer, batch_size: int = 16, max_prompt_tokens: int = 512):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def batches(self, prompts: Sequence[str], indices: Sequence[int] | None = None) -> list[list[int]]:
        """``indices`` (default: all) of ``prompts`` in batches, shortest prompts first: less padding per batch."""
        order = sorted(range(len(prompts)) if indices is None else indices, key=lambda i: len(prompts[i]))
        return [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]

    def encode(self, prompts: Sequence[str]):
        """The prompts as one left-padded batch on the model's device, each cut to ``max_prompt_tokens``."""
        self.tokenizer.padding_side = "left"
        return self.tokenizer(
            list(prompts), return_tensors="pt", padding=True, truncation=True, max_length=self.max_prompt_tokens
        ).to(self.model.device)


class HFGenerator(PromptBatches):
    """Greedy batched generation with any ``transformers`` causal LM (optionally with a logits processor)."""

    def __init__(self, model, tokenizer, batch_size: int = 16, max_new_tokens: int = 48, max_prompt_tokens: int = 512):
        super().__init__(model, tokenizer, batch_size=batch_size, max_prompt_tokens=max_prompt_tokens)
        self.max_new_tokens = max_new_tokens

    def generate(
        self,
        prompts: Sequence[str],
        logits_processor_factory: Callable[[Sequence[str], int], object] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """Complete every prompt; batches are formed from prompts of similar length."""
        results: list[Generation | None] = [None] * len(prompts)
        for chunk in self.batches(prompts):
            batch = [prompts[i] for i in chunk]
            processor = logits_processor_factory(batch, 0) if logits_processor_factory else None
            for index, generation in zip(chunk, self._generate_batch(batch, processor)):
                results[index] = generation
            if progress:
                progress(len(chunk))
        return [r if r is not None else Generation("") for r in results]

    def _generate_batch(self, prompts: Sequence[str], processor) -> list[Generation]:
        import torch
        from transformers import LogitsProcessorList

        encoded = self.encode(prompts)
        if processor is not None:
            processor.prompt_length = encoded["input_ids"].shape[1]
        with torch.inference_mode():
            output = self.model.generate(
                **encoded,
                do_sample=False,
                max_new_tokens=self.max_new_tokens,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                logits_processor=LogitsProcessorList([processor]) if processor is not None else None,
            )
        new_tokens = output.sequences[:, encoded["input_ids"].shape[1] :]
        step_logprobs = torch.stack(output.scores, dim=1).float().log_softmax(-1)
        chosen = step_logprobs.gather(-1, new_tokens[:, : step_logprobs.shape[1]].unsqueeze(-1)).squeeze(-1)
        return [self._to_generation(ids, logprobs) for ids, logprobs in zip(new_tokens.tolist(), chosen.tolist())]

    def _to_generation(self, ids: list[int], logprobs: list[float]) -> Generation:
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        kept = []
        for token_id, logprob in zip(ids, logprobs):
            if token_id in (eos, pad):
                break
            kept.append((token_id, logprob))
        token_ids = [t for t, _ in kept]
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        pieces = [self.tokenizer.decode([t], skip_special_tokens=True) for t in token_ids]
        return Generation(text, line_confidences(pieces, [lp for _, lp in kept], text))


#: the generation backends a coder can ask for ("auto": :func:`pick_backend` decides)
Backend = Literal["auto", "hf", "vllm"]
BACKENDS: tuple[str, ...] = get_args(Backend)
#: why constrained decoding cannot run on vLLM here
CONSTRAINED_ON_HF = "constrained decoding runs on the hf backend only (backend: hf or auto)"


def vllm_available() -> bool:
    """True when the optional vLLM package can be imported (GPU machines)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def pick_backend(requested: str, constrained: bool = False) -> str:
    """``"hf"`` or ``"vllm"`` for a requested backend. ``"auto"`` takes vLLM where it is installed, a CUDA device is
    present and decoding is not constrained (the trie constraint is a ``transformers`` logits processor); asking for
    ``"vllm"`` where it cannot run is an input error."""
    if requested == "hf":
        return "hf"
    if requested == "vllm":
        if not vllm_available():
            raise InputError("backend 'vllm' asked for, but the vllm package is not installed")
        if constrained:
            raise InputError(CONSTRAINED_ON_HF)
        return "vllm"
    import torch

    return "vllm" if vllm_available() and torch.cuda.is_available() and not constrained else "hf"


class VLLMGenerator:
    """The :class:`HFGenerator` interface on vLLM: greedy, with the log-probability of every generated token.

    Prompts longer than ``max_prompt_tokens`` keep their last tokens (HF keeps the first: no prompt of the coder is
    that long). A logits processor is not supported (see :func:`pick_backend`)."""

    def __init__(self, model_path: str, max_new_tokens: int = 48, max_prompt_tokens: int = 512):
        from vllm import LLM, SamplingParams

        self.llm = LLM(model=model_path)
        self.params = SamplingParams(
            temperature=0.0, max_tokens=max_new_tokens, logprobs=0, truncate_prompt_tokens=max_prompt_tokens
        )

    @classmethod
    def from_model(cls, model, tokenizer, max_new_tokens: int = 48, max_prompt_tokens: int = 512) -> VLLMGenerator:
        """A generator on a loaded ``transformers`` model (a LoRA adapter already merged): vLLM reads the weights
        from a temporary folder while it starts."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="icdcoder-vllm-") as folder:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            return cls(folder, max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens)

    def generate(self, prompts: Sequence[str], logits_processor_factory=None, progress=None) -> list[Generation]:
        if logits_processor_factory is not None:
            raise InputError(CONSTRAINED_ON_HF)
        outputs = self.llm.generate(list(prompts), self.params, use_tqdm=False)
        results = []
        for output in outputs:
            completion = output.outputs[0]
            pieces, logprobs = [], []
            for token_id, entry in zip(completion.token_ids, completion.logprobs or []):
                item = entry[token_id]
                pieces.append(item.decoded_token or "")
                logprobs.append(item.logprob)
            results.append(Generation(completion.text, line_confidences(pieces, logprobs, completion.text)))
        if progress:
            progress(len(prompts))
        return results
