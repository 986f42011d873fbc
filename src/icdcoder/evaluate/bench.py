"""``icdcoder bench``: train (or load) several coders, score them on one CodiEsp split, tabulate.

One YAML names the data, the split and the systems (the ``codiesp_dev`` and
``codiesp_dev_en`` experiments, :mod:`icdcoder.experiments`, run the project's
own benches through :func:`run_system`). For each system the bench trains it on the training split (thresholds
on ``tune_split``) or loads a saved model, codes the evaluated split, writes the
CodiEsp submission files and scores them with the official-style scorer
(``icdcoder.evaluate.codiesp.score_submission``) plus :func:`metrics.evaluate`
for the frequency bands. Each system runs in a fresh process, so its peak RAM
is its own and a crash cannot take the bench down: a failed system is a table
row with its one-line reason.

Outputs under ``output_dir``: ``<name>/<system>.json`` per system (a finished
one is skipped on the next run unless ``--force``: the bench resumes), and
``<name>.json``, ``<name>.md`` (Markdown table), ``<name>.png`` (bar chart).
Trained models and submission files go under ``work_dir/<name>/``.
Relative paths in the YAML are relative to the current directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import typer

from icdcoder.config import StrictModel
from icdcoder.io import progress_bar


class SystemSpec(StrictModel):
    """One row of the bench: a registered system, trained from ``config`` or loaded from ``model``."""

    name: str
    system: str
    config: Path | None = None
    model: Path | None = None
    #: where a system trained by the bench is saved (default: <work_dir>/<bench>/models/<name>)
    save_to: Path | None = None


class BenchConfig(StrictModel):
    name: str = "codiesp_dev"
    data_dir: Path
    split: str = "dev"
    train_split: str = "train"
    #: split given to ``fit`` for thresholds / model selection (None: none)
    tune_split: str | None = "dev"
    lang: Literal["es", "en"] = "es"
    output_dir: Path = Path("results")
    #: trained models and submission files (large, not for version control)
    work_dir: Path = Path("runs/bench")
    #: README markers are ``<!-- bench:<readme_marker>:start -->`` ... ``:end -->``
    readme_marker: str = "codiesp-dev"
    #: run each system in a fresh process (own peak RAM, crash-proof)
    isolate: bool = True
    systems: list[SystemSpec]


# ----------------------------------------------------------------------------- one system


def run_system(spec: SystemSpec, settings: BenchConfig) -> dict[str, Any]:
    """Train or load, predict, score one system; returns its result record (raises on failure)."""
    from icdcoder.baselines.base import build_predictor
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.evaluate.codiesp import score_submission, write_submission
    from icdcoder.evaluate.metrics import code_frequencies, evaluate
    from icdcoder.predictor import peak_rss_mb
    from icdcoder.registry import predictor_class

    cls = predictor_class(spec.system)
    train = load_codiesp(settings.data_dir, settings.train_split, language=settings.lang)
    # Spanish notes come with their English translation where the split ships one (the span coder reads it)
    evaluated = load_codiesp(
        settings.data_dir, settings.split, language=settings.lang, with_translation=settings.lang == "es"
    )
    if spec.model is not None:
        predictor = cls.load(spec.model)
        fit_report = _stored_fit_report(spec.model)
    else:
        tune = None
        if settings.tune_split:
            tune = load_codiesp(settings.data_dir, settings.tune_split, language=settings.lang)
        predictor = build_predictor(cls, spec.config)
        fit_report = _fit_report_dict(predictor.fit(train, tune))
        predictor.save(spec.save_to or Path(settings.work_dir) / settings.name / "models" / spec.name)
    started = time.perf_counter()
    predictions = predictor.predict(evaluated)
    predict_seconds = time.perf_counter() - started
    submission = Path(settings.work_dir) / settings.name / "submissions" / spec.name
    write_submission(submission, predictions)
    official = score_submission(
        settings.data_dir, settings.split, submission, train_dir=Path(settings.data_dir) / settings.train_split
    )
    overall = evaluate(evaluated, predictions, train_counts=code_frequencies(train))
    return {
        "name": spec.name,
        "system": spec.system,
        "status": "ok",
        "split": settings.split,
        "lang": settings.lang,
        "metrics": _table_metrics(official, overall),
        "cost": {
            "train_seconds": fit_report.get("wall_seconds"),
            "train_tokens": fit_report.get("train_tokens"),
            "notes_per_second": round(len(evaluated) / predict_seconds, 3) if predict_seconds > 0 else None,
            "peak_rss_mb": round(max(peak_rss_mb(), fit_report.get("peak_rss_mb") or 0.0), 1),
        },
        "fit_report": fit_report,
        "codiesp": official,
        "overall": overall,
    }


def _bench_dir(settings: BenchConfig) -> Path:
    return Path(settings.output_dir) / settings.name


def _fit_report_dict(report: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(report)


def _stored_fit_report(model_dir: Path) -> dict[str, Any]:
    """Training cost of a saved model, from its ``meta.json`` when it has one."""
    meta_path = Path(model_dir) / "meta.json"
    if not meta_path.is_file():
        return {}
    try:
        return dict(json.loads(meta_path.read_text(encoding="utf-8")).get("fit_report") or {})
    except (json.JSONDecodeError, AttributeError):
        return {}


def _table_metrics(official: dict[str, Any], overall: dict[str, Any]) -> dict[str, float | None]:
    """The numbers of a table row: D/P from the CodiEsp scorer, frequency bands over all codes."""
    return {
        "d_map": official["D"]["map"],
        "p_map": official["P"]["map"],
        "d_micro_f1": official["D"]["micro_f1"],
        "d_macro_f1": official["D"]["macro_f1"],
        "p_micro_f1": official["P"]["micro_f1"],
        "unseen_recall": overall.get("unseen_recall"),
        "rare_recall": overall.get("rare_recall"),
        "frequent_recall": overall.get("frequent_recall"),
        "x_f1": official["X"]["f1"],
    }


def _run_isolated(spec: SystemSpec, settings: BenchConfig) -> dict[str, Any]:
    """:func:`run_system` in a fresh process; a failure of any kind becomes a failed record."""
    try:
        if not settings.isolate:
            return run_system(spec, settings)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(run_system, spec, settings).result()
    except Exception as err:  # noqa: BLE001 - a failing system is a table row, not a crash
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        return {"name": spec.name, "system": spec.system, "status": "failed", "reason": reason}


# ----------------------------------------------------------------------------- reports

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("D MAP", "metrics", "d_map"),
    ("P MAP", "metrics", "p_map"),
    ("D micro-F1", "metrics", "d_micro_f1"),
    ("D macro-F1", "metrics", "d_macro_f1"),
    ("P micro-F1", "metrics", "p_micro_f1"),
    ("unseen R", "metrics", "unseen_recall"),
    ("rare R", "metrics", "rare_recall"),
    ("frequent R", "metrics", "frequent_recall"),
    ("X F1", "metrics", "x_f1"),
    ("train s", "cost", "train_seconds"),
    ("train tokens", "cost", "train_tokens"),
    ("notes/s", "cost", "notes_per_second"),
    ("peak RAM MB", "cost", "peak_rss_mb"),
)
CHART_METRICS = ("d_map", "p_map", "d_micro_f1", "x_f1")


def _cell(value: Any, key: str) -> str:
    if value is None:
        return "–"
    if key in ("train_tokens",):
        return f"{int(value):,}"
    if key in ("train_seconds", "notes_per_second", "peak_rss_mb"):
        return f"{float(value):.1f}"
    return f"{float(value):.3f}"


def markdown_table(results: list[dict[str, Any]], settings: BenchConfig, config_path: Path) -> str:
    """The bench table in Markdown with its caption."""
    return (
        results_table(results) + "\n" + caption(settings) + f" Regenerate: `icdcoder bench --config {config_path}`.\n"
    )


def caption(settings: BenchConfig) -> str:
    """What the table's rows were trained, tuned and scored on, and what its recall bands mean."""
    return (
        f"CodiEsp `{settings.split}` ({settings.lang}), trained on `{settings.train_split}`"
        + (f", thresholds on `{settings.tune_split}`" if settings.tune_split else "")
        + ". Bands: recall of gold codes (diagnoses and procedures together) seen 0 / 1-4 / >=5 times in training."
    )


