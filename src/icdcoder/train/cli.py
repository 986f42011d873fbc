"""PLACEHOLDER: replaced by the owner of this area."""


def train_sft() -> None:
    """SFT."""
    raise NotImplementedError
