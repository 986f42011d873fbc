"""The coder the server loads once, and what it answers: the records ``icdcoder code --json`` prints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from icdcoder import __version__
from icdcoder.data.schema import Document
from icdcoder.predictor import Predictor


@dataclass
class Coder:
    """A loaded predictor with the name of what it is (``model_version``, written on every audit row)."""

    predictor: Predictor
    model_version: str

    @classmethod
    def load(cls, model: Path | None, system: str) -> Coder:
        """The coder ``icdcoder code`` would use for ``--model``/``--system``, and the ontology its records describe
        codes with (loaded now, so that the first request does not pay for it)."""
        from icdcoder.infer.cli import load_predictor, model_folder
        from icdcoder.infer.records import folder_digest
        from icdcoder.ontology import load_ontology

        predictor = load_predictor(model, system)
        load_ontology()
        return cls(predictor, f"icdcoder-{__version__}/{system}/{folder_digest(model_folder(model))[:12]}")

    def records(self, documents: Sequence[Document], profile: str) -> list[dict]:
        """One record per note, as ``code --json`` prints it (descriptions, traits, the profile's exclusions), with
        the note's own id."""
        from icdcoder.infer.records import prediction_record

        predictions = self.predictor.predict(list(documents))
        return [
            prediction_record(prediction, document.text, describe=describe, lang=document.language, profile=profile)
            for prediction, document in zip(predictions, documents, strict=True)
        ]


def describe(code: str, system: str) -> str:
    """A code's title, empty for a code the ontology does not know."""
    from icdcoder.ontology import load_ontology

    ontology = load_ontology()
    return ontology.describe(code, system) if ontology.get(code, system) else ""
