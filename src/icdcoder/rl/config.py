"""Settings of GRPO and PHI runs (``configs/rl/*.yaml``), validated by pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from icdcoder.config import StrictModel
from icdcoder.rl.rewards import RewardConfig
from icdcoder.train.config import DataSettings, LoraSettings


class PhiSettings(StrictModel):
    """The PHI curriculum: rounds of (hint-free pass -> missed-code pool -> hinted GRPO round)."""

    rounds: int = Field(2, ge=1)
    #: explicit GRPO step budget of every round
    steps_per_round: int = Field(25, ge=1)
    #: probability that an example with missed codes gets a hint prompt
    hint_probability: float = Field(0.5, ge=0.0, le=1.0)
    min_hints: int = Field(1, ge=1)
    max_hints: int = Field(5, ge=1)
    #: sampling temperature of hint codes: < 1 sharpens towards rare / low-recall codes, > 1 flattens
    hint_temperature: float = Field(1.0, gt=0.0)
    #: how strongly rare codes are favoured as hints: weight x (1 + training frequency) ** -power
    rarity_power: float = Field(0.5, ge=0.0)
    #: training examples run hint-free each round to find missed codes (``null``: all)
    pool_max_examples: int | None = Field(256, ge=1)
    pool_batch_size: int = Field(16, ge=1)
    #: rounds continue one optimisation: the learning rate follows one linear decay over all rounds (as one
    #: GRPO run of the same steps does) and AdamW keeps its moments from round to round; false: every round
    #: is a fresh GRPO run (the reference implementation's behaviour)
    continue_optimizer: bool = False
    #: what the KL term of rounds after the first anchors to: "round_start" (the previous round's model, as a
    #: fresh GRPO run from it would) or "init" (the starting checkpoint, usually the SFT model, for every round)
    kl_reference: Literal["round_start", "init"] = "round_start"

    @model_validator(mode="after")
    def _hint_range(self) -> PhiSettings:
        if self.min_hints > self.max_hints:
            raise ValueError(f"min_hints ({self.min_hints}) must not exceed max_hints ({self.max_hints})")
        return self


class GrpoConfig(StrictModel):
    """One GRPO or PHI run: starting checkpoint, prompts, rewards, rollouts, optimisation, curriculum, output."""

    #: an SFT coder folder (``model/`` + ``retriever/`` + ``coder.json``), an adapter or model folder, or a model name
    init: str = "smollm2-135m"
    #: a new LoRA adapter when ``init`` holds none; an ``init`` adapter is trained further as it is
    lora: LoraSettings = LoraSettings()
    data: DataSettings = DataSettings()
    reward: RewardConfig = RewardConfig()
    #: G: rollouts sampled per prompt
    num_generations: int = Field(4, ge=2)
    #: KL coefficient to the starting checkpoint (0: no reference model)
    beta: float = Field(0.04, ge=0.0)
    max_completion_length: int = Field(64, ge=4)
    temperature: float = Field(1.0, gt=0.0)
    learning_rate: float = Field(1e-5, gt=0.0)
    max_steps: int = Field(50, ge=1)
    #: completions per device and step (a multiple of ``num_generations``)
    per_device_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    #: drop completions of groups whose rollouts all scored the same from the loss (see ``rl.grpo``)
    filter_zero_advantage: bool = True
    #: vLLM rollouts: "auto" uses vLLM when it is installed and CUDA is present
    use_vllm: bool | Literal["auto"] = "auto"
    bf16: bool | Literal["auto"] = "auto"
    seed: int = 0
    save_steps: int = Field(25, ge=1)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    threads: int | None = Field(None, ge=1)
    output_dir: Path = Path("runs/rl/grpo")
    #: the curriculum of ``icdcoder train phi`` (ignored by ``train grpo``; PHI uses
    #: ``phi.steps_per_round`` per round instead of ``max_steps``)
    phi: PhiSettings = PhiSettings()

    @model_validator(mode="after")
    def _batch_holds_whole_groups(self) -> GrpoConfig:
        if (self.per_device_batch_size * self.gradient_accumulation_steps) % self.num_generations:
            raise ValueError(
                f"per_device_batch_size x gradient_accumulation_steps ({self.per_device_batch_size} x "
                f"{self.gradient_accumulation_steps}) must be a multiple of num_generations ({self.num_generations})"
            )
        return self
