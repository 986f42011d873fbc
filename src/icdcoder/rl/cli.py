"""``icdcoder train grpo`` and ``icdcoder train phi``: reinforcement post-training from a YAML config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[Path, typer.Option("--config", help="RL config (configs/rl/*.yaml)")]
ResumeOption = Annotated[
    bool, typer.Option("--resume", help="continue from the last checkpoint (and finished PHI rounds)")
]
SetOption = Annotated[list[str] | None, typer.Option("--set", help="override a field: a.b=value (repeatable)")]


def _load(config: Path, set_: list[str] | None):
    from icdcoder.config import load_config
    from icdcoder.rl.config import GrpoConfig
    from icdcoder.train.cli import parse_overrides

    return load_config(config, GrpoConfig, overrides=parse_overrides(set_ or []))


def _print_summary(output_dir: Path, report) -> None:
    summary = {
        "output_dir": str(output_dir),
        "wall_seconds": round(report.wall_seconds, 1),
        "peak_rss_mb": round(report.peak_rss_mb, 1),
        **report.extra,
    }
    typer.echo(json.dumps(summary))


def train_grpo(config: ConfigOption, resume: ResumeOption = False, set_: SetOption = None) -> None:
    """GRPO (TRL) from an SFT checkpoint; prints the run summary as JSON."""
    from icdcoder.rl.grpo import run_grpo

    settings = _load(config, set_)
    _print_summary(settings.output_dir, run_grpo(settings, resume=resume))


def train_phi(config: ConfigOption, resume: ResumeOption = False, set_: SetOption = None) -> None:
    """PHI curriculum: rounds of hint-free pass, missed-code hint pool, GRPO round; prints JSON."""
    from icdcoder.rl.phi import run_phi

    settings = _load(config, set_)
    _print_summary(settings.output_dir, run_phi(settings, resume=resume))
