"""Rewards on hand-made completions: malformed lines, invented codes, quotes not in the input, duplicates, NONE, empty."""

from __future__ import annotations

import pytest

from icdcoder.prompt import parse_answer
from icdcoder.rl.rewards import (
    RewardConfig,
    RewardScorer,
    RewardWeights,
    format_score,
    length_penalty,
    score_completion,
    validity_score,
    weighted_set_f1,
)

SOURCE = "Paciente con diabetes mellitus tipo 2 e hipertension arterial. Se realiza Rx torax."
KNOWN = {"E11.9": "icd10cm", "I10": "icd10cm", "BW03ZZZ": "icd10pcs", "J18.9": "icd10cm"}
GOLD = ["E11.9", "I10"]
GOLD_SPANS = [
    ("E11.9", SOURCE.index("diabetes"), SOURCE.index(" e hiper")),
    ("I10", SOURCE.index("hipertension"), SOURCE.index(". Se")),
]


def resolve(code: str):
    code = code.strip().upper()
    return (code, KNOWN[code]) if code in KNOWN else None


def score(completion: str, gold=GOLD, spans=GOLD_SPANS, config: RewardConfig | None = None, **kwargs):
    return score_completion(completion, SOURCE, gold, spans, resolve, config or RewardConfig(), **kwargs)


def test_gold_spans_fixture_points_at_the_evidence():
    assert [SOURCE[start:end] for _, start, end in GOLD_SPANS] == ["diabetes mellitus tipo 2", "hipertension arterial"]


def test_perfect_answer_scores_full_marks():
    result = score("E11.9 | diabetes mellitus tipo 2\nI10 | hipertension arterial")
    assert result.f1 == 1.0 and result.format == 1.0 and result.validity == 1.0 and result.grounding == 1.0
    assert result.length == 0.0
    assert result.total == pytest.approx(1.0 + 0.2 + 0.2 + 0.2)


def test_partial_answer_gets_partial_f1():
    result = score("E11.9 | diabetes mellitus")
    assert result.f1 == pytest.approx(2 * 1.0 * 0.5 / 1.5)


def test_malformed_lines_lower_format_but_do_not_crash():
    result = score("E11.9 | diabetes mellitus\nthis is not a code line\n???")
    assert result.format == pytest.approx(1 / 3)
    assert result.f1 == pytest.approx(2 / 3)


def test_invented_codes_lower_validity_and_precision():
    result = score("E11.9 | diabetes mellitus\nZZZ.99 | hipertension arterial")
    assert result.validity == pytest.approx(0.5)
    assert result.f1 == pytest.approx(2 / 3)  # the invented code is dropped; recall 1/2, precision 1


def test_quote_not_in_input_is_not_grounded_and_not_credited():
    result = score("E11.9 | diabetes gestacional\nI10 | hipertension arterial")
    assert result.grounding == pytest.approx(0.5)
    assert result.f1 == pytest.approx(2 / 3)  # a code without a real quote does not count


def test_quote_in_input_but_away_from_the_code_evidence_is_partial():
    result = score("E11.9 | hipertension arterial")
    assert result.grounding == pytest.approx(0.5)
    config = RewardConfig(partial_grounding=0.0)
    assert score("E11.9 | hipertension arterial", config=config).grounding == 0.0


def test_without_gold_offsets_a_found_quote_is_fully_grounded():
    assert score("J18.9 | Rx torax", gold=[], spans=[]).grounding == 1.0


def test_duplicates_do_not_inflate_anything():
    once = score("E11.9 | diabetes mellitus")
    twice = score("E11.9 | diabetes mellitus\nE11.9 | diabetes mellitus")
    assert twice.f1 == once.f1 and twice.grounding == once.grounding


def test_none_answers():
    assert score("NONE", gold=[], spans=[]).f1 == 1.0
    assert score("NONE", gold=[], spans=[]).format == 1.0
    assert score("NONE", gold=[], spans=[]).validity == 1.0
    missed = score("NONE")
    assert missed.f1 == 0.0
    mixed = score("NONE\nE11.9 | diabetes mellitus")
    assert mixed.format == pytest.approx(0.5)
    assert score("I10 | hipertension arterial", gold=[], spans=[]).f1 == 0.0
    assert score("no se que decir", gold=[], spans=[]).f1 == 0.0  # garbage is not a correct "no code"
    assert score("", gold=[], spans=[]).f1 == 0.0


