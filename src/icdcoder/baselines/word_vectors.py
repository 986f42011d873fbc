"""Word vectors trained by the project itself on unlabelled clinical text (gensim Word2Vec).

The corpus is every ``*.txt`` under the configured folders (by default the
CodiEsp background cases, Spanish and English) plus the training notes. The
vectors are cached at ``cache_path``; a sidecar JSON records the settings and
a fingerprint of the corpus, and a mismatch retrains instead of reusing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from pydantic import Field

from icdcoder.baselines.neural_common import fingerprint, read_json, word_tokens, write_json
from icdcoder.config import StrictModel
from icdcoder.errors import InputError
from icdcoder.io import read_text

log = logging.getLogger(__name__)


class WordVectorSettings(StrictModel):
    """Word2Vec settings and where the vectors are cached."""

    #: folders whose ``*.txt`` files form the unlabelled corpus (train notes are always added)
    corpus_dirs: list[str] = []
    cache_path: str | None = None
    vector_size: int = Field(100, ge=2)
    window: int = Field(5, ge=1)
    min_count: int = Field(2, ge=1)
    epochs: int = Field(5, ge=1)
    sg: bool = True
    workers: int = Field(1, ge=1)
    seed: int = 13


class _Sentences:
    """Re-iterable token lists: gensim walks the corpus once per epoch without holding it twice."""

    def __init__(self, files: Sequence[Path], texts: Sequence[str]):
        self.files = files
        self.texts = texts

    def __iter__(self) -> Iterator[list[str]]:
        for path in self.files:
            yield [token.text for token in word_tokens(read_text(path))]
        for text in self.texts:
            yield [token.text for token in word_tokens(text)]


def corpus_files(settings: WordVectorSettings) -> list[Path]:
    files: list[Path] = []
    for folder in settings.corpus_dirs:
        path = Path(folder)
        if not path.is_dir():
            raise InputError("word-vector corpus folder not found", path=path)
        files.extend(sorted(path.glob("*.txt")))
    return files


def load_or_train_word_vectors(settings: WordVectorSettings, extra_texts: Sequence[str]):
    """Cached gensim ``KeyedVectors`` for this corpus and these settings, training them if needed."""
    from gensim.models import KeyedVectors, Word2Vec

    files = corpus_files(settings)
    key = fingerprint(
        settings.model_dump(exclude={"cache_path", "workers"}),
        [(p.name, p.stat().st_size) for p in files],
        list(extra_texts),
    )
    cache = Path(settings.cache_path) if settings.cache_path else None
    if cache is not None and cache.is_file() and _cache_key(cache) == key:
        log.info("word vectors: reusing %s", cache)
        return KeyedVectors.load(str(cache))
    log.info("word vectors: training on %d files + %d notes", len(files), len(extra_texts))
    model = Word2Vec(
        sentences=_Sentences(files, extra_texts),
        vector_size=settings.vector_size,
        window=settings.window,
        min_count=settings.min_count,
        sg=int(settings.sg),
        epochs=settings.epochs,
        workers=settings.workers,
        seed=settings.seed,
    )
    vectors = model.wv
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        vectors.save(str(cache))
        write_json(
            _sidecar(cache), {"key": key, "vocabulary": len(vectors.index_to_key), "settings": settings.model_dump()}
        )
    return vectors


def _sidecar(cache: Path) -> Path:
    return cache.with_name(cache.name + ".json")


def _cache_key(cache: Path) -> str | None:
    sidecar = _sidecar(cache)
    return read_json(sidecar).get("key") if sidecar.is_file() else None