def results_table(results: list[dict[str, Any]]) -> str:
    """One Markdown row per system; a failed (or skipped) system shows its reason instead of numbers."""
    header = ["system", *(title for title, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for result in results:
        if result["status"] != "ok":
            reason = result.get("reason", "").replace("|", "/")
            lines.append(f"| {result['name']} | {result['status']}: {reason} |" + " |" * (len(COLUMNS) - 1))
            continue
        cells = [_cell(result[group].get(key), key) for _, group, key in COLUMNS]
        lines.append("| " + " | ".join([result["name"], *cells]) + " |")
    return "\n".join(lines) + "\n"


def write_chart(path: Path, results: list[dict[str, Any]]) -> None:
    """Grouped bars of the headline metrics per system (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from icdcoder.io import atomic_write

    done = [r for r in results if r["status"] == "ok"]
    figure, axes = plt.subplots(figsize=(max(5.0, 1.6 * len(CHART_METRICS) * max(len(done), 1) / 2), 3.6))
    width = 0.8 / max(len(done), 1)
    positions = np.arange(len(CHART_METRICS))
    for offset, result in enumerate(done):
        values = [result["metrics"].get(key) or 0.0 for key in CHART_METRICS]
        axes.bar(positions + offset * width, values, width, label=result["name"])
    axes.set_xticks(positions + width * (len(done) - 1) / 2, [t for t, _, k in COLUMNS if k in CHART_METRICS])
    axes.set_ylim(0, 1)
    axes.set_ylabel("score")
    if done:
        axes.legend(fontsize="small")
    figure.tight_layout()
    with atomic_write(path, mode="wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)


def update_readme(readme: Path, marker: str, table: str) -> None:
    """Replace the text between the bench markers of ``readme`` with ``table`` (atomically)."""
    from icdcoder.errors import InputError
    from icdcoder.io import atomic_write, read_text

    start, end = f"<!-- bench:{marker}:start -->", f"<!-- bench:{marker}:end -->"
    text = read_text(readme)
    head, found_start, rest = text.partition(start)
    _, found_end, tail = rest.partition(end)
    if not found_start or not found_end:
        raise InputError(f"markers '{start}' ... '{end}' not found", path=readme)
    with atomic_write(readme) as handle:
        handle.write(f"{head}{start}\n{table.strip()}\n{end}{tail}")


# ----------------------------------------------------------------------------- command


def bench(
    config: Path = typer.Option(..., "--config", help="Bench YAML naming the data, the split and the systems."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Override the YAML's data_dir."),
    force: bool = typer.Option(False, "--force", help="Re-run systems that already have a result."),
    only: list[str] = typer.Option([], "--only", help="Run only these system names (others are still tabulated)."),
    readme: Path | None = typer.Option(None, "--update-readme", help="Write the table between the bench markers."),
) -> None:
    """Train/load each system, score it on the split, write json/md/png; prints the outputs as JSON."""
    from icdcoder.config import load_config
    from icdcoder.errors import InputError
    from icdcoder.io import (
        atomic_write,
        check_output_dir,
        check_output_file,
        output_lock,
    )

    overrides = {"data_dir": str(data_dir)} if data_dir is not None else None
    settings = load_config(config, BenchConfig, overrides=overrides)
    check_output_dir(_bench_dir(settings))
    if readme is not None:
        check_output_file(readme)
    names = [spec.name for spec in settings.systems]
    if len(set(names)) != len(names):
        raise InputError("field 'systems': system names must be unique", path=config)
    unknown = set(only) - set(names)
    if unknown:
        raise InputError(f"--only names unknown systems: {', '.join(sorted(unknown))}")
    bench_dir = _bench_dir(settings)
    results = []
    with output_lock(bench_dir), progress_bar() as progress:
        task = progress.add_task("bench", total=len(settings.systems))
        for spec in settings.systems:
            progress.update(task, description=f"bench: {spec.name}")
            results.append(_result_for(spec, settings, bench_dir / f"{spec.name}.json", force, only))
            progress.advance(task)
    results = [
        _stored_result(bench_dir / f"{spec.name}.json", result) for spec, result in zip(settings.systems, results)
    ]
    table = markdown_table(results, settings, config)
    outputs = {suffix: Path(settings.output_dir) / f"{settings.name}.{suffix}" for suffix in ("json", "md", "png")}
    with atomic_write(outputs["json"]) as handle:
        json.dump({"bench": settings.model_dump(mode="json"), "results": results}, handle, indent=2)
    with atomic_write(outputs["md"]) as handle:
        handle.write(table)
    write_chart(outputs["png"], results)
    if readme is not None:
        update_readme(readme, settings.readme_marker, table)
    typer.echo(table)
    summary = {status: sum(r["status"] == status for r in results) for status in ("ok", "failed", "skipped")}
    typer.echo(json.dumps({**summary, **{key: str(path) for key, path in outputs.items()}}))


def _stored_result(cache: Path, result: dict[str, Any]) -> dict[str, Any]:
    """A system's result as stored now, since another bench on the same folder may have finished
    it meanwhile; a run that failed here is reported as failed."""
    if result["status"] == "failed" or not cache.is_file():
        return result
    return json.loads(cache.read_text(encoding="utf-8"))


def _result_for(spec: SystemSpec, settings: BenchConfig, cache: Path, force: bool, only: list[str]) -> dict[str, Any]:
    """A cached result when allowed, else a fresh run (cached when it succeeded)."""
    from icdcoder.io import atomic_write

    selected = not only or spec.name in only
    if cache.is_file() and (not force or not selected):
        return json.loads(cache.read_text(encoding="utf-8"))
    if not selected:
        return {"name": spec.name, "system": spec.system, "status": "skipped", "reason": "not run (--only)"}
    result = _run_isolated(spec, settings)
    if result["status"] == "ok":
        with atomic_write(cache) as handle:
            json.dump(result, handle, indent=2)
    return result
