"""PHI: a diagnostic curriculum that extends GRPO to the codes the coder misses.

Each round ``r`` (output in ``output_dir/round_{r}/``):

(a) the current checkpoint codes training prompts hint-free (greedy, the same
    prompts inference uses) -> per example, the missed codes (gold minus predicted);
(b) hint prompts name 1-5 of an example's missed codes with short descriptions
    (``build_prompt(..., hints=...)``), chosen with weights favouring codes that
    are rare in training and have low recall in this pass (sharpened or
    flattened by a temperature), and injected with probability ``hint_probability``;
    the pool is saved as ``round_{r}/hint_pool.jsonl`` (ids and codes, no note text);
(c) a GRPO round with an explicit step budget (``phi.steps_per_round``) on those
    prompts; the reward is always computed against the full gold set;
(d) the next round recomputes the pool from the new checkpoint.

With ``phi.continue_optimizer`` the rounds are one optimisation cut in pieces:
round ``r`` of ``R`` runs its share of one linear learning-rate decay (from
``lr (1 - r/R)`` to ``lr (1 - (r+1)/R)``, the schedule of one GRPO run of
``R x steps_per_round`` steps) and starts from the AdamW moments the previous
round saved (``round_{r-1}/optimizer.pt``). Without it every round is a fresh
GRPO run: full learning rate decaying to 0, zero moments.

The KL term of a round anchors to the round's starting model (TRL copies the
adapter it trains into a frozen reference), so over R rounds the policy may
drift R times as far from the SFT model as one round allows. With
``phi.kl_reference: init`` every round anchors to the starting checkpoint instead.

Prompts whose rollouts all scored the same in the previous round (zero
advantage, recorded by the trainer) are left out of the next round and other
prompts are drawn instead. A finished round is marked by ``round_{r}/done.json``;
``--resume`` skips finished rounds, reuses a saved pool, and resumes an
unfinished round from its newest whole checkpoint (a damaged one is skipped with a
warning; an unfinished round with none starts afresh); a ``--resume`` with no
finished round and no usable checkpoint at all is an error. The output folder is
checked and locked for the whole run before any work. Files of earlier rounds are
never rewritten.
Inference never sees hints: the saved coder folder holds only the model,
retriever and settings.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from icdcoder.errors import InputError
from icdcoder.io import atomic_write, output_lock, read_jsonl, read_text, write_jsonl
from icdcoder.predictor import FitReport, peak_rss_mb
from icdcoder.prompt import Candidate, parse_answer
from icdcoder.rl.config import GrpoConfig, PhiSettings
from icdcoder.rl.grpo import (
    Continuation,
    RlExample,
    StartingPoint,
    check_rl_output,
    code_resolver,
    load_policy,
    prepare_run,
    run_grpo_round,
    summarise_history,
    to_dataset,
    training_frequencies,
    write_coder_folder,
    write_run_meta,
)
from icdcoder.rl.rewards import RewardScorer
from icdcoder.train.sft import START_FRESH, damaged_list, find_checkpoint

log = logging.getLogger(__name__)

#: floor of a code's miss rate in its hint weight, so perfectly recalled codes can still be drawn
MISS_RATE_FLOOR = 0.05


# --------------------------------------------------------------------------- (a) hint-free pass


def hint_free_predictions(
    model, tokenizer, examples: Sequence[RlExample], resolve, config: GrpoConfig
) -> list[set[str]]:
    """Greedy hint-free answers of ``model`` on ``examples``, parsed to code sets."""
    from icdcoder.models.generation import HFGenerator

    generator = HFGenerator(
        model, tokenizer, batch_size=config.phi.pool_batch_size, max_new_tokens=config.max_completion_length
    )
    generations = generator.generate([example.prompt() for example in examples])
    return [{item.code for item in parse_answer(g.text, e.text, resolve).items} for g, e in zip(generations, examples)]


def code_recall(examples: Sequence[RlExample], predicted: Sequence[set[str]]) -> dict[str, float]:
    """Per gold code: the share of its occurrences that the hint-free pass found."""
    found: Counter = Counter()
    total: Counter = Counter()
    for example, codes in zip(examples, predicted):
        for code in example.gold_codes:
            total[code] += 1
            found[code] += code in codes
    return {code: found[code] / total[code] for code in total}


# --------------------------------------------------------------------------- (b) hints


def hint_weights(
    codes: Sequence[str], recall: Mapping[str, float], frequencies: Mapping[str, int], settings: PhiSettings
) -> list[float]:
    """Sampling weight of each missed code: (miss rate) x rarity, then the temperature."""
    weights = []
    for code in codes:
        miss_rate = max(1.0 - recall.get(code, 0.0), MISS_RATE_FLOOR)
        rarity = (1.0 + frequencies.get(code, 0)) ** -settings.rarity_power
        weights.append((miss_rate * rarity) ** (1.0 / settings.hint_temperature))
    return weights


def sample_without_replacement(
    items: Sequence[str], weights: Sequence[float], count: int, rng: random.Random
) -> list[str]:
    """``count`` distinct items drawn one at a time proportionally to ``weights``."""
    pool = list(zip(items, weights))
    chosen: list[str] = []
    while pool and len(chosen) < count:
        total = sum(weight for _, weight in pool)
        pick = rng.random() * total
        for index, (item, weight) in enumerate(pool):
            pick -= weight
            if pick <= 0 or index == len(pool) - 1:
                chosen.append(item)
                pool.pop(index)
                break
    return chosen


def build_hint_pool(
    examples: Sequence[RlExample],
    predicted: Sequence[set[str]],
    frequencies: Mapping[str, int],
    settings: PhiSettings,
    rng: random.Random,
) -> list[dict]:
    """One record per example: gold, predicted, missed codes, and the hints drawn (maybe none)."""
    recall = code_recall(examples, predicted)
    records = []
    for example, codes in zip(examples, predicted):
        missed = [code for code in example.gold_codes if code not in codes]
        hints: list[str] = []
        if missed and rng.random() < settings.hint_probability:
            count = rng.randint(min(settings.min_hints, len(missed)), min(settings.max_hints, len(missed)))
            hints = sample_without_replacement(missed, hint_weights(missed, recall, frequencies, settings), count, rng)
        records.append(
            {
                "example_id": example.example_id,
                "doc_id": example.doc_id,
                "gold": example.gold_codes,
                "predicted": sorted(codes),
                "missed": missed,
                "hints": hints,
            }
        )
    return records


def hint_candidates(records: Sequence[dict], examples: Sequence[RlExample], describe) -> dict[str, list[Candidate]]:
    """example_id -> the hint codes with short descriptions, for ``build_prompt(hints=...)``."""
    systems = {example.example_id: dict(example.gold) for example in examples}
    return {
        record["example_id"]: [
            Candidate(code, describe(code, systems[record["example_id"]][code])) for code in record["hints"]
        ]
        for record in records
        if record["hints"]
    }


def describer(retriever, ontology):
    """``(code, system) -> short description``: the retriever's (<= 8 words) when it knows the code, else the ontology's."""

    def describe(code: str, system: str) -> str:
        if retriever is not None and (code, system) in getattr(retriever, "code_index", {}):
            return retriever.short_description((code, system))
        return " ".join(ontology.describe(code, system).split()[:8])

    return describe


# --------------------------------------------------------------------------- (c) round prompts


def round_examples(
    pool_examples: Sequence[RlExample], skip_ids: set[str], wanted: int, rng: random.Random
) -> list[RlExample]:
    """Up to ``wanted`` prompts for a round, leaving out last round's zero-advantage prompts when others remain."""
    kept = [example for example in pool_examples if example.example_id not in skip_ids]
    if not kept:
        kept = list(pool_examples)
    rng.shuffle(kept)
    return kept[:wanted]


