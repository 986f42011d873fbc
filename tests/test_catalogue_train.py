"""Failure catalogue of the training commands (``train sft``, ``train grpo``, ``train phi``, ``train baseline``): every
bad case is one ``error:`` line before any work, and training survives ``kill -9``, damaged checkpoints and a second
run on the same output folder.

The cases run the real entry point (:mod:`catalogue`); the fault tests train the tiny random model of ``conftest``
on the made-up CodiEsp corpus of ``test_infer_support`` (seconds a run).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from catalogue import REPO, assert_one_line_error, run_main, run_subprocess
from test_infer_support import make_codiesp

SFT_SMOKE = REPO / "configs" / "sft" / "smoke.yaml"
RL_SMOKE = REPO / "configs" / "rl" / "smoke.yaml"
TFIDF = REPO / "configs" / "baselines" / "tfidf.yaml"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_codiesp(tmp_path_factory.mktemp("codiesp"))


# --------------------------------------------------------------------------- helpers


def sft_args(
    output_dir: Path, *extra: str, config: Path = SFT_SMOKE, data_dir: Path | None = None, backbone: Path | None = None
) -> list[str]:
    args = ["train", "sft", "--config", str(config), "--set", f"output_dir={output_dir}"]
    if data_dir is not None:
        args += ["--set", f"data.data_dir={data_dir}"]
    if backbone is not None:
        args += ["--set", f"backbone={backbone}"]
    return args + list(extra)


def rl_args(command: str, output_dir: Path, *extra: str, config: Path = RL_SMOKE) -> list[str]:
    return ["train", command, "--config", str(config), "--set", f"output_dir={output_dir}", *extra]


def write_checkpoint(folder: Path, step: int, *, optimizer: bool = True) -> Path:
    """A small whole trainer checkpoint made by hand: adapter weights, trainer state, optimizer state."""
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    checkpoint = folder / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    save_file(
        {"lora_A.weight": np.zeros((4, 8), dtype=np.float32), "lora_B.weight": np.ones((8, 4), dtype=np.float32)},
        str(checkpoint / "adapter_model.safetensors"),
    )
    (checkpoint / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "x"}))
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    if optimizer:
        torch.save({"state": {0: {"exp_avg": torch.zeros(32)}}, "param_groups": []}, checkpoint / "optimizer.pt")
    return checkpoint


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --------------------------------------------------------------------------- damaged checkpoints, by hand


def _truncated_adapter(c: Path) -> None:
    truncate(c / "adapter_model.safetensors")


def _garbage_adapter(c: Path) -> None:
    (c / "adapter_model.safetensors").write_bytes(b"\x00" * 64)


def _no_trainer_state(c: Path) -> None:
    (c / "trainer_state.json").unlink()


def _cut_trainer_state(c: Path) -> None:
    truncate(c / "trainer_state.json")


def _truncated_optimizer(c: Path) -> None:
    truncate(c / "optimizer.pt", 0.9)


def _flipped_optimizer(c: Path) -> None:
    data = bytearray((c / "optimizer.pt").read_bytes())
    data[100] ^= 0xFF  # inside the first member: the CRC check catches it
    (c / "optimizer.pt").write_bytes(bytes(data))


def _no_weights(c: Path) -> None:
    (c / "adapter_model.safetensors").unlink()


DAMAGE = {
    "truncated adapter": (_truncated_adapter, "adapter_model.safetensors is damaged"),
    "garbage adapter header": (_garbage_adapter, "adapter_model.safetensors is damaged"),
    "no trainer_state.json": (_no_trainer_state, "no trainer_state.json"),
    "truncated trainer_state.json": (_cut_trainer_state, "trainer_state.json is unreadable"),
    "truncated optimizer.pt": (_truncated_optimizer, "optimizer.pt is unreadable"),
    "corrupt optimizer.pt": (_flipped_optimizer, "optimizer.pt is damaged"),
    "no weights": (_no_weights, "no model weights"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_skipped_for_the_one_before(tmp_path, damage, caplog):
    from icdcoder.train.sft import checkpoint_problem, usable_checkpoint

    damage_it, reason = DAMAGE[damage]
    folder = tmp_path / "checkpoints"
    older = write_checkpoint(folder, 2)
    newer = write_checkpoint(folder, 10)  # numeric order, not text order: 10 is newer than 2
    assert checkpoint_problem(newer) is None and usable_checkpoint(folder) == newer
    damage_it(newer)
    assert reason in (checkpoint_problem(newer) or "")
    with caplog.at_level(logging.WARNING, logger="icdcoder.train.sft"):
        assert usable_checkpoint(folder) == older
    assert any("checkpoint-10" in message and reason in message for message in caplog.messages)


def test_checkpoint_lookup_ignores_stray_folders(tmp_path):
    from icdcoder.train.sft import find_checkpoint

    folder = tmp_path / "checkpoints"
    assert find_checkpoint(folder) == (None, [])  # no folder at all
    write_checkpoint(folder, 3, optimizer=False)  # optimizer state is optional; damaged is not
    (folder / "checkpoint-7.tmp").mkdir()
    (folder / "checkpoint-latest").mkdir()
    (folder / "checkpoint-9").write_text("a file")
    assert find_checkpoint(folder) == (folder / "checkpoint-3", [])


# --------------------------------------------------------------------------- the catalogue


def _empty(tmp: Path, name: str = "run") -> Path:
    folder = tmp / name
    folder.mkdir()
    return folder


def _damaged_only(tmp: Path) -> Path:
    run = tmp / "run"
    checkpoint = write_checkpoint(run / "checkpoints", 2)
    truncate(checkpoint / "adapter_model.safetensors")
    return run


def _file(tmp: Path) -> Path:
    path = tmp / "a_file"
    path.write_text("not a folder")
    return path


def _adapter(tmp: Path) -> Path:
    return write_checkpoint(tmp / "checkpoints", 1)


def _truncated_export(tmp: Path) -> Path:
    checkpoint = write_checkpoint(tmp / "checkpoints", 1)
    truncate(checkpoint / "adapter_model.safetensors")
    return checkpoint


def _bad_yaml(tmp: Path) -> Path:
    path = tmp / "bad.yaml"
    path.write_text("base: [unclosed\n")
    return path


def _unknown_field(tmp: Path, base: Path, field: str) -> Path:
    path = tmp / "unknown.yaml"
    path.write_text(f"base: {base}\n{field}: 3\n")
    return path


def _phi_damaged_only(tmp: Path) -> Path:
    run = tmp / "phi"
    checkpoint = write_checkpoint(run / "round_0" / "checkpoints", 1)
    (checkpoint / "trainer_state.json").unlink()
    return run


def _tfidf_unknown(tmp: Path) -> Path:
    path = tmp / "tfidf.yaml"
    path.write_text(f"base: {TFIDF}\nno_such_setting: 1\n")
    return path


#: id -> (args built from the test's tmp_path, fragments the one error line must hold)
CASES = {
    # train sft
    "sft resume without checkpoint": (
        lambda t: sft_args(_empty(t), "--resume"),
        ["run/checkpoints", "no usable checkpoint", "drop --resume"],
    ),
    "sft resume into a missing folder": (
        lambda t: sft_args(t / "nowhere", "--resume"),
        ["nowhere", "nothing to resume", "drop --resume"],
    ),
    "sft resume with only a damaged checkpoint": (
        lambda t: sft_args(_damaged_only(t), "--resume"),
        ["checkpoint-2", "adapter_model.safetensors is damaged", "drop --resume"],
    ),
    "sft output_dir is a file": (lambda t: sft_args(_file(t)), ["a_file", "exists and is not a folder"]),
    "sft output_dir under /proc": (
        lambda t: sft_args(Path("/proc/icdcoder-x")),
        ["/proc/icdcoder-x", "cannot write here"],
    ),
    "sft output_dir is the data folder": (lambda t: sft_args(t, data_dir=t), ["is also an input"]),
    "sft unknown config field": (lambda t: sft_args(t / "run", "--set", "lora.rank=3"), ["lora.rank"]),
    "sft unknown field in the file": (
        lambda t: sft_args(t / "run", config=_unknown_field(t, SFT_SMOKE, "epochz")),
        ["unknown.yaml", "epochz"],
    ),
    "sft missing config file": (
        lambda t: sft_args(t / "run", config=t / "missing.yaml"),
        ["missing.yaml", "config file not found"],
    ),
    "sft malformed config file": (lambda t: sft_args(t / "run", config=_bad_yaml(t)), ["bad.yaml", "malformed YAML"]),
    "sft bad --set": (lambda t: sft_args(t / "run", "--set", "novalue"), ["--set", "key.sub=value"]),
    "sft --export-from a missing folder": (
        lambda t: sft_args(t / "run", "--export-from", str(t / "gone")),
        ["gone", "not found"],
    ),
    "sft --export-from a non-adapter folder": (
        lambda t: sft_args(t / "run", "--export-from", str(t)),
        ["adapter_config.json"],
    ),
    "sft --export-from a truncated adapter": (
        lambda t: sft_args(t / "run", "--export-from", str(_truncated_export(t))),
        ["checkpoint-1", "adapter_model.safetensors is damaged"],
    ),
    "sft --export-from into its own checkpoint": (
        lambda t: sft_args(_adapter(t), "--export-from", str(t / "checkpoints" / "checkpoint-1")),
        ["is also an input"],
    ),
    "sft --export-from with --resume": (
        lambda t: sft_args(t / "run", "--resume", "--export-from", str(_adapter(t))),
        ["--export-from", "--resume"],
    ),
    # train grpo
    "grpo resume without checkpoint": (
        lambda t: rl_args("grpo", _empty(t), "--resume"),
        ["run/checkpoints", "no usable checkpoint", "drop --resume"],
    ),
    "grpo resume with only a damaged checkpoint": (
        lambda t: rl_args("grpo", _damaged_only(t), "--resume"),
        ["checkpoint-2", "damaged", "drop --resume"],
    ),
    "grpo output_dir is a file": (lambda t: rl_args("grpo", _file(t)), ["exists and is not a folder"]),
    "grpo output_dir under /proc": (lambda t: rl_args("grpo", Path("/proc/icdcoder-x")), ["cannot write here"]),
    "grpo output_dir is the starting model": (
        lambda t: rl_args("grpo", _adapter(t), "--set", f"init={t / 'checkpoints' / 'checkpoint-1'}"),
        ["is also an input"],
    ),
    "grpo output_dir is the data folder": (
        lambda t: rl_args("grpo", t, "--set", f"data.data_dir={t}"),
        ["is also an input"],
    ),
    "grpo unknown config field": (
        lambda t: rl_args("grpo", t / "run", "--set", "num_generationz=2"),
        ["num_generationz"],
    ),
    "grpo missing config file": (
        lambda t: rl_args("grpo", t / "run", config=t / "missing.yaml"),
        ["config file not found"],
    ),
    "grpo bad --set": (lambda t: rl_args("grpo", t / "run", "--set", "=3"), ["--set"]),
    # train phi
    "phi resume with nothing done": (
        lambda t: rl_args("phi", _empty(t, "phi"), "--resume"),
        ["phi", "nothing to resume", "drop --resume"],
    ),
    "phi resume with only a damaged checkpoint": (
        lambda t: rl_args("phi", _phi_damaged_only(t), "--resume"),
        ["round_0/checkpoint-1: no trainer_state.json", "drop --resume"],
    ),
    "phi resume into a missing folder": (
        lambda t: rl_args("phi", t / "nowhere", "--resume"),
        ["nowhere", "nothing to resume"],
    ),
    "phi output_dir is a file": (lambda t: rl_args("phi", _file(t)), ["exists and is not a folder"]),
    "phi output_dir under /proc": (lambda t: rl_args("phi", Path("/proc/icdcoder-x")), ["cannot write here"]),
    "phi unknown config field": (lambda t: rl_args("phi", t / "run", "--set", "phi.roundz=2"), ["phi.roundz"]),
    "phi missing config file": (
        lambda t: rl_args("phi", t / "run", config=t / "missing.yaml"),
        ["config file not found"],
    ),
    # train baseline
    "baseline --out is a file": (
        lambda t: ["train", "baseline", "tfidf", "--data-dir", str(t), "--out", str(_file(t))],
        ["exists and is not a folder"],
    ),
    "baseline --out under /proc": (
        lambda t: ["train", "baseline", "tfidf", "--data-dir", str(t), "--out", "/proc/icdcoder-x"],
        ["cannot write here"],
    ),
    "baseline --out is the data folder": (
        lambda t: ["train", "baseline", "tfidf", "--data-dir", str(t), "--out", str(t)],
        ["is also an input"],
    ),
    "baseline unknown system": (lambda t: ["train", "baseline", "nosuch", "--out", str(t / "out")], ["unknown system"]),
    "baseline unknown config field": (
        lambda t: ["train", "baseline", "tfidf", "--config", str(_tfidf_unknown(t)), "--out", str(t / "out")],
        ["no_such_setting"],
    ),
    "baseline missing config file": (
        lambda t: ["train", "baseline", "tfidf", "--config", str(t / "missing.yaml"), "--out", str(t / "out")],
        ["config file not found"],
    ),
    "baseline bad --lang": (
        lambda t: ["train", "baseline", "tfidf", "--lang", "fr", "--out", str(t / "out")],
        ["--lang"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_catalogue(case, tmp_path):
    build, fragments = CASES[case]
    args = build(tmp_path)
    assert_one_line_error(run_main(*args), *fragments)
    if "missing folder" in case:
        assert not (tmp_path / "nowhere").exists()  # a refused --resume creates nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_catalogue_unwritable_output_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        for args in (
            sft_args(locked / "run"),
            rl_args("grpo", locked / "run"),
            rl_args("phi", locked / "run"),
            ["train", "baseline", "tfidf", "--data-dir", str(tmp_path), "--out", str(locked / "run")],
        ):
            assert_one_line_error(run_main(*args), "cannot write here")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("command", ["sft", "grpo", "phi", "baseline"])
def test_catalogue_output_held_by_another_run(command, tmp_path):
    from icdcoder.io import output_lock

    out = tmp_path / "run"
    out.mkdir()
    args = {
        "sft": sft_args(out),
        "grpo": rl_args("grpo", out),
        "phi": rl_args("phi", out),
        "baseline": ["train", "baseline", "tfidf", "--data-dir", str(tmp_path), "--out", str(out)],
    }[command]
    with output_lock(out):
        assert_one_line_error(run_main(*args), "another icdcoder run")


# --------------------------------------------------------------------------- faults while training


def _whole_checkpoints(run: Path) -> list[int]:
    """Steps of the checkpoints whose trainer state is written (the trainer writes it last)."""
    steps = []
    for state in (run / "checkpoints").glob("checkpoint-*/trainer_state.json"):
        try:
            steps.append(json.loads(state.read_text())["global_step"])
        except (OSError, ValueError, KeyError):
            pass  # being written
    return sorted(steps)


def test_kill_9_during_sft_then_resume_and_a_second_run_is_refused_meanwhile(tmp_path, tiny_lm_dir, corpus):
    run = tmp_path / "run"
    args = sft_args(run, "--set", "save_steps=1", "--set", "max_steps=500", data_dir=corpus, backbone=tiny_lm_dir)
    log_path = tmp_path / "first.log"
    with log_path.open("w") as log_file:
        first = subprocess.Popen(
            [sys.executable, "-m", "icdcoder.cli", *args], cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.time() + 120
        while not _whole_checkpoints(run):
            assert first.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
        # (c) while the first run holds the output folder, a second run on it fails at once, in one line
        second = run_subprocess(*args, timeout=60)
        assert_one_line_error(second, str(run), "another icdcoder run")
        assert first.poll() is None, "the first run must still be training (max_steps is far away)"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    from icdcoder.io import lock_path

    assert lock_path(run.absolute()).exists()  # the lock file stays behind; the OS dropped the lock itself
    assert not (run / "coder.json").exists()

    # (a) --resume continues from the newest whole checkpoint (one half-written by the kill is skipped)
    last = max(_whole_checkpoints(run))
    resumed = run_main(
        *sft_args(
            run,
            "--resume",
            "--set",
            "save_steps=1",
            "--set",
            f"max_steps={last + 1}",
            data_dir=corpus,
            backbone=tiny_lm_dir,
        )
    )
    assert resumed.status == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["steps"] == last + 1 and summary["steps_this_run"] == 1
    assert summary["resumed_from"].endswith(f"checkpoint-{last}")
    for name in (
        "model/adapter_config.json",
        "model/adapter_model.safetensors",
        "retriever/retriever.json",
        "coder.json",
        "run_meta.json",
    ):
        assert (run / name).is_file(), name
    meta = json.loads((run / "run_meta.json").read_text())
    assert meta["steps"] == last + 1 and meta["resumed_from"].endswith(f"checkpoint-{last}")

    from icdcoder.infer.coder import SpanPredictor

    coder = SpanPredictor.load(run)
    assert coder.model is not None and coder.retriever is not None


def test_sft_resume_skips_a_truncated_checkpoint_for_the_previous_one(tmp_path, tiny_lm_dir, corpus, ontology, caplog):
    from icdcoder.config import load_config
    from icdcoder.train.coder_folder import train_coder
    from icdcoder.train.config import SftConfig

    def config(max_steps: int) -> SftConfig:
        overrides = {
            "backbone": str(tiny_lm_dir),
            "output_dir": str(tmp_path / "run"),
            "data": {"data_dir": str(corpus)},
            "max_steps": max_steps,
            "save_steps": 1,
        }
        return load_config(SFT_SMOKE, SftConfig, overrides=overrides)

    train_coder(config(2), ontology=ontology)
    checkpoints = tmp_path / "run" / "checkpoints"
    truncate(checkpoints / "checkpoint-2" / "adapter_model.safetensors")
    with caplog.at_level(logging.WARNING, logger="icdcoder.train.sft"):
        report = train_coder(config(3), resume=True, ontology=ontology)
    warnings = [m for m in caplog.messages if "skipping the damaged checkpoint" in m]
    assert len(warnings) == 1 and "checkpoint-2" in warnings[0] and "adapter_model.safetensors" in warnings[0]
    assert report.extra["resumed_from"].endswith("checkpoint-1")
    assert report.extra["steps"] == 3 and report.extra["steps_this_run"] == 2
    state = json.loads((checkpoints / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3


def test_grpo_resume_skips_a_truncated_checkpoint_for_the_previous_one(tmp_path, tiny_lm_dir, corpus, caplog):
    run = tmp_path / "grpo"
    args = rl_args(
        "grpo", run, "--set", f"init={tiny_lm_dir}", "--set", f"data.data_dir={corpus}", "--set", "max_steps=2"
    )
    first = run_main(*args)
    assert first.status == 0, first.stderr[-3000:]
    truncate(run / "checkpoints" / "checkpoint-2" / "optimizer.pt", 0.9)
    with caplog.at_level(logging.INFO):
        resumed = run_main(*args, "--resume")
    assert resumed.status == 0, resumed.stderr[-3000:]
    assert any("checkpoint-2" in m and "optimizer.pt is unreadable" in m for m in caplog.messages)
    assert any(m.startswith("resuming from") and m.endswith("checkpoint-1") for m in caplog.messages)
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == 2
    assert (run / "model" / "adapter_config.json").is_file() and (run / "coder.json").is_file()
