"""A word-for-word Spanish -> English glossary learned from CodiEsp's own parallel text.

Codes never seen in training can only be found through their (English) ICD
titles, and Spanish spans share few character n-grams with them ("riñón" /
"kidney"). CodiEsp ships a machine translation of every note; aligning its
sentences (:func:`icdcoder.data.align.align_document`) gives a few thousand
sentence pairs, and the Dice coefficient of word co-occurrence over those pairs
yields a glossary good enough to turn a span into English key words for the
retriever. Unknown words pass through unchanged (many are cognates).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from icdcoder.errors import InputError
from icdcoder.io import read_text
from icdcoder.text import normalize_text


def parallel_sentences(data_dir: str | Path, split: str) -> list[tuple[str, str]]:
    """Aligned (Spanish, English) sentence pairs of one CodiEsp split (official layout)."""
    from icdcoder.data.align import align_document

    spanish_dir = Path(data_dir) / split / "text_files"
    english_dir = Path(data_dir) / split / "text_files_en"
    if not spanish_dir.is_dir() or not english_dir.is_dir():
        raise InputError("expected text_files/ and text_files_en/", path=Path(data_dir) / split)
    pairs = []
    for spanish_path in sorted(spanish_dir.glob("*.txt")):
        english_path = english_dir / spanish_path.name
        if not english_path.is_file():
            continue
        spanish = read_text(spanish_path)
        aligned = align_document(spanish, read_text(english_path).splitlines())
        for bead in aligned.beads:
            if bead.source and bead.target:
                source = " ".join(spanish[slice(*aligned.source_spans[i])] for i in bead.source)
                pairs.append((source, " ".join(aligned.target_lines[j] for j in bead.target)))
    return pairs


class WordTranslator:
    """Spanish word -> its best English words by Dice coefficient over aligned sentences."""

    def __init__(self, glossary: dict[str, list[str]] | None = None):
        self.glossary = glossary or {}

    def fit(
        self,
        pairs: Iterable[tuple[str, str]],
        min_count: int = 2,
        min_dice: float = 0.3,
        per_word: int = 2,
    ) -> WordTranslator:
        source_counts: Counter = Counter()
        target_counts: Counter = Counter()
        joint: Counter = Counter()
        for source, target in pairs:
            source_words = set(normalize_text(source).split())
            target_words = set(normalize_text(target).split())
            source_counts.update(source_words)
            target_counts.update(target_words)
            joint.update((s, t) for s in source_words for t in target_words)
        scored: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for (source, target), count in joint.items():
            if count >= min_count:
                dice = 2 * count / (source_counts[source] + target_counts[target])
                if dice >= min_dice:
                    scored[source].append((dice, target))
        self.glossary = {word: [t for _, t in sorted(found, reverse=True)[:per_word]] for word, found in scored.items()}
        return self

    def translate(self, text: str) -> str:
        """English key words for ``text`` (normalized words; unknown ones kept as they are)."""
        return " ".join(" ".join(self.glossary.get(word, [word])) for word in normalize_text(text).split())

    def translate_many(self, texts: Sequence[str]) -> list[str]:
        return [self.translate(text) for text in texts]
