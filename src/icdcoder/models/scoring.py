"""Score candidate answers instead of generating them: one forward pass per prompt, a few tokens per candidate.

Generation writes every token of an answer one step at a time, each step a pass through the model. When the
prompt already lists the candidate codes, the question the fusion asks of the LLM is how likely each of them is,
and that is the probability that the answer opens with the candidate's line (``CODE |``): the prompt runs once,
its key/value cache is copied to one row per candidate, and only the few tokens of each opening run after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from icdcoder.models.generation import PromptBatches


class CandidateScorer(PromptBatches):
    """Log-probabilities of continuations of each prompt under any ``transformers`` causal LM."""

    def score(
        self,
        prompts: Sequence[str],
        continuations: Sequence[Sequence[str]],
        progress: Callable[[int], None] | None = None,
    ) -> list[list[float]]:
        """``log P(continuation | prompt)`` for every continuation of every prompt (summed over its tokens).

        Batches are formed from prompts of similar length; a prompt without continuations costs nothing.
        """
        if len(prompts) != len(continuations):
            raise ValueError("one list of continuations per prompt")
        results: list[list[float]] = [[] for _ in prompts]
        for chunk in self.batches(prompts, [i for i in range(len(prompts)) if continuations[i]]):
            for index, scores in zip(
                chunk, self._score_batch([prompts[i] for i in chunk], [continuations[i] for i in chunk])
            ):
                results[index] = scores
            if progress:
                progress(len(chunk))
        return results

    def _score_batch(self, prompts: Sequence[str], continuations: Sequence[Sequence[str]]) -> list[list[float]]:
        import torch

        encoded = self.encode(prompts)
        prompt_mask = encoded["attention_mask"]
        with torch.inference_mode():
            prompt_out = self.model(
                input_ids=encoded["input_ids"],
                attention_mask=prompt_mask,
                position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True,
                logits_to_keep=1,
            )
            first_logprobs = prompt_out.logits[:, -1].float().log_softmax(-1)
            rows, tokens = self._continuation_rows(continuations)
            row_index = torch.tensor(rows, device=self.model.device)
            cache = _output_cache(prompt_out)
            cache.reorder_cache(row_index)
            padded, mask = self._right_padded(tokens)
            lengths = prompt_mask.sum(-1)[row_index]
            out = self.model(
                input_ids=padded,
                attention_mask=torch.cat([prompt_mask[row_index], mask], dim=1),
                position_ids=lengths.unsqueeze(1) + torch.arange(padded.shape[1], device=padded.device),
                **{_cache_argument(self.model): cache},
            )
            # position p of the continuation predicts its token p + 1; padding positions count 0
            later_logprobs = (
                out.logits[:, :-1].float().log_softmax(-1).gather(-1, padded[:, 1:].unsqueeze(-1)).squeeze(-1)
            )
            first = first_logprobs[row_index, padded[:, 0]]
            totals = (first + (later_logprobs * mask[:, 1:]).sum(-1)).tolist()
        per_prompt: list[list[float]] = [[] for _ in prompts]
        for prompt_row, total in zip(rows, totals):
            per_prompt[prompt_row].append(total)
        return per_prompt

    def _continuation_rows(self, continuations: Sequence[Sequence[str]]) -> tuple[list[int], list[list[int]]]:
        """The prompt row of each continuation and its token ids (at least one token each)."""
        rows, tokens = [], []
        for prompt_row, texts in enumerate(continuations):
            for text in texts:
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                if not ids:
                    raise ValueError(f"continuation {text!r} has no tokens")
                rows.append(prompt_row)
                tokens.append(ids)
        return rows, tokens

    def _right_padded(self, tokens: list[list[int]]):
        import torch

        width = max(len(ids) for ids in tokens)
        pad = self.tokenizer.pad_token_id
        padded = torch.tensor([ids + [pad] * (width - len(ids)) for ids in tokens], device=self.model.device)
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in tokens], device=self.model.device)
        return padded, mask


def _cache_argument(model) -> str:
    """The keyword a model's forward takes its key/value cache by (``cache`` in recent ``transformers``)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _output_cache(output):
    """The key/value cache of a forward pass, under either name ``transformers`` has given it."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