def zero_advantage_ids(round_dir: Path, num_generations: int) -> set[str]:
    """Prompts of a finished round whose every rollout had advantage 0."""
    path = round_dir / "zero_advantage.json"
    if not path.is_file():
        return set()
    counts = json.loads(path.read_text(encoding="utf-8"))
    return {example_id for example_id, count in counts.items() if count >= num_generations}


# --------------------------------------------------------------------------- (d) rounds


def _pool_examples(examples: Sequence[RlExample], settings: PhiSettings, seed: int) -> list[RlExample]:
    """The training prompts coded hint-free each round (a fixed sample, so rounds are comparable)."""
    if settings.pool_max_examples is None or len(examples) <= settings.pool_max_examples:
        return list(examples)
    return random.Random(seed).sample(list(examples), settings.pool_max_examples)


def _load_or_build_pool(round_dir: Path, build) -> list[dict]:
    """A round's saved pool when resuming, else a new one, saved once and never rewritten."""
    path = round_dir / "hint_pool.jsonl"
    if path.is_file():
        return [record for _, record in read_jsonl(path)]
    records = build()
    write_jsonl(path, records)
    return records


def _round_start(output_dir: Path, round_index: int, init: str) -> StartingPoint:
    if round_index == 0:
        return StartingPoint.from_init(init)
    return StartingPoint(str(output_dir / f"round_{round_index - 1}" / "model"))


