"""The span-level LLM verifier: keep or drop one candidate code of the coder, from one forward pass.

The prompt (the one format, :func:`build_verifier_prompt`) shows the candidate's evidence sentence, the code with its
description and, for specificity, sibling candidates of the same category; it is kept short (~70 tokens: training
and scoring run on 2 CPU cores, with no instruction line, which LoRA training makes unnecessary) and ends with the project's
answer marker (:data:`icdcoder.prompt.ANSWER_MARKER`). The model does not generate: the verifier reads the logits of
the answer's first token for ``yes`` and ``no`` and returns ``P(yes) / (P(yes) + P(no))``. Prompts are cut to
``max_prompt_tokens`` (128) by shortening the sentence around its evidence, then dropping siblings.

Plugged in as a signal: its input is a candidate of the coder (code, system, fused score, the note's text and the
evidence span, the note's other candidates of the same category); its output is a probability in [0, 1] per
candidate whose fused score lies in the configured band, and nothing for the others. Candidates the ontology does not
know get no probability and are counted (``dropped``), as invented codes are everywhere else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from icdcoder.prompt import ANSWER_MARKER

YES, NO = "yes", "no"
#: characters of a description shown in the prompt
DESCRIPTION_CHARS = 60


def build_verifier_prompt(sentence: str, code: str, description: str, siblings: Sequence[tuple[str, str]] = ()) -> str:
    """The verifier's prompt for one candidate; the answer (``yes``/``no``) starts right after it."""
    parts = [f"Text: {' '.join(sentence.split())}", f"Code: {code} {description[:DESCRIPTION_CHARS]}"]
    if siblings:
        parts.append("Not: " + "; ".join(f"{c} {d[:DESCRIPTION_CHARS]}" for c, d in siblings))
    parts.append("Supported?")
    return "\n".join(parts) + "\n" + ANSWER_MARKER


def opening_ids(tokenizer) -> list[int]:
    """What opens every prompt: the beginning-of-text token where the tokenizer adds one (Gemma's ``<bos>``, which
    its models expect; SmolLM2 adds none). Asked of ``encode`` itself: a saved and reloaded Gemma tokenizer still adds
    ``<bos>`` but reports ``add_bos_token`` False."""
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None and tokenizer.encode("x", add_special_tokens=True)[:1] == [bos] else []


def answer_token_ids(tokenizer) -> tuple[int, int]:
    """The token ids of the first token of ``yes`` and ``no`` as the answer's first word."""
    yes = tokenizer.encode(YES, add_special_tokens=False)
    no = tokenizer.encode(NO, add_special_tokens=False)
    if not yes or not no or yes[0] == no[0]:
        raise ValueError("the tokenizer cannot tell the answers 'yes' and 'no' apart by their first token")
    return yes[0], no[0]


