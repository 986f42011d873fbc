"""The vectorised tuner gives what aggregation and the metrics give, for any weights and threshold."""

from __future__ import annotations

import itertools
import random

import pytest

from icdcoder.data.schema import Document, GoldCode
from icdcoder.evaluate.metrics import mean_average_precision, micro_prf
from icdcoder.evaluate.thresholds import THRESHOLDS, best_threshold
from icdcoder.infer.fusion import aggregate
from icdcoder.infer.settings import CoderSettings
from icdcoder.infer.signals import SIGNAL_WEIGHTS, SIGNALS, NoteOutputs, ScoredCode
from icdcoder.infer.tuning import FusionTable, gold_by_system, tuned_row

CODES = {"icd10cm": [f"A0{i}.{j}" for i in range(4) for j in range(3)], "icd10pcs": [f"0DB{c}" for c in "ABCDEFGH"]}


def random_outputs(rng: random.Random, notes: int) -> tuple[list[NoteOutputs], list[Document]]:
    """Notes whose codes carry random signal values (ties included) and random gold codes."""
    outputs, documents = [], []
    for index in range(notes):
        scored = []
        for system, codes in CODES.items():
            for code in rng.sample(codes, rng.randint(0, len(codes))):
                values = {name: rng.choice([0.0, 0.25, 0.5, 1.0, rng.random()]) for name in rng.sample(SIGNALS, 2)}
                scored.append(
                    ScoredCode(code, system, {k: float(bool(v)) if k == "surface" else v for k, v in values.items()})
                )
        gold = [
            GoldCode(code=code, system=system)
            for system, codes in CODES.items()
            for code in rng.sample(codes, rng.randint(0, 3))
        ]
        outputs.append(NoteOutputs(doc_id=f"n{index}", scored=scored))
        documents.append(Document(id=f"n{index}", text="nota", language="es", codes=tuple(gold)))
    return outputs, documents


def random_settings(rng: random.Random) -> CoderSettings:
    weights = {name: rng.choice([0.0, 0.5, 1.0, 2.0]) for name in SIGNAL_WEIGHTS.values()}
    return CoderSettings(
        **weights, max_codes_per_system=rng.choice([3, 40]), threshold={"icd10cm": 0.0, "icd10pcs": 0.0}
    )


@pytest.mark.parametrize("seed", range(5))
def test_the_table_ranks_codes_as_aggregation_does(seed):
    rng = random.Random(seed)
    outputs, _ = random_outputs(rng, notes=6)
    table = FusionTable(outputs)
    for _ in range(5):
        thresholds = {system: rng.choice([0.0, 0.2, 0.5]) for system in CODES}
        settings = random_settings(rng).model_copy(update={"threshold": thresholds})
        predictions = [aggregate(note, settings) for note in outputs]
        for system in CODES:
            expected = {p.doc_id: [(c.score, c.code) for c in p.ranking({system})] for p in predictions}
            assert table.rankings(settings, system) == expected
            # the decisions are the ranking's codes at or above the threshold; the candidates the rest
            for p in predictions:
                assert all(c.score >= thresholds[system] for c in p.ranked({system}))
                assert all(0 < c.score < thresholds[system] for c in p.candidates if c.system == system)


@pytest.mark.parametrize("seed", range(5))
def test_the_best_threshold_maximises_f1_and_reads_map_off_the_whole_ranking(seed):
    rng = random.Random(seed)
    outputs, documents = random_outputs(rng, notes=8)
    settings = random_settings(rng)
    table = FusionTable(outputs)
    for system, gold in gold_by_system(documents).items():
        ranked = table.rankings(settings, system)
        found = best_threshold(ranked, gold)

        def f1(threshold):
            kept = {doc: [code for score, code in items if score >= threshold] for doc, items in ranked.items()}
            return micro_prf(gold, kept)["micro_f1"]

        whole = {doc: [code for _, code in items] for doc, items in ranked.items()}
        assert found["f1"] == round(f1(found["threshold"]), 4)
        assert found["map"] == round(mean_average_precision(gold, whole), 4)
        assert f1(found["threshold"]) >= max(f1(t) for t in THRESHOLDS) - 1e-9


def test_tuning_for_micro_f1_alone_is_recorded_and_scores_higher_f1():
    import icdcoder.infer.tuning as tuning

    outputs, documents = random_outputs(random.Random(5), notes=12)
    rankings = {}
    for name in ("f1+map", "f1"):
        result = tuning.tune_fusion(outputs, documents, CoderSettings(tuning_objective=name))
        assert result["best_settings"]["tuning_objective"] == name
        rankings[name] = tuned_row(
            FusionTable(outputs), gold_by_system(documents), CoderSettings(**result["best_settings"])
        )[0]
    # on these notes the two objectives part: each wins on its own terms
    assert rankings["f1"]["D_f1"] + rankings["f1"]["P_f1"] > rankings["f1+map"]["D_f1"] + rankings["f1+map"]["P_f1"]
    assert tuning.objective(rankings["f1+map"]) > tuning.objective(rankings["f1"])


def test_rows_that_differ_in_one_systems_signal_share_the_other_systems_result():
    rng = random.Random(7)
    outputs, documents = random_outputs(rng, notes=8)
    table, gold, memo = FusionTable(outputs), gold_by_system(documents), {}
    base = random_settings(rng).model_copy(update={"retrieval_weight": 1.0})
    for procedure, concept in itertools.product([0.0, 1.0, 2.0], repeat=2):
        settings = base.model_copy(update={"procedure_weight": procedure, "concept_weight": concept})
        assert tuned_row(table, gold, settings, memo) == tuned_row(table, gold, settings)
    assert len(memo) == 3 + 3  # diagnoses: one result per concept weight; procedures: one per procedure weight


