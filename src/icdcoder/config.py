"""Experiment settings: YAML files under ``configs/`` validated by pydantic models.

An experiment file holds only what differs from its base. ``base: other.yaml``
(relative to the file) names the file it extends; mappings are merged key by
key, everything else is replaced. Unknown keys are errors, named with the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from icdcoder.errors import InputError, first_invalid_field

ModelT = TypeVar("ModelT", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every settings model: unknown keys are rejected, not ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml_with_bases(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping, resolving its ``base:`` chain."""
    path = Path(path).resolve()
    if path in _seen:
        raise InputError("circular 'base:' chain", path=path)
    if not path.is_file():
        raise InputError("config file not found", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise InputError("malformed YAML", path=path, line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise InputError("a config file must hold a mapping", path=path)
    base = data.pop("base", None)
    if base is None:
        return data
    parent = read_yaml_with_bases(path.parent / base, _seen + (path,))
    return _deep_merge(parent, data)


def load_config(path: str | Path, model: type[ModelT], overrides: dict[str, Any] | None = None) -> ModelT:
    """Load ``path`` (with its bases) into ``model``; errors name the file and field."""
    data = read_yaml_with_bases(path)
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        field, message = first_invalid_field(err, whole="(top level)")
        raise InputError(f"field '{field}': {message}", path=path) from None
