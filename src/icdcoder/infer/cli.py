"""PLACEHOLDER: replaced by the owner of this area."""
import typer

predict_app = typer.Typer(no_args_is_help=True)


def code() -> None:
    """Code one note."""
    raise NotImplementedError
