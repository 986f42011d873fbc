"""PLACEHOLDER: replaced by the owner of this area."""
import typer

app = typer.Typer(no_args_is_help=True)
