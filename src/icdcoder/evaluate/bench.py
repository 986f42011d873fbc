"""PLACEHOLDER: replaced by the owner of this area."""


def bench() -> None:
    """Benchmark systems."""
    raise NotImplementedError
