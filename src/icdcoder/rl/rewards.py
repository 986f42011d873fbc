"""Rewards for reinforcement post-training of the generative coder.

Every reward reads one untrusted completion through the shared parser
(:func:`icdcoder.prompt.parse_answer`) and compares it with the example's gold
codes and gold evidence offsets (both relative to the ``source`` text the prompt
showed). The components, each in ``[0, 1]`` except the length penalty in ``[-1, 0]``:

``f1``
    set F1 between the parsed codes and the gold codes; with
    ``rare_weight_power > 0`` every code counts with weight
    ``(1 + training frequency) ** -power`` (weighted true/false positives),
    so getting a rare code right pays more than a frequent one. An example with
    no gold code scores 1 for answering ``NONE`` (and no code), 0 otherwise:
    an empty or garbled answer is not a correct "no code".
``format``
    share of non-empty lines that are ``NONE`` or well-formed ``CODE | quote``;
    halved when ``NONE`` is mixed with code lines; 0 for an empty completion.
``validity``
    share of well-formed code lines whose code exists in the ontology.
``grounding``
    per known-code line: 0 if its quote is not in the source, 1 if it is and
    overlaps the gold evidence of that code (or the example has no gold offsets
    to check against), ``partial_grounding`` if it is in the source but away
    from that code's evidence.
``length``
    ``-min(1, excess / allowance)`` where the allowance grows with the number of gold codes.

``total`` is the weighted sum (weights in :class:`RewardConfig`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

from pydantic import Field

from icdcoder.config import StrictModel
from icdcoder.prompt import NONE_ANSWER, CodeResolver, ParsedAnswer, parse_answer

#: (code, start, end): where gold evidence for ``code`` sits in the example's source text
GoldSpan = tuple[str, int, int]
COMPONENTS = ("f1", "format", "validity", "grounding", "length")


class RewardWeights(StrictModel):
    """Weight of each component in the total reward."""

    f1: float = 1.0
    format: float = 0.2
    validity: float = 0.2
    grounding: float = 0.2
    length: float = 0.1


class RewardConfig(StrictModel):
    """How completions are scored during GRPO/PHI."""

    weights: RewardWeights = RewardWeights()
    #: 0: every code counts the same in F1; 1: codes weigh 1 / (1 + training frequency)
    rare_weight_power: float = Field(0.0, ge=0.0)
    #: score of a quote that is in the source but not on that code's gold evidence
    partial_grounding: float = Field(0.5, ge=0.0, le=1.0)
    #: completion tokens allowed free of penalty: base + per gold code
    length_free_tokens: int = Field(16, ge=1)
    length_tokens_per_code: int = Field(24, ge=1)


@dataclass(frozen=True)
class RewardBreakdown:
    """The value of every component, and their weighted sum."""

    f1: float
    format: float
    validity: float
    grounding: float
    length: float
    total: float
    #: plain (unweighted) set F1, logged even when the reward uses rare-code weights
    plain_f1: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _count_lines(completion: str) -> tuple[int, int]:
    """(non-empty lines, NONE lines)."""
    lines = [line.strip() for line in completion.splitlines() if line.strip()]
    return len(lines), sum(1 for line in lines if line.upper() == NONE_ANSWER)


def weighted_set_f1(predicted: set[str], gold: set[str], weight: Callable[[str], float] = lambda _code: 1.0) -> float:
    """Set F1 where each code counts with ``weight(code)``; 1.0 when both sets are empty."""
    if not predicted and not gold:
        return 1.0
    true_positive = sum(weight(code) for code in predicted & gold)
    if true_positive == 0:
        return 0.0
    precision = true_positive / sum(weight(code) for code in predicted)
    recall = true_positive / sum(weight(code) for code in gold)
    return 2 * precision * recall / (precision + recall)


def rarity_weight(frequencies: Mapping[str, int], power: float) -> Callable[[str], float]:
    """``code -> (1 + training frequency) ** -power`` (unseen codes weigh the most)."""
    return lambda code: (1.0 + frequencies.get(code, 0)) ** -power


def format_score(completion: str, parsed: ParsedAnswer) -> float:
    """Share of well-formed lines; NONE mixed with codes is half credit; empty is 0."""
    lines, none_lines = _count_lines(completion)
    if lines == 0:
        return 0.0
    score = (lines - parsed.dropped["malformed"]) / lines
    if none_lines and none_lines < lines:
        score *= 0.5
    return score


def validity_score(completion: str, parsed: ParsedAnswer) -> float:
    """Share of well-formed code lines whose code is known; 1.0 for a plain NONE, 0.0 for nothing."""
    lines, none_lines = _count_lines(completion)
    code_lines = lines - none_lines - parsed.dropped["malformed"]
    if code_lines <= 0:
        return 1.0 if parsed.said_none else 0.0
    return (code_lines - parsed.dropped["unknown_code"]) / code_lines


def _overlaps(start: int, end: int, spans: Sequence[tuple[int, int]]) -> bool:
    return any(start < span_end and span_start < end for span_start, span_end in spans)


def grounding_score(parsed: ParsedAnswer, gold_spans: Sequence[GoldSpan], partial: float = 0.5) -> float:
    """Mean quote score over lines with a known code (duplicates excluded).

    A quote missing from the source scores 0. A quote found in the source scores
    1 when it overlaps the gold evidence of its code, or when the example has no
    gold offsets at all (nothing to check against); otherwise ``partial`` (the
    text exists, but it is not what supports this code).
    """
    attempts = len(parsed.items) + parsed.dropped["quote_not_found"] + parsed.dropped["no_quote"]
    if attempts == 0:
        return 1.0 if parsed.said_none else 0.0
    by_code: dict[str, list[tuple[int, int]]] = {}
    for code, start, end in gold_spans:
        by_code.setdefault(code, []).append((start, end))
    total = 0.0
    for item in parsed.items:
        if not gold_spans or _overlaps(item.start, item.end, by_code.get(item.code, ())):
            total += 1.0
        else:
            total += partial
    return total / attempts


def length_penalty(n_tokens: int, n_gold: int, config: RewardConfig) -> float:
    """0 within the allowance, down to -1 at twice the allowance and beyond."""
    allowance = config.length_free_tokens + config.length_tokens_per_code * max(n_gold, 1)
    excess = max(0, n_tokens - allowance)
    return -min(1.0, excess / allowance)


def score_completion(
    completion: str,
    source: str,
    gold_codes: Sequence[str],
    gold_spans: Sequence[GoldSpan],
    resolve: CodeResolver,
    config: RewardConfig,
    frequencies: Mapping[str, int] | None = None,
    n_tokens: int | None = None,
) -> RewardBreakdown:
    """All reward components of one completion for one example.

    ``n_tokens`` is the completion length in tokens (estimated as characters / 4 when not given).
    """
    parsed = parse_answer(completion, source, resolve)
    predicted = {item.code for item in parsed.items}
    gold = set(gold_codes)
    plain = weighted_set_f1(predicted, gold)
    if not gold and not predicted and not parsed.said_none:
        plain = 0.0
    if config.rare_weight_power > 0 and gold:
        f1 = weighted_set_f1(predicted, gold, rarity_weight(frequencies or {}, config.rare_weight_power))
    else:
        f1 = plain
    tokens = n_tokens if n_tokens is not None else len(completion) // 4
    values = {
        "f1": f1,
        "format": format_score(completion, parsed),
        "validity": validity_score(completion, parsed),
        "grounding": grounding_score(parsed, gold_spans, config.partial_grounding),
        "length": length_penalty(tokens, len(gold), config),
    }
    weights = config.weights.model_dump()
    total = sum(weights[name] * value for name, value in values.items())
    return RewardBreakdown(**values, total=total, plain_f1=plain)


def _as_span(span) -> GoldSpan:
    """A gold span from a dataset row: ``{"code", "start", "end"}`` or ``(code, start, end)``."""
    if isinstance(span, Mapping):
        return (span["code"], int(span["start"]), int(span["end"]))
    code, start, end = span
    return (code, int(start), int(end))


class RewardScorer:
    """Scores TRL batches once and exposes one reward function per component.

    TRL calls each reward function with ``prompts``, ``completions``,
    ``completion_ids`` and the dataset columns (``source``, ``gold_codes``,
    ``gold_spans``) as keyword lists. The components share one parse per
    completion (cached), and TRL logs each as ``rewards/<name>/mean``; the
    weights go to ``GRPOConfig.reward_weights`` so TRL's total equals
    :attr:`RewardBreakdown.total`.
    """

    def __init__(self, resolve: CodeResolver, config: RewardConfig, frequencies: Mapping[str, int] | None = None):
        self.resolve = resolve
        self.config = config
        self.frequencies = dict(frequencies or {})
        self._cache: dict[tuple, RewardBreakdown] = {}

    def score_batch(
        self, completions: Sequence, completion_ids: Sequence | None, source, gold_codes, gold_spans
    ) -> list[RewardBreakdown]:
        results = []
        for index, completion in enumerate(completions):
            text = completion if isinstance(completion, str) else completion[-1]["content"]
            n_tokens = len(completion_ids[index]) if completion_ids is not None else None
            spans = tuple(_as_span(span) for span in gold_spans[index] or ())
            codes = tuple(gold_codes[index] or ())
            key = (text, source[index], codes, spans, n_tokens)
            if key not in self._cache:
                if len(self._cache) > 4096:
                    self._cache.clear()
                self._cache[key] = score_completion(
                    text, source[index], codes, spans, self.resolve, self.config, self.frequencies, n_tokens
                )
            results.append(self._cache[key])
        return results

    def reward_function(self, component: str) -> Callable[..., list[float]]:
        """A TRL reward function returning ``component`` for each completion."""
        if component not in COMPONENTS:
            raise ValueError(f"unknown reward component '{component}'")

        def reward(
            completions, source, gold_codes, gold_spans, completion_ids=None, log_metric=None, **_kwargs
        ) -> list[float]:
            scores = self.score_batch(completions, completion_ids, source, gold_codes, gold_spans)
            if component == "f1" and log_metric is not None:
                log_metric("set_f1", sum(score.plain_f1 for score in scores) / max(len(scores), 1))
            return [getattr(score, component) for score in scores]

        reward.__name__ = component
        reward.__qualname__ = component
        return reward

    def reward_functions(self) -> tuple[list[Callable], list[float]]:
        """The reward functions with non-zero weight, and their weights (for ``GRPOConfig.reward_weights``)."""
        weights = self.config.weights.model_dump()
        names = [name for name in COMPONENTS if weights[name] != 0]
        return [self.reward_function(name) for name in names], [float(weights[name]) for name in names]


__all__ = [
    "COMPONENTS",
    "RewardBreakdown",
    "RewardConfig",
    "RewardScorer",
    "RewardWeights",
    "format_score",
    "grounding_score",
    "length_penalty",
    "rarity_weight",
    "score_completion",
    "validity_score",
    "weighted_set_f1",
]
