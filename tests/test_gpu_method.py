"""``benchmarks/gpu_method.py --device cpu --tiny``: every stage of the GPU run on a made-up CodiEsp folder with a
random 2-layer model (the code path the GPU takes, in about a minute), then a second call that finds every stage done."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_infer_support import make_codiesp

REPO = Path(__file__).resolve().parent.parent


def _gpu_method(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_method.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )


def test_the_tiny_cpu_path_runs_every_stage_then_resumes_with_nothing_left(tmp_path):
    corpus = make_codiesp(tmp_path / "codiesp")
    run_dir = tmp_path / "run"
    args = [
        "--device",
        "cpu",
        "--tiny",
        "--data-dir",
        str(corpus),
        "--run-dir",
        str(run_dir),
        "--wheels",
        str(tmp_path / "no-wheels"),
    ]
    first = _gpu_method(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    printed = [json.loads(line) for line in first.stdout.splitlines()]
    assert [line["stage"] for line in printed] == ["install", "sft", "verifier", "grpo", "phi", "evaluate", "table"]
    result = json.loads((run_dir / "gpu_method.json").read_text(encoding="utf-8"))
    rows = {row["rung"]: row for row in result["rows"]}
    for rung in ("sft", "grpo", "phi"):
        assert rows[rung]["status"] == "done" and rows[rung]["train_seconds"] > 0
        assert 0.0 <= rows[rung]["dev"]["D"]["micro_f1"] <= 1.0 and "map" in rows[rung]["dev"]["D"]
        assert (run_dir / rung / "coder.json").is_file()
    assert result["stages"]["phi"]["rounds"] == 2  # the PHI curriculum ran, not a GRPO run under its name
    verifier = result["stages"]["verifier"]  # one verifier per GPU config, trained and measured, cross-fitted
    assert verifier["candidates"] == "coded here" and set(verifier["trained"]) == {"gemma3_gpu", "smollm2_gpu"}
    assert all(trained["steps"] >= 1 and trained["device"] == "cpu" for trained in verifier["trained"].values())
    for measured in verifier["measured"].values():
        assert 0.0 <= measured["LLM off"]["D_f1"] <= 1.0 and 0.0 <= measured["verifier on"]["D_f1"] <= 1.0
    assert (run_dir / "verifier_study" / "gpu_results.json").is_file() and rows["verifier"]["dev"] is None
    table = (run_dir / "gpu_method.md").read_text(encoding="utf-8")
    assert "| sft | done |" in table and "| phi | done |" in table

    second = _gpu_method(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    statuses = {line["stage"]: line["status"] for line in map(json.loads, second.stdout.splitlines())}
    assert all(statuses[stage] == "finished earlier" for stage in ("install", "sft", "grpo", "phi", "evaluate"))
    assert json.loads((run_dir / "gpu_method.json").read_text(encoding="utf-8"))["rows"] == result["rows"]


def test_a_cuda_run_without_a_gpu_stops_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run the real thing")
    result = _gpu_method("--device", "cuda", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        "--device cuda: no CUDA device here (use --device cpu --tiny for the CPU path)"
    ]
    assert not (tmp_path / "run").exists()