def round_continuation(config: GrpoConfig, output_dir: Path, round_index: int) -> Continuation | None:
    """How round ``round_index`` carries on the rounds before it (``None`` when every round starts afresh)."""
    if not config.phi.continue_optimizer:
        return None
    rounds = config.phi.rounds
    previous_state = output_dir / f"round_{round_index - 1}" / "optimizer.pt"
    return Continuation(
        learning_rate=config.learning_rate * (1 - round_index / rounds),
        final_learning_rate=config.learning_rate * (1 - (round_index + 1) / rounds),
        optimizer_state=previous_state if round_index and previous_state.is_file() else None,
    )


def round_kl_anchor(config: GrpoConfig, round_index: int) -> StartingPoint | None:
    """The model round ``round_index``'s KL term anchors to when it is not the round's own start (None: it is,
    or there is no KL term)."""
    if config.phi.kl_reference == "init" and round_index > 0 and config.beta > 0:
        return StartingPoint.from_init(config.init)
    return None


def finished_round(round_dir: Path) -> dict | None:
    """The record of a finished round (its ``done.json``), or None while the round is unfinished."""
    path = round_dir / "done.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(read_text(path))
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        raise InputError("malformed round record; delete it to run the round again", path=path)
    return record


def check_resumable(output_dir: Path, rounds: int) -> None:
    """A ``--resume`` needs a finished round or a usable checkpoint of an unfinished one; else a one-line error.
    Every round record is read here, so that a malformed one stops the run before any work."""
    round_dirs = [output_dir / f"round_{round_index}" for round_index in range(rounds)]
    records = [finished_round(round_dir) for round_dir in round_dirs]
    if any(record is not None for record in records):
        return
    damaged = []
    for round_dir in round_dirs:
        found, skipped = find_checkpoint(round_dir / "checkpoints")
        if found is not None:
            return
        damaged += [f"{round_dir.name}/{folder.name}: {problem}" for folder, problem in skipped]
    detail = f" (damaged: {damaged_list(damaged)})" if damaged else ""
    raise InputError(
        f"nothing to resume: no finished round (round_*/done.json) and no usable checkpoint (round_*/checkpoints){detail}; "
        f"{START_FRESH}",
        path=output_dir,
    )


def run_phi(config: GrpoConfig, resume: bool = False, documents=None, ontology=None) -> FitReport:
    """R rounds of (hint-free pass -> hint pool -> GRPO round); the last round's model becomes the coder folder.
    Before any work the output folder is checked and locked for the whole run; with ``resume``, something must be
    there to resume (see :func:`check_resumable`)."""
    output_dir = check_rl_output(config, resume)
    with output_lock(output_dir):
        if resume:
            check_resumable(output_dir, config.phi.rounds)
        return _run_phi(config, resume, documents, ontology)


