"""RL settings files validate; the zero-advantage filter masks exactly the completions without signal."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from icdcoder.config import load_config
from icdcoder.errors import InputError
from icdcoder.rl.config import GrpoConfig

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs" / "rl").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_rl_config_validates(path):
    config = load_config(path, GrpoConfig)
    assert config.max_steps >= 1 and config.phi.steps_per_round >= 1


def test_batch_must_hold_whole_groups(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_generations: 3\nper_device_batch_size: 8\n")
    with pytest.raises(InputError, match="num_generations"):
        load_config(bad, GrpoConfig)


def test_zero_advantage_completions_leave_the_loss(monkeypatch):
    import torch
    from trl import GRPOTrainer

    from icdcoder.rl.grpo import trainer_class

    scored = {
        "advantages": torch.tensor([0.0, 0.0, 0.7, -0.7]),
        "completion_mask": torch.ones(4, 3, dtype=torch.int64),
        "num_items_in_batch": torch.tensor(12),
    }
    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", lambda self, inputs: dict(scored))
    trainer = object.__new__(trainer_class())
    trainer.zero_advantage_ids = Counter()
    trainer._metrics = {"train": defaultdict(list)}
    trainer.model = SimpleNamespace(training=True)
    trainer.accelerator = SimpleNamespace(gather=lambda tensor: tensor)
    inputs = [{"example_id": "flat"}] * 2 + [{"example_id": "useful"}] * 2

    output = trainer._generate_and_score_completions(inputs)
    assert output["completion_mask"].tolist() == [[0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1]]
    assert int(output["num_items_in_batch"]) == 6
    assert trainer.zero_advantage_ids == Counter({"flat": 2})
    assert trainer._metrics["train"]["zero_advantage_share"] == [0.5]

    trainer.filter_zero_advantage = False
    unfiltered = trainer._generate_and_score_completions(inputs)
    assert int(unfiltered["completion_mask"].sum()) == 12


def test_gguf_flag_is_cleared_so_trainers_accept_the_dequantised_model():
    from icdcoder.rl.grpo import _allow_training

    config = SimpleNamespace(quantization_config={"quant_method": "gguf"})
    model = SimpleNamespace(hf_quantizer=object(), is_quantized=True, config=config)
    _allow_training(model)
    assert model.hf_quantizer is None and model.is_quantized is False
    assert not hasattr(model.config, "quantization_config")
