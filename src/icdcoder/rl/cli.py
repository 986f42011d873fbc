"""PLACEHOLDER: replaced by the owner of this area."""


def train_grpo() -> None:
    """GRPO."""
    raise NotImplementedError


def train_phi() -> None:
    """PHI."""
    raise NotImplementedError