def _run_phi(config: GrpoConfig, resume: bool, documents, ontology) -> FitReport:
    started = time.time()
    settings = config.phi
    output_dir, documents, ontology, init, retriever, examples = prepare_run(config, documents, ontology)
    frequencies = training_frequencies(documents)
    resolve = code_resolver(ontology)
    scorer = RewardScorer(resolve, config.reward, frequencies)
    describe = describer(retriever, ontology)
    pool_examples = _pool_examples(examples, settings, config.seed)
    by_id = {example.example_id: example for example in examples}
    prompts_per_round = (
        settings.steps_per_round
        * config.per_device_batch_size
        * config.gradient_accumulation_steps
        // config.num_generations
    )
    rounds_meta = []
    for round_index in range(settings.rounds):
        round_dir = output_dir / f"round_{round_index}"
        done = finished_round(round_dir) if resume else None
        if done is not None:
            rounds_meta.append(done)
            continue
        round_started = time.time()
        rng = random.Random(config.seed * 1000 + round_index)
        policy = load_policy(_round_start(output_dir, round_index, config.init), config)

        def build(policy=policy, rng=rng):
            predicted = hint_free_predictions(policy.model, policy.tokenizer, pool_examples, resolve, config)
            return build_hint_pool(pool_examples, predicted, frequencies, settings, rng)

        records = _load_or_build_pool(round_dir, build)
        skip = (
            zero_advantage_ids(output_dir / f"round_{round_index - 1}", config.num_generations)
            if round_index
            else set()
        )
        chosen = round_examples(
            [by_id[r["example_id"]] for r in records if r["example_id"] in by_id], skip, max(prompts_per_round, 1), rng
        )
        hints = hint_candidates(records, examples, describe)
        dataset = to_dataset(chosen, hints)
        continuation = round_continuation(config, output_dir, round_index)
        anchor = round_kl_anchor(config, round_index)
        result = run_grpo_round(
            config, policy, dataset, scorer, round_dir, settings.steps_per_round, resume, continuation, anchor
        )
        meta = {
            "round": round_index,
            "steps": result.steps,
            "wall_seconds": round(time.time() - round_started, 1),
            "pool_examples": len(records),
            "pool_micro_recall": _pool_recall(records),
            "examples_with_missed_codes": sum(1 for r in records if r["missed"]),
            "hinted_prompts": sum(1 for example in chosen if example.example_id in hints),
            "round_prompts": len(chosen),
            "skipped_zero_advantage_prompts": len(skip),
            "learning_rate": [continuation.learning_rate, continuation.final_learning_rate] if continuation else None,
            "carried_optimizer_state": bool(continuation and continuation.optimizer_state),
            "kl_reference": anchor.model_path if anchor else ("round start" if config.beta > 0 else None),
            "rewards": summarise_history(result.log_history),
        }
        with atomic_write(round_dir / "done.json") as handle:
            json.dump(meta, handle, indent=2)
        rounds_meta.append(meta)
        log.info("PHI round %d: %d steps, pool recall %.3f", round_index, result.steps, meta["pool_micro_recall"])
        del policy
    last_model = output_dir / f"round_{settings.rounds - 1}" / "model"
    write_coder_folder(output_dir, init, retriever, last_model)
    report = FitReport(
        wall_seconds=time.time() - started,
        peak_rss_mb=peak_rss_mb(),
        extra={
            "rounds": settings.rounds,
            "steps": sum(m["steps"] for m in rounds_meta),
            "prompts": len(examples),
            "documents": len(documents),
        },
    )
    write_run_meta(output_dir, config, report, {"rounds_meta": rounds_meta})
    return report


def _pool_recall(records: Sequence[dict]) -> float:
    """Micro recall of the hint-free pass over the pool (gold codes found / gold codes)."""
    gold = sum(len(record["gold"]) for record in records)
    missed = sum(len(record["missed"]) for record in records)
    return round((gold - missed) / gold, 4) if gold else 0.0
