"""PHI pieces without a model: missed-code pools, hint weights favouring rare / low-recall codes, round prompts."""

from __future__ import annotations

import random
from collections import Counter

from icdcoder.prompt import Candidate
from icdcoder.rl.config import PhiSettings
from icdcoder.rl.grpo import RlExample, to_dataset
from icdcoder.rl.phi import build_hint_pool, code_recall, hint_weights, round_examples, sample_without_replacement


def example(example_id: str, codes: list[str]) -> RlExample:
    return RlExample(example_id, "d" + example_id, "texto de la nota", (), tuple((c, "icd10cm") for c in codes), ())


EXAMPLES = [example("1", ["A00", "B00"]), example("2", ["A00", "C00"]), example("3", [])]
PREDICTED = [{"A00"}, {"C00", "Z99"}, set()]


def test_code_recall_counts_occurrences():
    assert code_recall(EXAMPLES, PREDICTED) == {"A00": 0.5, "B00": 0.0, "C00": 1.0}


def test_pool_records_missed_codes_and_hints_within_them():
    settings = PhiSettings(hint_probability=1.0, min_hints=1, max_hints=5)
    records = build_hint_pool(EXAMPLES, PREDICTED, {}, settings, random.Random(0))
    assert [r["missed"] for r in records] == [["B00"], ["A00"], []]
    assert [r["hints"] for r in records] == [["B00"], ["A00"], []]
    none = build_hint_pool(EXAMPLES, PREDICTED, {}, PhiSettings(hint_probability=0.0), random.Random(0))
    assert all(not r["hints"] for r in none)


def test_hint_weights_favour_rare_and_low_recall_codes():
    settings = PhiSettings(rarity_power=1.0, hint_temperature=1.0)
    recall = {"RARE": 0.0, "FREQ": 0.0, "GOOD": 0.9}
    frequencies = {"RARE": 1, "FREQ": 100, "GOOD": 1}
    rare, frequent, good = hint_weights(["RARE", "FREQ", "GOOD"], recall, frequencies, settings)
    assert rare > frequent and rare > good
    sharp = hint_weights(["RARE", "FREQ"], recall, frequencies, PhiSettings(rarity_power=1.0, hint_temperature=0.5))
    assert sharp[0] / sharp[1] > rare / frequent


def test_weighted_sampling_is_without_replacement_and_follows_weights():
    rng = random.Random(0)
    picks = Counter(sample_without_replacement(["a", "b"], [9.0, 1.0], 1, rng)[0] for _ in range(500))
    assert picks["a"] > 400
    assert sorted(sample_without_replacement(["a", "b", "c"], [1, 1, 1], 5, rng)) == ["a", "b", "c"]


def test_round_examples_skip_zero_advantage_prompts_and_fall_back():
    pool = EXAMPLES
    chosen = round_examples(pool, {"1"}, 10, random.Random(0))
    assert {e.example_id for e in chosen} == {"2", "3"}
    assert len(round_examples(pool, {"1", "2", "3"}, 10, random.Random(0))) == 3
    assert len(round_examples(pool, set(), 2, random.Random(0))) == 2


def test_hints_reach_training_prompts_only_for_hinted_examples():
    dataset = to_dataset(EXAMPLES, {"1": [Candidate("B00", "descripcion corta")]})
    assert "Hint" in dataset[0]["prompt"] and "B00 descripcion corta" in dataset[0]["prompt"]
    assert "Hint" not in dataset[1]["prompt"]
    assert dataset["hinted"] == [True, False, False]
    assert dataset[0]["gold_codes"] == ["A00", "B00"]
