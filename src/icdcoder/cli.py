"""The ``icdcoder`` command line.

Each area owns its commands in its own ``cli.py`` (kept light: heavy imports
such as torch happen inside the commands); this file only assembles them and
owns the one error path every command shares (:func:`main`).
"""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from icdcoder import __version__
from icdcoder.assertion.cli import assertion_command
from icdcoder.baselines.cli import train_baseline
from icdcoder.data.cli import app as data_app
from icdcoder.errors import InputError
from icdcoder.evaluate.bench import bench
from icdcoder.evaluate.cli import app as evaluate_app
from icdcoder.experiments.cli import app as experiment_app
from icdcoder.export.cli import app as export_app
from icdcoder.infer.cli import code, predict_app
from icdcoder.ontology.cli import app as codes_app
from icdcoder.rl.cli import train_grpo, train_phi
from icdcoder.serve.cli import serve
from icdcoder.train.cli import train_lexicons, train_refit, train_sft
from icdcoder.train.verifier import train_verifier_command

#: exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it
INTERRUPTED = 130
#: what a run stopped by Ctrl-C says
INTERRUPTED_MESSAGE = "interrupted; rerun the same command to resume"
#: exit status of every expected failure: bad usage, bad input, an output that cannot be written
USER_ERROR = 2

app = typer.Typer(no_args_is_help=True, add_completion=False)
train_app = typer.Typer(no_args_is_help=True, help="Train a coder.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"icdcoder {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Automated ICD coding with small LLMs, with evidence for every code."""


app.add_typer(codes_app, name="codes", help="Look up ICD codes.")
app.add_typer(data_app, name="data", help="Inspect datasets.")
app.add_typer(evaluate_app, name="evaluate", help="Score predictions against gold.")
app.add_typer(export_app, name="export", help="Export coded notes: FHIR R4, CodiEsp TSV, canonical JSONL.")
app.add_typer(experiment_app, name="experiment", help="Run the experiments behind the docs' tables.")
app.add_typer(predict_app, name="predict", help="Code a dataset split.")
app.add_typer(train_app, name="train")
app.command("code")(code)
app.command("assertion")(assertion_command)
app.command("bench")(bench)
app.command("serve")(serve)
train_app.command("baseline")(train_baseline)
train_app.command("sft")(train_sft)
train_app.command("lexicons")(train_lexicons)
train_app.command("refit")(train_refit)
train_app.command("verifier")(train_verifier_command)
train_app.command("grpo")(train_grpo)
train_app.command("phi")(train_phi)


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """The exception classes a usage error can arrive as: typer ships its own copy of click (``typer._click``,
    whose errors derive from ``typer.exceptions.TyperException``) and older typers use the ``click`` package."""
    types: list[type[BaseException]] = []
    try:
        from typer.exceptions import TyperException

        types.append(TyperException)
    except ImportError:
        pass
    try:
        import click

        types.append(click.ClickException)
    except ImportError:
        pass
    return tuple(types)


def _fail(message: str, status: int) -> NoReturn:
    Console(stderr=True).print(message, highlight=False, soft_wrap=True, markup=False)
    sys.exit(status)


def _usage_message(err: BaseException) -> str:
    """One line for a usage error: the command it concerns and what is wrong, with where to read more."""
    context = getattr(err, "ctx", None)
    command = context.command_path if context is not None else "icdcoder"
    text = " ".join(err.format_message().split()) if hasattr(err, "format_message") else str(err)
    return f"error: {command}: {text} (see '{command} --help')"


def _is_help_request(err: BaseException) -> bool:
    """A group or command called with no arguments (``no_args_is_help``): its help is the answer, not an error."""
    return type(err).__name__ == "NoArgsIsHelpError"


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: every expected failure becomes one line on stderr and exit status 2; Ctrl-C exits 130."""
    try:
        status = app(args=argv, prog_name="icdcoder", standalone_mode=False)
    except InputError as err:
        _fail(f"error: {err}", USER_ERROR)
    except KeyboardInterrupt:
        _fail(INTERRUPTED_MESSAGE, INTERRUPTED)
    except typer.Abort:
        _fail("aborted", INTERRUPTED)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except OSError as err:  # the machine said no: a full disk, a file that cannot be read or written
        where = f"{err.filename}: " if err.filename else ""
        _fail(f"error: {where}{err.strerror or err}", USER_ERROR)
    except _usage_error_types() as err:
        if _is_help_request(err):
            typer.echo(err.format_message())  # type: ignore[attr-defined]
            sys.exit(0)
        _fail(_usage_message(err), USER_ERROR)
    # typer returns the exit status of an Exit raised inside a command, and 130 for a Ctrl-C it caught itself
    if isinstance(status, int) and status == INTERRUPTED:
        _fail(INTERRUPTED_MESSAGE, INTERRUPTED)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
