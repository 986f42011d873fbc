"""Multi-process training through ``accelerate launch``: 2 CPU processes (gloo) on the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_infer_support import make_codiesp

REPO = Path(__file__).resolve().parent.parent


def test_two_process_cpu_smoke_training(tmp_path, tiny_lm_dir):
    corpus = make_codiesp(tmp_path / "codiesp")
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "configs/accelerate/cpu2.yaml"),
        "--main_process_port",
        "29517",
        "-m",
        "icdcoder.cli",
        "train",
        "sft",
        "--config",
        str(REPO / "configs/sft/smoke.yaml"),
        "--set",
        f"backbone={tiny_lm_dir}",
        "--set",
        f"output_dir={out}",
        "--set",
        f"data.data_dir={corpus}",
        "--set",
        "data.candidates_k=0",
        "--set",
        "max_steps=2",
        "--set",
        "per_device_batch_size=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((out / "run_meta.json").read_text())
    assert meta["steps"] == 2 and meta["train_tokens"] > 0
    assert (out / "model" / "adapter_config.json").is_file()
    # only the main process prints the summary line
    summaries = [line for line in result.stdout.splitlines() if line.startswith("{") and "train_tokens" in line]
    assert len(summaries) == 1
