"""``icdcoder train sft``: supervised fine-tuning of the span coder from a YAML config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from icdcoder.errors import InputError


def parse_overrides(assignments: list[str]) -> dict:
    """``["a.b=3", "c=x"]`` -> ``{"a": {"b": 3}, "c": "x"}``; values are read as YAML scalars."""
    import yaml

    result: dict = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep or not key.strip():
            raise InputError(f"override '{assignment}' must look like key.sub=value", path="--set")
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return result


def train_sft(
    config: Annotated[Path, typer.Option("--config", help="SFT config (configs/sft/*.yaml)")],
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint in output_dir")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a field: a.b=value (repeatable)")] = None,
    export_from: Annotated[
        Path | None, typer.Option("--export-from", help="only turn this checkpoint into a coder folder in output_dir")
    ] = None,
) -> None:
    """Fine-tune the span coder (LoRA via TRL); prints the run summary as JSON."""
    from icdcoder.config import load_config
    from icdcoder.train.config import SftConfig
    from icdcoder.train.sft import export_checkpoint, run_sft

    settings = load_config(config, SftConfig, overrides=parse_overrides(set_ or []))
    if export_from is not None:
        typer.echo(json.dumps({"output_dir": str(export_checkpoint(settings, export_from)), "checkpoint": str(export_from)}))
        return
    report = run_sft(settings, resume=resume)
    summary = {
        "output_dir": str(settings.output_dir),
        "train_tokens": report.train_tokens,
        "wall_seconds": round(report.wall_seconds, 1),
        "peak_rss_mb": round(report.peak_rss_mb, 1),
        **report.extra,
    }
    typer.echo(json.dumps(summary))
