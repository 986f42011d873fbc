"""``icdcoder experiment``: list the registered experiments, run one, regenerate the pages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from icdcoder.experiments.runner import CONFIG_DIR, DOCS_DIR, README, RESULTS_DIR

app = typer.Typer(no_args_is_help=True, help="Run the experiments behind the docs' tables.")


@app.command("list")
def list_experiments() -> None:
    """List the experiments: name, whether results/NAME.json exists, what it measures."""
    from icdcoder.experiments import all_experiments

    for found in all_experiments():
        status = "results" if (RESULTS_DIR / f"{found.name}.json").is_file() else "not run"
        typer.echo(f"{found.name:<22} {status:<8} {found.title} ({found.cost})")


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="Experiment name (see 'icdcoder experiment list').")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config field: a.b=value (repeatable).")
    ] = None,
    config_dir: Annotated[Path, typer.Option("--config-dir", help="Where NAME.yaml is read from.")] = CONFIG_DIR,
    results_dir: Annotated[Path, typer.Option("--results-dir", help="Where NAME.json is written.")] = RESULTS_DIR,
    docs_dir: Annotated[Path, typer.Option("--docs-dir", help="Where the generated pages go.")] = DOCS_DIR,
    readme: Annotated[Path, typer.Option("--readme", help="README whose generated tables are updated.")] = README,
) -> None:
    """Run one experiment; writes results/NAME.json, docs/experiments/NAME.md and the README's table."""
    from icdcoder.experiments.runner import run_experiment

    path = run_experiment(name, set_ or [], config_dir, results_dir, docs_dir, readme)
    typer.echo(str(path))


@app.command("pages")
def pages(
    results_dir: Annotated[Path, typer.Option("--results-dir", help="Where the results files are.")] = RESULTS_DIR,
    docs_dir: Annotated[Path, typer.Option("--docs-dir", help="Where the generated pages go.")] = DOCS_DIR,
    readme: Annotated[Path, typer.Option("--readme", help="README whose generated tables are updated.")] = README,
) -> None:
    """Regenerate every experiment page and the README's tables from the results files (runs nothing)."""
    from icdcoder.experiments.runner import write_docs

    for path in write_docs(results_dir, docs_dir, readme):
        typer.echo(str(path))
