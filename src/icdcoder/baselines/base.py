"""Pieces shared by the simple baselines: cost measurement, thresholds, metadata files.

Every baseline saves into a folder holding a ``meta.json`` (system name, the
config it was trained with and its :class:`~icdcoder.predictor.FitReport`) next
to its own model files, so a bench can report training cost of a loaded model.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from icdcoder.config import StrictModel, load_config
from icdcoder.data.schema import DIAGNOSIS_SYSTEMS, Document
from icdcoder.errors import InputError
from icdcoder.io import atomic_write, read_text
from icdcoder.predictor import FitReport, Predictor, peak_rss_mb

META_FILE = "meta.json"

#: thresholds tried when tuning on dev (scores are probabilities in [0, 1])
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.02 * step, 2) for step in range(1, 50))

#: the two CodiEsp sub-tasks; each gets its own threshold because they are scored apart
CODE_GROUPS: dict[str, frozenset[str]] = {
    "diagnosis": frozenset(DIAGNOSIS_SYSTEMS),
    "procedure": frozenset({"icd10pcs", "icd9pcs"}),
}


def code_group(system: str) -> str:
    """``"diagnosis"`` or ``"procedure"`` for a code system."""
    return "diagnosis" if system in DIAGNOSIS_SYSTEMS else "procedure"


@contextlib.contextmanager
def measured_fit(report: FitReport) -> Iterator[FitReport]:
    """Fill ``report.wall_seconds`` and ``report.peak_rss_mb`` for the enclosed training."""
    started = time.perf_counter()
    try:
        yield report
    finally:
        report.wall_seconds = round(time.perf_counter() - started, 3)
        report.peak_rss_mb = round(peak_rss_mb(), 1)


def micro_f1(predicted: Sequence[set[Any]], gold: Sequence[set[Any]]) -> float:
    """Micro-averaged F1 of predicted code sets against gold code sets (same order)."""
    true_pos = sum(len(p & g) for p, g in zip(predicted, gold, strict=True))
    n_pred = sum(len(p) for p in predicted)
    n_gold = sum(len(g) for g in gold)
    if true_pos == 0:
        return 0.0
    precision, recall = true_pos / n_pred, true_pos / n_gold
    return 2 * precision * recall / (precision + recall)


def tune_threshold(
    scored: Sequence[dict[str, float]],
    gold: Sequence[set[str]],
    grid: Sequence[float] = THRESHOLD_GRID,
) -> tuple[float, float]:
    """The grid threshold maximising micro-F1 of ``{code: score}`` per document; returns (threshold, F1).

    Ties go to the lowest threshold (more recall). An empty grid is a programming error.
    """
    if not grid:
        raise ValueError("empty threshold grid")
    best_threshold, best_f1 = grid[0], -1.0
    for threshold in grid:
        predicted = [{code for code, score in doc.items() if score >= threshold} for doc in scored]
        f1 = micro_f1(predicted, gold)
        if f1 > best_f1:
            best_threshold, best_f1 = threshold, f1
    return float(best_threshold), best_f1


def gold_by_group(documents: Sequence[Document], group: str) -> list[set[str]]:
    """Per document, the gold ``system:code`` keys of one code group."""
    systems = CODE_GROUPS[group]
    return [{code_key(g.code, g.system) for g in doc.codes if g.system in systems} for doc in documents]


def code_key(code: str, system: str) -> str:
    """One string naming a code in its system (codes of different systems may collide)."""
    return f"{system}:{code}"


def split_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`code_key`: ``(code, system)``."""
    system, code = key.split(":", 1)
    return code, system


def write_meta(directory: Path, name: str, config: StrictModel, report: FitReport, **extra: Any) -> None:
    """Write ``meta.json`` (system, config, fit report) atomically into ``directory``."""
    meta = {"system": name, "config": config.model_dump(mode="json"), "fit_report": asdict(report), **extra}
    with atomic_write(directory / META_FILE) as handle:
        json.dump(meta, handle, indent=2, ensure_ascii=False)


def read_meta(directory: Path, expected_system: str) -> dict[str, Any]:
    """Read ``meta.json``, checking it belongs to ``expected_system``."""
    path = Path(directory) / META_FILE
    try:
        meta = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(f"malformed JSON ({err.msg})", path=path, line=err.lineno) from None
    if meta.get("system") != expected_system:
        raise InputError(f"field 'system': expected '{expected_system}', found {meta.get('system')!r}", path=path)
    return meta


def fit_report_from_meta(meta: dict[str, Any]) -> FitReport:
    """The FitReport stored in a ``meta.json`` mapping (zeros where missing)."""
    stored = meta.get("fit_report") or {}
    known = {key: stored[key] for key in ("wall_seconds", "train_tokens", "peak_rss_mb", "extra") if key in stored}
    return FitReport(**known)


def build_predictor(cls: type[Predictor], config_path: str | Path | None) -> Predictor:
    """Instantiate a registered predictor class from an optional YAML config.

    Convention: a predictor with settings declares ``config_model`` (a
    :class:`~icdcoder.config.StrictModel`) and takes it as its first argument.
    """
    config_model = getattr(cls, "config_model", None)
    if config_path is None:
        return cls()
    if config_model is None:
        raise InputError(f"system '{cls.name}' takes no config file", path=config_path)
    return cls(load_config(config_path, config_model))
