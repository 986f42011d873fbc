"""Run a registered experiment and turn its results file into its doc page and the README's table.

``results/<name>.json`` holds the config, the git commit the run started from, the split and the numbers;
``docs/experiments/<name>.md`` and the README's block between ``<!-- experiment:<name>:start -->`` and
``<!-- experiment:<name>:end -->`` are generated from it and from nothing else, so every table in the docs can be
traced to one command.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

from icdcoder.config import StrictModel, load_config
from icdcoder.errors import InputError
from icdcoder.experiments import Experiment, all_experiments, experiment
from icdcoder.io import atomic_write, check_output_file, output_lock, read_text

CONFIG_DIR = Path("configs/experiments")
RESULTS_DIR = Path("results")
DOCS_DIR = Path("docs/experiments")
README = Path("README.md")
GENERATED = (
    "<!-- generated from results/{name}.json by `icdcoder experiment pages`: edit the experiment, not this page -->"
)


def command_line(name: str, assignments: list[str]) -> str:
    """The command that regenerates a results file."""
    sets = "".join(f" --set {shlex.quote(item)}" for item in assignments)
    return f"icdcoder experiment run {name}{sets}"


def load_experiment_config(found: Experiment, config_dir: Path, assignments: list[str]) -> StrictModel:
    """The experiment's config: its class defaults, then ``config_dir/<name>.yaml`` when present, then ``--set``."""
    from icdcoder.train.cli import parse_overrides

    overrides = parse_overrides(assignments)
    path = Path(config_dir) / f"{found.name}.yaml"
    if path.is_file():
        return load_config(path, found.config, overrides=overrides)
    from pydantic import ValidationError

    from icdcoder.errors import first_invalid_field

    try:
        return found.config.model_validate(overrides)
    except ValidationError as err:
        field, message = first_invalid_field(err, whole="(top level)")
        raise InputError(f"field '{field}': {message}", path="--set") from None


def git_commit(repo: Path = Path(".")) -> str | None:
    """The commit the working tree is at (with ``+dirty`` when it has changes), or None outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if changed else "")


def run_experiment(
    name: str,
    assignments: list[str] | None = None,
    config_dir: Path = CONFIG_DIR,
    results_dir: Path = RESULTS_DIR,
    docs_dir: Path = DOCS_DIR,
    readme: Path | None = README,
) -> Path:
    """Run ``name`` and write its results file, its page and the README's table; returns the results file."""
    assignments = list(assignments or [])
    found = experiment(name)
    config = load_experiment_config(found, config_dir, assignments)
    results_path = check_output_file(Path(results_dir) / f"{name}.json")
    with output_lock(results_path):
        payload = found.run(config)
        record = {
            "experiment": name,
            "title": found.title,
            "command": command_line(name, assignments),
            "commit": git_commit(),
            "split": payload.get("split"),
            "config": config.model_dump(mode="json"),
            "results": payload,
        }
        with atomic_write(results_path) as handle:
            json.dump(record, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
    write_docs(results_dir, docs_dir, readme)
    return results_path


def read_results(results_dir: Path, name: str) -> dict[str, Any] | None:
    path = Path(results_dir) / f"{name}.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(f"not a results file ({err.msg})", path=path, line=err.lineno) from None
    if not isinstance(record, dict) or record.get("experiment") != name or "results" not in record:
        raise InputError(f"not the results file of experiment '{name}'", path=path)
    return record


def table_block(found: Experiment, record: dict[str, Any]) -> str:
    """The table and the line that says where it comes from (used on the page and in the README)."""
    try:
        table = found.table(record["results"])
    except (KeyError, TypeError, IndexError) as err:  # a results file written by an older version of the experiment
        raise InputError(
            f"the results of experiment '{found.name}' do not fit its table ({type(err).__name__}: {err}); "
            f"rerun `icdcoder experiment run {found.name}`"
        ) from None
    return (
        table.rstrip()
        + f"\n\nSplit scored: {record.get('split')}. Regenerate: `{record['command']}`"
        + (f" (commit `{short_commit(record['commit'])}`)." if record.get("commit") else ".")
    )


def short_commit(commit: str) -> str:
    return commit[:12] + (" with uncommitted changes" if commit.endswith("+dirty") else "")


def page(found: Experiment, record: dict[str, Any] | None) -> str:
    """The Markdown page of one experiment."""
    lines = [f"# {found.name}: {found.title}", "", GENERATED.format(name=found.name), ""]
    if record is None:
        lines += [
            f"Not run yet: the table appears here when `icdcoder experiment run {found.name}` has run ({found.cost}).",
            "",
        ]
    else:
        lines += [table_block(found, record), ""]
    lines += [
        (
            f"Config: `configs/experiments/{found.name}.yaml` (only what differs from the defaults of "
            f"`icdcoder.experiments.{found.name}`); cost of a full run: {found.cost}."
        ),
        "",
        "## Caveats",
        "",
        found.caveats.strip(),
        "",
    ]
    return "\n".join(lines)


def index_page(records: dict[str, dict[str, Any] | None]) -> str:
    lines = [
        "# Experiments",
        "",
        (
            "Every table below is generated from `results/<name>.json` by `icdcoder experiment run <name>` "
            "(`icdcoder experiment list` lists them; `icdcoder experiment pages` regenerates the pages)."
        ),
        "",
        "| experiment | what it measures | results | cost of a run |",
        "|---|---|---|---|",
    ]
    for found in all_experiments():
        status = "yes" if records.get(found.name) else "not run yet"
        lines.append(f"| [{found.name}]({found.name}.md) | {found.title} | {status} | {found.cost} |")
    return "\n".join(lines) + "\n"


def write_docs(results_dir: Path = RESULTS_DIR, docs_dir: Path = DOCS_DIR, readme: Path | None = README) -> list[Path]:
    """Regenerate every experiment page, the index and the README's generated tables from the results files."""
    records = {found.name: read_results(results_dir, found.name) for found in all_experiments()}
    written = []
    for found in all_experiments():
        path = Path(docs_dir) / f"{found.name}.md"
        with atomic_write(path) as handle:
            handle.write(page(found, records[found.name]))
        written.append(path)
    with atomic_write(Path(docs_dir) / "index.md") as handle:
        handle.write(index_page(records))
    if readme is not None and Path(readme).is_file():
        update_readme(Path(readme), records)
    return written


def update_readme(readme: Path, records: dict[str, dict[str, Any] | None]) -> None:
    """Replace each ``<!-- experiment:NAME:start -->`` ... ``:end -->`` block that has a results file."""
    text = original = read_text(readme)
    for found in all_experiments():
        record = records.get(found.name)
        start, end = f"<!-- experiment:{found.name}:start -->", f"<!-- experiment:{found.name}:end -->"
        head, found_start, rest = text.partition(start)
        _, found_end, tail = rest.partition(end)
        if found_start and not found_end:
            raise InputError(f"marker '{start}' without '{end}'", path=readme)
        if found_start and record is not None:
            text = f"{head}{start}\n{table_block(found, record)}\n{end}{tail}"
    if text != original:
        with atomic_write(readme) as handle:
            handle.write(text)
