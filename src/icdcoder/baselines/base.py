"""Pieces shared by the simple baselines: cost measurement, thresholds, metadata files.

Every baseline saves into a folder holding a ``meta.json`` (system name, the
config it was trained with and its :class:`~icdcoder.predictor.FitReport`) next
to its own model files, so a bench can report training cost of a loaded model.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from icdcoder.config import StrictModel, load_config
from icdcoder.data.schema import DIAGNOSIS_SYSTEMS, Document
from icdcoder.errors import InputError
from icdcoder.evaluate.thresholds import best_threshold, ranking_of
from icdcoder.io import atomic_write, read_text
from icdcoder.ontology.labels import code_key
from icdcoder.predictor import FitReport, Predictor, peak_rss_mb

META_FILE = "meta.json"

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


def tune_threshold(scored: Sequence[dict[str, float]], gold: Sequence[set[str]]) -> tuple[float, float]:
    """The threshold of the shared grid maximising micro-F1 of ``{code: score}`` per document; returns (threshold, F1).

    :func:`icdcoder.evaluate.thresholds.best_threshold` does the work (ties go to the lowest threshold).
    """
    ranked = {index: ranking_of(doc) for index, doc in enumerate(scored)}
    tuned = best_threshold(ranked, dict(enumerate(gold)))
    return tuned["threshold"], tuned["f1"]


def gold_by_group(documents: Sequence[Document], group: str) -> list[set[str]]:
    """Per document, the gold ``system:code`` keys of one code group."""
    systems = CODE_GROUPS[group]
    return [{code_key(g.code, g.system) for g in doc.codes if g.system in systems} for doc in documents]


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
    # the convention: a class with a ``config_model`` takes its config first (``Predictor`` itself takes none)
    configured = cast("Callable[[StrictModel], Predictor]", cls)
    return configured(load_config(config_path, config_model))