def test_the_table_keeps_the_best_row_of_each_set_of_signals(monkeypatch):
    import icdcoder.infer.tuning as tuning

    weights = [0.0, 1.0, 2.0]
    monkeypatch.setattr(
        tuning, "WEIGHT_GRID", {s: weights if s in ("lexical", "concept") else [0.0] for s in tuning.WEIGHT_GRID}
    )
    outputs, documents = random_outputs(random.Random(3), notes=10)
    result = tuning.tune_fusion(outputs, documents, CoderSettings())
    table, gold = FusionTable(outputs), gold_by_system(documents)
    best: dict[tuple[bool, bool], float] = {}
    for lexical, concept in itertools.product(weights, repeat=2):
        grid_row = {**dict.fromkeys(tuning.GRID_WEIGHTS, 0.0), "lexical_weight": lexical, "concept_weight": concept}
        settings = CoderSettings(**grid_row, retrieval_weight=1.0, surface_bonus=0.0)
        score = tuning.objective(tuned_row(table, gold, settings)[0])
        best[lexical > 0, concept > 0] = max(best.get((lexical > 0, concept > 0), score), score)
    assert {
        (row["lexical_weight"] > 0, row["concept_weight"] > 0): tuning.objective(row) for row in result["table"]
    } == best


def test_tuning_holds_the_weights_without_a_grid_at_their_specs_held_weight(monkeypatch):
    import icdcoder.infer.tuning as tuning
    from icdcoder.infer.signals import HELD_WEIGHTS, SPECS

    assert HELD_WEIGHTS == {spec.weight_field: spec.held_weight for spec in SPECS if not spec.grid}
    assert HELD_WEIGHTS["retrieval_weight"] == 1.0 and HELD_WEIGHTS["surface_bonus"] == 0.0
    monkeypatch.setattr(tuning, "HELD_WEIGHTS", {"retrieval_weight": 2.0, "surface_bonus": 0.5})
    outputs, documents = random_outputs(random.Random(4), notes=6)
    best = tuning.tune_fusion(outputs, documents, CoderSettings())["best_settings"]
    assert (best["retrieval_weight"], best["surface_bonus"]) == (2.0, 0.5)


@pytest.mark.parametrize("seed", range(4))
def test_the_untrained_threshold_maximises_micro_f1_and_never_loses_to_the_shared_one(seed):
    from dataclasses import replace

    from icdcoder.evaluate.metrics import macro_prf
    from icdcoder.infer.tuning import best_untrained_threshold

    rng = random.Random(seed)
    outputs, documents = random_outputs(rng, notes=8)
    untrained = {code for codes in CODES.values() for code in rng.sample(codes, len(codes) // 2)}
    outputs = [
        replace(note, scored=[replace(item, untrained=item.code in untrained) for item in note.scored])
        for note in outputs
    ]
    table = FusionTable(outputs)
    settings = random_settings(rng).model_copy(update={"threshold": {"icd10cm": 0.3, "icd10pcs": 0.2}})
    for system, gold in gold_by_system(documents).items():
        found = best_untrained_threshold(table, gold, settings, system)

        def scores(threshold):
            split = settings.model_copy(update={"untrained_threshold": {system: threshold}})
            kept = {
                p.doc_id: [c.code for c in p.ranked({system})] for p in (aggregate(note, split) for note in outputs)
            }
            return micro_prf(gold, kept)["micro_f1"], macro_prf(gold, kept)["macro_f1"]

        assert (found["f1"], found["macro_f1"]) == tuple(round(value, 4) for value in scores(found["threshold"]))
        micro_f1 = scores(found["threshold"])[0]
        assert micro_f1 >= max(scores(t)[0] for t in [*THRESHOLDS, settings.threshold[system]]) - 1e-9
        assert micro_f1 >= scores(settings.threshold[system])[0]


def test_thresholds_tuned_for_fixed_weights_keep_one_per_system_unless_asked_for_the_untrained_ones():
    from icdcoder.infer.tuning import with_tuned_thresholds

    rng = random.Random(3)
    outputs, documents = random_outputs(rng, notes=8)
    settings = random_settings(rng).model_copy(update={"untrained_threshold": {"icd10cm": 0.9}})
    one = with_tuned_thresholds(outputs, documents, settings)
    assert one.untrained_threshold == {} and set(one.threshold) == set(CODES)
    both = with_tuned_thresholds(outputs, documents, settings, untrained=True)
    assert both.threshold == one.threshold and set(both.untrained_threshold) == {"icd10cm"}
    every = settings.model_copy(update={"untrained_threshold_systems": ["icd10cm", "icd10pcs"]})
    assert set(with_tuned_thresholds(outputs, documents, every, untrained=True).untrained_threshold) == set(CODES)


def test_the_shared_grid_is_sorted_and_fine_near_zero():
    assert list(THRESHOLDS) == sorted(set(THRESHOLDS)) and THRESHOLDS[0] == 0.0 and THRESHOLDS[-1] < 1.0
    assert sum(1 for threshold in THRESHOLDS if 0 < threshold < 0.025) >= 5  # rare codes' small probabilities


def test_an_empty_grid_is_refused_and_no_hit_keeps_the_default():
    with pytest.raises(ValueError, match="empty threshold grid"):
        best_threshold({"n": [(0.5, "a")]}, {"n": {"a"}}, grid=())
    assert best_threshold({"n": [(0.5, "b")]}, {"n": {"a"}})["threshold"] == 0.5
