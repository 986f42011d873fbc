"""The registry of the coder's signals: each a module here, behind :class:`~icdcoder.infer.signals.base.Signal`.

A new signal is one module with a class like those below, listed in :data:`SIGNAL_CLASSES`: its weight field joins
:class:`~icdcoder.infer.settings.CoderSettings`, its values the fusion and ``predict tune``'s grid, its file the coder
folder's check. The order of the list is the order of preference among evidence spans (the first signal with a span
leads) and of the fusion's sums, so a new signal goes last.
"""

from __future__ import annotations

from icdcoder.infer.signals.base import (
    NoteContext,
    NoteOutputs,
    ScoredCode,
    Signal,
    SignalSpec,
    TrainingNotes,
    complete_phrases,
)
from icdcoder.infer.signals.concepts import ConceptSignal
from icdcoder.infer.signals.english_lexicon import EnglishLexiconSignal
from icdcoder.infer.signals.lexicon import LexiconSignal
from icdcoder.infer.signals.llm import LlmSignal
from icdcoder.infer.signals.procedures import ProcedureSignal
from icdcoder.infer.signals.quantities import QuantitySignal
from icdcoder.infer.signals.retrieval import RetrievalSignal

#: name -> signal class, in order of evidence preference
SIGNAL_CLASSES: dict[str, type[Signal]] = {
    "llm": LlmSignal,
    "lexicon": LexiconSignal,
    "retrieval": RetrievalSignal,
    "english_lexicon": EnglishLexiconSignal,
    "procedures": ProcedureSignal,
    "concepts": ConceptSignal,
    "quantities": QuantitySignal,
}
#: every fused value, in registry order
SPECS: tuple[SignalSpec, ...] = tuple(spec for signal in SIGNAL_CLASSES.values() for spec in signal.specs)
#: each fused value with its weight field in ``CoderSettings``
SIGNAL_WEIGHTS = {spec.name: spec.weight_field for spec in SPECS}
SIGNALS = tuple(SIGNAL_WEIGHTS)
#: the systems each fused value scores
SIGNAL_SYSTEMS = {spec.name: spec.systems for spec in SPECS}
#: the coder-folder file each weight needs (see ``SignalSpec.file``)
SIGNAL_FILES = {spec.weight_field: spec.file for spec in SPECS if spec.file}
#: every file and folder the signals save in a coder folder
SIGNAL_PATHS = tuple(path for signal in SIGNAL_CLASSES.values() for path in signal.files)
#: the weights ``predict tune`` tries for each fused value it tunes
WEIGHT_GRID = {spec.name: list(spec.grid) for spec in SPECS if spec.grid}
#: the weight field of each fused value ``predict tune`` does not vary, with the weight it holds it at
HELD_WEIGHTS = {spec.weight_field: spec.held_weight for spec in SPECS if not spec.grid}


def new_signals() -> dict[str, Signal]:
    """One fresh instance of every registered signal (what a coder holds)."""
    return {name: signal() for name, signal in SIGNAL_CLASSES.items()}


__all__ = [
    "HELD_WEIGHTS",
    "SIGNALS",
    "SIGNAL_CLASSES",
    "SIGNAL_FILES",
    "SIGNAL_PATHS",
    "SIGNAL_SYSTEMS",
    "SIGNAL_WEIGHTS",
    "SPECS",
    "WEIGHT_GRID",
    "ConceptSignal",
    "EnglishLexiconSignal",
    "LexiconSignal",
    "NoteContext",
    "NoteOutputs",
    "QuantitySignal",
    "ScoredCode",
    "Signal",
    "SignalSpec",
    "TrainingNotes",
    "complete_phrases",
    "new_signals",
]