def test_empty_completion_scores_nothing():
    result = score("")
    assert result.f1 == 0.0 and result.format == 0.0 and result.validity == 0.0 and result.grounding == 0.0
    assert score("   \n  ", gold=[], spans=[]).format == 0.0


def test_rare_codes_weigh_more_when_asked():
    frequencies = {"E11.9": 1000, "I10": 0}
    plain = RewardConfig()
    rare = RewardConfig(rare_weight_power=1.0)
    got_rare = score("I10 | hipertension arterial", config=rare, frequencies=frequencies)
    got_frequent = score("E11.9 | diabetes mellitus", config=rare, frequencies=frequencies)
    assert got_rare.f1 > got_frequent.f1
    assert got_rare.plain_f1 == got_frequent.plain_f1 == score("I10 | hipertension arterial", config=plain).f1


def test_weighted_set_f1_edge_cases():
    assert weighted_set_f1(set(), set()) == 1.0
    assert weighted_set_f1({"A"}, set()) == 0.0
    assert weighted_set_f1(set(), {"A"}) == 0.0
    assert weighted_set_f1({"A", "B"}, {"A"}) == pytest.approx(2 / 3)


def test_length_penalty_grows_with_excess_and_is_bounded():
    config = RewardConfig(length_free_tokens=10, length_tokens_per_code=10)
    assert length_penalty(20, 1, config) == 0.0
    assert length_penalty(30, 1, config) == pytest.approx(-0.5)
    assert length_penalty(10_000, 1, config) == -1.0
    assert length_penalty(30, 2, config) == 0.0
    assert score("E11.9 | diabetes mellitus", n_tokens=500).length == -1.0


def test_format_and_validity_helpers_read_the_parse():
    completion = "I10 | hipertension arterial\nQ99.X9 | torax\nbroken"
    parsed = parse_answer(completion, SOURCE, resolve)
    assert format_score(completion, parsed) == pytest.approx(2 / 3)
    assert validity_score(completion, parsed) == pytest.approx(1 / 2)


def test_weights_change_the_total_and_zero_weights_drop_functions():
    config = RewardConfig(weights=RewardWeights(f1=2.0, format=0.0, validity=0.0, grounding=0.0, length=0.0))
    result = score("E11.9 | diabetes mellitus\nI10 | hipertension arterial", config=config)
    assert result.total == pytest.approx(2.0)
    functions, weights = RewardScorer(resolve, config).reward_functions()
    assert [f.__name__ for f in functions] == ["f1"] and weights == [2.0]


def test_scorer_matches_trl_calling_convention():
    scorer = RewardScorer(resolve, RewardConfig())
    functions, weights = scorer.reward_functions()
    names = [f.__name__ for f in functions]
    assert names == ["f1", "format", "validity", "grounding", "length"]
    completions = ["E11.9 | diabetes mellitus\nI10 | hipertension arterial", "garbage"]
    logged: dict[str, float] = {}
    kwargs = dict(
        prompts=["p", "p"],
        completions=completions,
        completion_ids=[[1] * 10, [1] * 3],
        source=[SOURCE, SOURCE],
        gold_codes=[GOLD, GOLD],
        gold_spans=[[list(s) for s in GOLD_SPANS]] * 2,
        example_id=["a", "a"],
        log_metric=lambda name, value: logged.__setitem__(name, value),
    )
    per_function = {name: function(**kwargs) for name, function in zip(names, functions)}
    totals = [sum(w * per_function[n][i] for n, w in zip(names, weights)) for i in range(2)]
    assert totals[0] == pytest.approx(1.6) and totals[1] == pytest.approx(0.0)
    assert logged["set_f1"] == pytest.approx(0.5)


def test_with_the_real_ontology(ontology):
    def real_resolve(code: str):
        return ontology.resolve(code, systems=("icd10cm", "icd10pcs"))

    result = score_completion(
        "E11.9 | diabetes mellitus\nX99.999 | hipertension", SOURCE, ["E11.9"], [], real_resolve, RewardConfig()
    )
    assert result.f1 == 1.0 and result.validity == pytest.approx(0.5)