def _shortened(sentence: str, span_start: int, span_end: int, words: int) -> str:
    """``sentence`` cut to ``words`` words around its evidence span (the whole span when it is longer)."""
    tokens = sentence.split()
    if len(tokens) <= words:
        return sentence
    if span_start < 0:
        return " ".join(tokens[:words])
    first = len(sentence[:span_start].split())
    last = max(first + 1, len(sentence[:span_end].split()))
    room = max(0, words - (last - first))
    begin = max(0, first - room // 2)
    return " ".join(tokens[begin : max(last, begin + words)])


def candidate_prompt_ids(tokenizer, candidate, ontology, config) -> list[int] | None:
    """The token ids of ``candidate``'s prompt, at most ``config.max_prompt_tokens``; None when the ontology does not
    know its code (an invented code gets no verdict)."""
    if ontology.get(candidate.code, candidate.system) is None:
        return None
    description = ontology.describe(candidate.code, candidate.system)
    siblings = [
        (c, ontology.describe(c, candidate.system)) for c in candidate.siblings if ontology.get(c, candidate.system)
    ]
    siblings = siblings[: config.siblings]
    words = min(len(candidate.sentence.split()), config.sentence_words)
    opening = opening_ids(tokenizer)
    room = config.max_prompt_tokens - len(opening)
    while True:
        sentence = _shortened(candidate.sentence, candidate.span_start, candidate.span_end, words)
        prompt = build_verifier_prompt(sentence, candidate.code, description, siblings)
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        if len(ids) <= room:
            return opening + ids
        if siblings:
            siblings = siblings[:-1]
        elif words > 4:
            words = max(4, words - 4)
        else:
            return opening + ids[-room:]  # the tail keeps the code, its description and the answer marker


def left_padded(prompts: Sequence[list[int]], pad_id: int):
    """``prompts`` as one batch padded on the left, so that every prompt ends at the last position: input ids,
    attention mask and position ids (each row counted from its first real token)."""
    import torch

    width = max(len(ids) for ids in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    return input_ids, attention, (attention.cumsum(-1) - 1).clamp(min=0)


@dataclass
class VerifierScores:
    """Probabilities keyed by candidate position, and what was dropped (``unknown_code``)."""

    probabilities: dict[int, float] = field(default_factory=dict)
    dropped: Counter = field(default_factory=Counter)


class VerifierScorer:
    """Batched yes/no scoring of verifier prompts with a causal LM (left padding, one forward pass per batch)."""

    def __init__(self, model, tokenizer, batch_size: int = 32, max_prompt_tokens: int = 128):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        self.yes_id, self.no_id = answer_token_ids(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def answer_logits(self, prompts: Sequence[list[int]]):
        """``(len(prompts), 2)`` logits of ``yes`` and ``no`` after each prompt (with gradients when training)."""
        import torch

        input_ids, attention, positions = left_padded(prompts, self.pad_id)
        device = next(self.model.parameters()).device
        output = self.model(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            position_ids=positions.to(device),
            logits_to_keep=1,
            use_cache=False,
        )
        last = output.logits[:, -1, :]
        return torch.stack([last[:, self.yes_id], last[:, self.no_id]], dim=-1).float()

    def probabilities(self, prompts: Sequence[list[int]]) -> list[float]:
        """P(yes) among {yes, no} for each prompt, in order."""
        import torch

        order = sorted(
            range(len(prompts)), key=lambda i: len(prompts[i])
        )  # similar lengths share a batch: less padding
        by_position: dict[int, float] = {}
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                probs = torch.softmax(
                    self.answer_logits([prompts[i][-self.max_prompt_tokens :] for i in chunk]), dim=-1
                )[:, 0]
                by_position.update(zip(chunk, probs.tolist()))
        return [by_position[i] for i in range(len(prompts))]

    def score_candidates(self, candidates: Sequence, ontology, config) -> VerifierScores:
        """The probability of each candidate the ontology knows, keyed by its position in ``candidates``."""
        scores = VerifierScores()
        prompts, positions = [], []
        for position, candidate in enumerate(candidates):
            ids = candidate_prompt_ids(self.tokenizer, candidate, ontology, config)
            if ids is None:
                scores.dropped["unknown_code"] += 1
                continue
            prompts.append(ids)
            positions.append(position)
        if prompts:
            scores.probabilities = dict(zip(positions, self.probabilities(prompts)))
        return scores


def load_verifier(
    adapter_dir: str, dtype: str = "auto", batch_size: int = 32, max_prompt_tokens: int = 128, device: str = "cpu"
) -> VerifierScorer:
    """A scorer on a saved verifier adapter (base + LoRA merged), cast to ``dtype`` for inference on ``device``
    (``"auto"``: bfloat16 on a GPU, on a CPU as :func:`~icdcoder.models.loading.cpu_inference_dtype` says)."""
    import torch

    from icdcoder.models.loading import cpu_inference_dtype, load_causal_lm

    model, tokenizer = load_causal_lm(adapter_dir)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    chosen = "bfloat16" if dtype == "auto" and device == "cuda" else cpu_inference_dtype(dtype)
    model = model.to(device=device, dtype=getattr(torch, chosen)).eval()
    return VerifierScorer(model, tokenizer, batch_size=batch_size, max_prompt_tokens=max_prompt_tokens)


def fused_with_verdict(score: float, probability: float | None, weight: float, low: float, high: float) -> float:
    """A candidate's fused score with the verifier's probability as one more signal of weight ``weight`` (in [0, 1]):
    ``(1 - weight) * score + weight * probability``. The verifier reads only the band ``low <= score < high``; above
    it the candidate counts as verified (probability 1), below it as rejected (0), so that the order of scores outside
    the band is kept. A band candidate without a probability (a code the ontology does not know) keeps its score."""
    if score >= high:
        probability = 1.0
    elif score < low:
        probability = 0.0
    elif probability is None:
        return score
    return (1.0 - weight) * score + weight * probability
