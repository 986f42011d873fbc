"""Reinforcement post-training of the generative coder: rewards, GRPO (TRL) and the PHI curriculum.

Heavy modules (``grpo``, ``phi``) import torch/TRL only inside their functions.
"""

from __future__ import annotations

from icdcoder.rl.config import GrpoConfig, PhiSettings
from icdcoder.rl.rewards import RewardBreakdown, RewardConfig, RewardScorer, RewardWeights, score_completion

__all__ = [
    "GrpoConfig",
    "PhiSettings",
    "RewardBreakdown",
    "RewardConfig",
    "RewardScorer",
    "RewardWeights",
    "score_completion",
]
