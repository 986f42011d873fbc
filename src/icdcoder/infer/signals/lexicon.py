"""The note-language lexicon: the surface forms of the training evidence found in the note (fused value ``lexical``).

Each matched form scores its reliability on the training notes (:class:`icdcoder.spans.lexicon.SurfaceFormIndex`), a
strong signal that retrieval's rank fusion flattens, so the coder reads it directly. Also the lexicon files' I/O, which
the English lexicon shares.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from icdcoder.data.schema import Document
from icdcoder.errors import InputError
from icdcoder.infer.signals.base import (
    NoteContext,
    NoteSignal,
    ScoredCode,
    SignalSpec,
    TrainingNotes,
)
from icdcoder.io import atomic_write
from icdcoder.ontology.labels import CODER_SYSTEMS
from icdcoder.spans.lexicon import CodeHit, FormEntry, LexiconConfig, SurfaceFormIndex

if TYPE_CHECKING:
    from icdcoder.infer.coder import SpanPredictor

LEXICON_DIR = "lexicon"
LEXICON_FILE = "surface_forms.json.gz"


def build_lexicon(train: Sequence[Document], ontology=None) -> SurfaceFormIndex:
    """A surface-form index for the coder, with the default index settings.

    With ``ontology`` (English notes), its descriptions and inclusion terms are added, and the short phrases inside the
    training evidence sentences: CodiEsp's English evidence is whole projected sentences, too long to be forms
    themselves.
    """
    if ontology is None:
        return SurfaceFormIndex.build(train, config=LexiconConfig())
    config = LexiconConfig(ontology_systems=list(CODER_SYSTEMS), evidence_phrases=3)
    return SurfaceFormIndex.build(train, ontology=ontology, config=config)


def save_lexicon(lexicon: SurfaceFormIndex | None, directory: Path) -> None:
    """The index as gzipped JSON in ``directory`` (ontology terms make the English one ~15 MB uncompressed); no index
    removes the folder."""
    if lexicon is None:
        if directory.is_dir():
            shutil.rmtree(directory)
        return
    with atomic_write(directory / LEXICON_FILE, mode="wb") as handle:
        handle.write(gzip.compress(json.dumps(lexicon.to_json(), ensure_ascii=False).encode("utf-8"), mtime=0))


def load_lexicon(directory: Path) -> SurfaceFormIndex | None:
    """The index saved in ``directory``; None when there is no such folder."""
    if not directory.is_dir():
        return None
    path = directory / LEXICON_FILE
    if not path.is_file():
        raise InputError("lexicon file missing", path=path)
    try:
        data = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"unreadable lexicon ({type(err).__name__}: {str(err).splitlines()[0]})", path=path) from None
    forms = data.get("forms") if isinstance(data, dict) else None
    if not isinstance(forms, list):  # not what save_lexicon writes: from_json reads it, or says what is wrong
        return SurfaceFormIndex.from_json(data, path)
    config = SurfaceFormIndex.from_json({**data, "forms": []}, path).config
    return SurfaceFormIndex(config, shared_word_entries(forms, path))


def shared_word_entries(forms: list, path: Path) -> dict[tuple[str, ...], FormEntry]:
    """The index's entries from the ``forms`` records of its file (``[form, matched notes, hits]``), as
    :meth:`SurfaceFormIndex.from_json` reads them, but with each word one string however many forms hold it (the
    English lexicon's ontology terms repeat the same words over and over), and each record let go once read, so that
    the parsed file and the index are never held whole together."""
    entries: dict[tuple[str, ...], FormEntry] = {}
    for position, record in enumerate(forms):
        forms[position] = None
        try:
            form, matched, hits = record
            hits = hits if isinstance(hits, dict) else dict(hits)  # the parsed object itself: no copy
            entries[tuple(map(sys.intern, form.split(" ")))] = FormEntry(hits, int(matched))
        except (AttributeError, TypeError, ValueError) as err:
            raise InputError(f"not a surface-form index ({type(err).__name__}: {err})", path=path) from None
    return entries


def hit_items(hit: CodeHit, signal: str) -> list[ScoredCode]:
    """A lexicon hit as scored codes, one per match."""
    return [
        ScoredCode(hit.code, hit.system, {signal: hit.score}, start=match.start, end=match.end)
        for match in sorted(hit.evidence, key=lambda e: e.start)
    ]


class LexiconSignal(NoteSignal):
    """The lexicon of the training notes' own language, read on the note's text (not built for English notes: the
    English lexicon reads those)."""

    specs: ClassVar[tuple[SignalSpec, ...]] = (
        SignalSpec(
            "lexical",
            "lexical_weight",
            grid=(0.0, 1.0, 2.0, 4.0, 8.0),
            file=f"{LEXICON_DIR}/{LEXICON_FILE}",
            description="weight of the note-language lexicon's reliabilities",
        ),
    )

    files: ClassVar[tuple[str, ...]] = (LEXICON_DIR,)

    def __init__(self) -> None:
        self.index: SurfaceFormIndex | None = None

    def fit(self, coder: SpanPredictor, training: TrainingNotes) -> None:
        wanted = training.lexicons and training.language != "en"
        self.index = build_lexicon(training.documents) if wanted else None

    def items(self, coder: SpanPredictor, note: NoteContext) -> list[ScoredCode]:
        if self.index is None:
            return []
        return [item for hit in self.index.code_hits(note.document.text) for item in hit_items(hit, "lexical")]

    def save(self, directory: Path) -> None:
        save_lexicon(self.index, directory / LEXICON_DIR)

    def load(self, directory: Path) -> None:
        self.index = load_lexicon(directory / LEXICON_DIR)
