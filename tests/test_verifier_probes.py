"""``benchmarks/verifier_probes.py``: a probe fitted on made-up training band candidates scores the dev band only."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

from icdcoder.train.verifier import VerifierCandidate, write_candidates

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "verifier" / "gemma3_trees_cpu.yaml"


def candidates(count: int, seed: int) -> list[VerifierCandidate]:
    """Band candidates whose sentence says whether the finding was confirmed (gold) or ruled out, at scores that do
    not tell them apart, and one candidate above the band."""
    rng = random.Random(seed)
    made = []
    for i in range(count):
        gold = i % 2 == 0
        word = "confirmada" if gold else "descartada"
        sentence = f"Se sospecha neumonía, {word} por radiografía."
        made.append(
            VerifierCandidate(
                doc_id=f"n{i}",
                code="J18.9",
                system="icd10cm",
                score=rng.uniform(0.2, 0.6),
                sentence=sentence,
                span_start=12,
                span_end=20,
                kind="positive" if gold else "negative",
            )
        )
    made.append(
        VerifierCandidate(doc_id="top", code="I10", system="icd10cm", score=0.95, sentence="HTA.", kind="positive")
    )
    return made


def test_the_ngram_probe_reads_the_sentence_and_scores_only_the_dev_band(tmp_path):
    bench = load_benchmark("verifier_probes.py")
    write_candidates(tmp_path / "train_candidates.jsonl", candidates(60, seed=0))
    write_candidates(tmp_path / "dev_candidates.jsonl", candidates(20, seed=1))
    found = bench.run_probe(tmp_path, "ngram", CONFIG)
    assert found["train_band"] == 60 and found["dev_band"] == 20
    assert found["probe_auc"] == 1.0 and found["trees_auc"] < 0.9
    scores = [json.loads(line) for line in (tmp_path / "ngram" / "dev_scores.jsonl").read_text().splitlines()]
    assert [s["line"] for s in scores] == list(range(20))  # the candidate above the band (line 20) gets none
    assert all(s["p"] > 0.5 for s in scores[::2]) and all(s["p"] < 0.5 for s in scores[1::2])
    assert (tmp_path / "ngram.yaml").read_text() == CONFIG.read_text()
    bench.run_probe(tmp_path, "ngram", CONFIG, systems=("icd10pcs",), name="procedures")
    assert (tmp_path / "procedures" / "dev_scores.jsonl").read_text() == ""  # every made-up candidate is a diagnosis
    assert (tmp_path / "procedures.yaml").is_file()


def test_a_missing_candidates_file_is_named(tmp_path):
    bench = load_benchmark("verifier_probes.py")
    write_candidates(tmp_path / "train_candidates.jsonl", candidates(4, seed=0))
    with pytest.raises(SystemExit, match="dev_candidates.jsonl: missing"):
        bench.run_probe(tmp_path, "ngram", CONFIG)
