"""Decoding constrained to the answer format, valid codes and quotes that exist in the input.

Each answer line is ``CODE | quote``: while writing the code part only tokens that
keep the line a prefix of ``"<code> | "`` for some code of the label space (or of
``NONE``) are allowed; in the quote part only tokens that keep the quote a
substring of the source text, then a newline or EOS. Output therefore always
parses to valid codes with verbatim quotes (unless it runs out of tokens mid-line,
which the parser drops like any other bad line).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from icdcoder.prompt import NONE_ANSWER

_SEPARATOR = " | "


class _Vocabulary:
    """Decoded text of every token id, computed once per tokenizer."""

    _cache: dict[int, _Vocabulary] = {}

    def __init__(self, tokenizer):
        self.texts = [tokenizer.decode([i]) for i in range(len(tokenizer))]
        special = set(tokenizer.all_special_ids)
        self.code_alphabet = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ. |\n")
        self.code_tokens = [
            i for i, t in enumerate(self.texts) if t and i not in special and set(t) <= self.code_alphabet
        ]
        self.newline_tokens = [
            i for i, t in enumerate(self.texts) if t and i not in special and not t.strip(" \n") and "\n" in t
        ]

    @classmethod
    def of(cls, tokenizer) -> _Vocabulary:
        key = id(tokenizer)
        if key not in cls._cache:
            cls._cache[key] = cls(tokenizer)
        return cls._cache[key]


def _prefixes(strings: Iterable[str]) -> set[str]:
    result: set[str] = set()
    for s in strings:
        for end in range(1, len(s) + 1):
            result.add(s[:end])
    return result


class CodeQuoteConstraint:
    """A ``transformers`` logits processor for one batch of prompts and their source texts."""

    def __init__(self, tokenizer, codes: Iterable[str], sources: Sequence[str]):
        import torch

        self.tokenizer = tokenizer
        self.vocab = _Vocabulary.of(tokenizer)
        self.heads = {code + _SEPARATOR for code in codes}
        self.code_prefixes = _prefixes(self.heads | {NONE_ANSWER})
        self.sources = list(sources)
        self.eos = tokenizer.eos_token_id
        #: set by the generator: where the generated part of ``input_ids`` starts
        self.prompt_length = 0
        self._quote_tokens = [
            [i for i, t in enumerate(self.vocab.texts) if t and t in source] for source in self.sources
        ]
        self._torch = torch

    def __call__(self, input_ids, scores):
        mask = self._torch.full_like(scores, float("-inf"))
        for row in range(input_ids.shape[0]):
            generated = self.tokenizer.decode(input_ids[row, self.prompt_length :], skip_special_tokens=True)
            allowed = self._allowed(generated, row)
            if not allowed:
                allowed = [self.eos]
            mask[row, allowed] = 0.0
        return scores + mask

    def _allowed(self, generated: str, row: int) -> list[int]:
        line = generated.rsplit("\n", 1)[-1]
        texts = self.vocab.texts
        if _SEPARATOR.rstrip() in line and line.split("|", 1)[0] + "| " in self.heads:
            rest = line.split("|", 1)[1]
            quote = rest[1:] if rest.startswith(" ") else rest
            source = self.sources[row]
            allowed = [i for i in self._quote_tokens[row] if (quote + texts[i]) in source]
            if quote.strip():
                allowed += self.vocab.newline_tokens + [self.eos]
            return allowed
        if line == NONE_ANSWER:
            return [self.eos]
        allowed = [i for i in self.vocab.code_tokens if (line + texts[i]) in self.code_prefixes]
        if line == "" and generated.strip():
            allowed.append(self.eos)
        return allowed


def constraint_factory(tokenizer, codes: Iterable[str], source_of_prompt: dict[str, str]):
    """A factory for :class:`~icdcoder.models.generation.HFGenerator`: builds a constraint per batch."""
    codes = sorted(set(codes))

    def factory(prompts: Sequence[str], _offset: int) -> CodeQuoteConstraint:
        return CodeQuoteConstraint(tokenizer, codes, [source_of_prompt.get(p, "") for p in prompts])

    return factory
