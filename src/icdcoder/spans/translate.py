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

import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from icdcoder.errors import InputError
from icdcoder.io import read_text, write_json_or_remove
from icdcoder.ontology.build import STOPWORDS
from icdcoder.ontology.search import SPANISH_STOPWORDS
from icdcoder.text import normalize_text

_WORD = re.compile(r"\w+")
#: two words of at least this many letters whose character trigrams overlap this much are taken for cognates
#: ("ginecomastia" / "gynecomastia", "pulmonar" / "pulmonary")
COGNATE_MIN_LETTERS = 4
COGNATE_MIN_DICE = 0.5
#: or share their first letters ("miocardio" / "myocardium" do not; "diverticulo" / "diverticulum" do)
COGNATE_PREFIX = 6
#: a phrase of more content words than this is not narrowed (a long match spans a clause, not a mention)
LOCALIZE_MAX_WORDS = 6
#: the run of note words translating a phrase holds at most this many words per content word of the phrase, plus one
LOCALIZE_SPREAD = 2


def parallel_sentences(data_dir: str | Path, split: str) -> list[tuple[str, str]]:
    """Aligned (Spanish, English) sentence pairs of one CodiEsp split (official layout)."""
    spanish_dir = Path(data_dir) / split / "text_files"
    english_dir = Path(data_dir) / split / "text_files_en"
    if not spanish_dir.is_dir() or not english_dir.is_dir():
        raise InputError("expected text_files/ and text_files_en/", path=Path(data_dir) / split)
    pairs = []
    for spanish_path in sorted(spanish_dir.glob("*.txt")):
        english_path = english_dir / spanish_path.name
        if english_path.is_file():
            pairs.extend(sentence_pairs(read_text(spanish_path), read_text(english_path).splitlines()))
    return pairs


def sentence_pairs(spanish: str, english_lines: Sequence[str]) -> list[tuple[str, str]]:
    """A note's (Spanish, English) sentence pairs: its sentences aligned with the lines of its translation."""
    from icdcoder.data.align import align_document

    aligned = align_document(spanish, list(english_lines))
    return [
        (
            " ".join(spanish[slice(*aligned.source_spans[i])] for i in bead.source),
            " ".join(aligned.target_lines[j] for j in bead.target),
        )
        for bead in aligned.beads
        if bead.source and bead.target
    ]


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
        self.glossary = {
            word: [t for _, t in sorted(found, reverse=True)[:per_word]] for word, found in sorted(scored.items())
        }  # sorted: the same training notes give the same file (set order varies from run to run)
        return self

    def save(self, path: Path) -> None:
        """The glossary as readable JSON (Spanish word -> its English words); an empty glossary removes the file."""
        write_json_or_remove(path, self.glossary)

    @classmethod
    def load(cls, path: Path) -> WordTranslator:
        """A glossary :meth:`save` wrote; a clear error for a file that is not one."""
        try:
            record = json.loads(read_text(path))
            glossary = {str(word): [str(t) for t in targets] for word, targets in record.items()}
        except (json.JSONDecodeError, AttributeError, TypeError) as err:
            reason = str(err).splitlines()[0]
            raise InputError(f"malformed glossary, expected word -> [English words] ({reason})", path=path) from None
        return cls(glossary)

    def translate(self, text: str) -> str:
        """English key words for ``text`` (normalized words; unknown ones kept as they are)."""
        return " ".join(" ".join(self.glossary.get(word, [word])) for word in normalize_text(text).split())

    def translate_many(self, texts: Sequence[str]) -> list[str]:
        return [self.translate(text) for text in texts]

    def localize(self, english: str, text: str, start: int, end: int) -> tuple[int, int] | None:
        """The shortest run of ``text[start:end]``'s words that translates every word of the ``english`` phrase (its
        stop words aside; a word translates another when the glossary gives it, they are the same, or they look like
        cognates); None when no run does, or the phrase is longer than ``LOCALIZE_MAX_WORDS``.

        A code found in a note's English translation has only the Spanish sentence for evidence; this narrows it to
        the words the match translates ("iron deficiency anemia" in "... diagnosticado de anemia por deficiencia de
        hierro y reflujo ..." -> "anemia por deficiencia de hierro").
        """
        return self._narrow(english, STOPWORDS, text, start, end, self._translates)

    def project(self, spanish: str, english: str, start: int, end: int) -> tuple[int, int] | None:
        """The shortest run of ``english[start:end]``'s words that translates every word of the ``spanish`` phrase:
        :meth:`localize` the other way round.

        CodiEsp's evidence reaches an English version only as the whole lines translating its sentence; this narrows it
        to the words translating the evidence ("anemia por deficiencia de hierro" in "She was diagnosed with iron
        deficiency anemia and reflux." -> "iron deficiency anemia").
        """
        return self._narrow(
            spanish,
            SPANISH_STOPWORDS,
            english,
            start,
            end,
            lambda word, phrase_word: self._translates(phrase_word, word),
        )

    def _narrow(
        self,
        phrase: str,
        stopwords: frozenset[str],
        text: str,
        start: int,
        end: int,
        translates: Callable[[str, str], bool],
    ) -> tuple[int, int] | None:
        """The shortest run of ``text[start:end]``'s words covering every word of ``phrase`` but its ``stopwords``, a
        text word covering a phrase word when ``translates(text word, phrase word)``."""
        wanted = [w for w in dict.fromkeys(normalize_text(phrase).split()) if len(w) > 1 and w not in stopwords]
        if not wanted or len(wanted) > LOCALIZE_MAX_WORDS:
            return None
        words = [
            (m.start() + start, m.end() + start, normalize_text(m.group())) for m in _WORD.finditer(text[start:end])
        ]
        covered = [{i for i, target in enumerate(wanted) if translates(word, target)} for _, _, word in words]
        run = _shortest_cover(covered, len(wanted), LOCALIZE_SPREAD * len(wanted) + 1)
        return (words[run[0]][0], words[run[1]][1]) if run is not None else None

    def _translates(self, spanish: str, english: str) -> bool:
        return spanish == english or english in self.glossary.get(spanish, ()) or _cognates(spanish, english)


def _shortest_cover(translated: list[set[int]], wanted: int, longest: int) -> tuple[int, int] | None:
    """``(first, last)`` word of the shortest run, at most ``longest`` words, whose words translate all ``wanted``
    phrase words (the first such run when several are as short)."""
    best: tuple[int, int] | None = None
    for first, found in enumerate(translated):
        if not found:
            continue
        covered: set[int] = set()
        for last in range(first, min(len(translated), first + longest)):
            covered |= translated[last]
            if len(covered) == wanted:
                if best is None or last - first < best[1] - best[0]:
                    best = (first, last)
                break
    return best


def _trigrams(word: str) -> set[str]:
    return {word[i : i + 3] for i in range(len(word) - 2)}


def _cognates(word: str, english: str) -> bool:
    if min(len(word), len(english)) < COGNATE_MIN_LETTERS:
        return False
    if word[:COGNATE_PREFIX] == english[:COGNATE_PREFIX]:
        return True
    a, b = _trigrams(word), _trigrams(english)
    return 2 * len(a & b) / (len(a) + len(b)) >= COGNATE_MIN_DICE
