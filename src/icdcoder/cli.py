"""The ``icdcoder`` command line.

Each area owns its commands in its own ``cli.py`` (kept light: heavy imports
such as torch happen inside the commands); this file only assembles them and
turns :class:`~icdcoder.errors.InputError` into a one-line message.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from icdcoder.baselines.cli import train_baseline
from icdcoder.data.cli import app as data_app
from icdcoder.evaluate.bench import bench
from icdcoder.evaluate.cli import app as evaluate_app
from icdcoder.errors import InputError
from icdcoder.infer.cli import code, predict_app
from icdcoder.ontology.cli import app as codes_app
from icdcoder.rl.cli import train_grpo, train_phi
from icdcoder.train.cli import train_lexicons, train_sft

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.splitlines()[0])
train_app = typer.Typer(no_args_is_help=True, help="Train a coder.")

app.add_typer(codes_app, name="codes", help="Look up ICD codes.")
app.add_typer(data_app, name="data", help="Inspect datasets.")
app.add_typer(evaluate_app, name="evaluate", help="Score predictions against gold.")
app.add_typer(predict_app, name="predict", help="Code a dataset split.")
app.add_typer(train_app, name="train")
app.command("code")(code)
app.command("bench")(bench)
train_app.command("baseline")(train_baseline)
train_app.command("sft")(train_sft)
train_app.command("lexicons")(train_lexicons)
train_app.command("grpo")(train_grpo)
train_app.command("phi")(train_phi)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2."""
    try:
        app(standalone_mode=False)
    except InputError as err:
        Console(stderr=True).print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        Console(stderr=True).print("aborted")
        sys.exit(130)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except Exception as err:  # click usage errors carry their own exit code
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
