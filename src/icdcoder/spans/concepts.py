"""Descriptions and clinical sentences as bags of content words, so that "primary ovarian carcinoma" can meet
"Malignant neoplasm of unspecified ovary": qualifiers dropped, site adjectives mapped to the nouns ICD titles use,
"carcinoma"/"cancer"/"sarcoma" read as "malignant neoplasm". English only (ICD titles and CodiEsp translations).

:class:`ConceptIndex` matches ICD-10-CM titles and inclusion terms this way against the sentences of a text: the
coder's ``concept`` signal, which reaches diagnosis codes no training note carries."""

from __future__ import annotations

import functools
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

from icdcoder import text as normaliser
from icdcoder.spans.segment import sentence_spans
from icdcoder.text import normalize_word

#: words that qualify a description without naming the concept
QUALIFIERS = frozenset(
    "of the and or with in to a an by for on at as from other unspecified specified nos site sites part parts type due not "
    "elsewhere classified".split()
)
#: site adjectives and synonyms, mapped to the noun ICD titles use
NOUNS = {
    "ovarian": "ovary",
    "renal": "kidney",
    "hepatic": "liver",
    "pulmonary": "lung",
    "tibial": "tibia",
    "femoral": "femur",
    "cardiac": "heart",
    "gastric": "stomach",
    "vertebral": "vertebra",
    "urethral": "urethra",
    "vesical": "bladder",
    "splenic": "spleen",
    "pancreatic": "pancreas",
    "cutaneous": "skin",
    "ocular": "eye",
    "orbital": "orbit",
    "testicular": "testis",
    "testicle": "testis",
    "prostatic": "prostate",
    "uterine": "uterus",
    "mammary": "breast",
    "intestinal": "intestine",
    "colonic": "colon",
    "esophageal": "esophagus",
    "duodenal": "duodenum",
    "biliary": "bile",
    "ureteral": "ureter",
    "nasal": "nose",
    "oral": "mouth",
    "dental": "tooth",
    "teeth": "tooth",
    "osseous": "bone",
    "cerebral": "brain",
    "encephalic": "brain",
    "arterial": "artery",
    "venous": "vein",
    "lymphatic": "lymph",
    "ganglion": "lymph",
    "tumour": "neoplasm",
    "tumor": "neoplasm",
    "neoplasia": "neoplasm",
    "metastasis": "secondary",
    "metastases": "secondary",
    "metastatic": "secondary",
    "haemorrhage": "hemorrhage",
    "bleeding": "hemorrhage",
    "lithiasis": "calculus",
    "stone": "calculus",
    "calculi": "calculus",
    "abdominal": "abdomen",
    "pelvic": "pelvis",
    "thoracic": "chest",
    "thorax": "chest",
    "scrotal": "scrotum",
    "mandibular": "mandible",
    "axillary": "axilla",
    "testes": "testis",
}
_MALIGNANT = ("malignant", "neoplasm")
#: words that stand for two title words
EXPANSIONS = {
    "carcinoma": _MALIGNANT,
    "cancer": _MALIGNANT,
    "adenocarcinoma": _MALIGNANT,
    "sarcoma": _MALIGNANT,
    "liposarcoma": _MALIGNANT,
}
_WORD = re.compile(r"\w+")
#: where a sentence ends: after closing punctuation and a space, or at a line break
#: two single words joined by "or" or "and": in ICD-10-CM titles ("Malignant neoplasm of bronchus and lung"), either
_ALTERNATIVE = re.compile(r"\b(\w+) (?:or|and) (\w+)\b")


@functools.lru_cache(maxsize=1 << 16)
def fold_word(word: str) -> str:
    """``word`` in lower case without accents, an English plural folded: "arteries" -> "artery", "stones" -> "stone";
    singulars in -s ("testis", "calculus", "pancreas", "mass") stay."""
    norm = normalize_word(word)
    if len(norm) > 4 and norm.endswith("ies"):
        return norm[:-3] + "y"
    if norm.endswith("sses"):
        return norm[:-2]
    if len(norm) > 3 and norm.endswith("s") and not norm.endswith(("ss", "us", "is", "as")):
        return norm[:-1]
    return norm


@functools.cache
def _folded_maps() -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """``NOUNS`` and ``EXPANSIONS`` with keys and values folded as the words of a text are, so that each key meets
    the word it stands for."""
    nouns = {fold_word(key): fold_word(value) for key, value in NOUNS.items()}
    expansions = {fold_word(key): tuple(fold_word(word) for word in words) for key, words in EXPANSIONS.items()}
    return nouns, expansions


def content_words(text: str, numbers: bool = False) -> frozenset[str]:
    """The concept words of ``text``: lower case, no accents, plurals folded, nouns for site adjectives, no qualifiers;
    numbers only when asked (they tell "Type 2 diabetes" from "Type 1", and "2 sites" from nothing)."""
    words = (concept for word in _WORD.findall(text) for concept in concepts_of(word))
    return frozenset(word for word in words if numbers or not word.isdigit())


@functools.lru_cache(maxsize=1 << 16)
def concepts_of(word: str) -> tuple[str, ...]:
    """The concept words one word of a text stands for: none for a qualifier, two for "carcinoma"."""
    nouns, expansions = _folded_maps()
    norm = fold_word(word)
    norm = nouns.get(norm, norm)
    return tuple(concept for concept in expansions.get(norm, (norm,)) if concept not in QUALIFIERS)


#: the fewest content words (numbers aside) a term needs to be matched: one word alone, "failure" or "mass",
#: names no concept
MIN_CONCEPT_WORDS = 2


@dataclass(frozen=True)
class ConceptMatch:
    """An ICD-10-CM code whose content words one sentence holds (character offsets of the sentence)."""

    code: str
    start: int
    end: int


class ConceptIndex:
    """ICD-10-CM titles and inclusion terms as sets of content words, each filed under its rarest word.

    Codes whose terms reduce to the same words ("Acute kidney failure", "Other acute kidney failure", "Acute kidney
    failure, unspecified") keep one entry, for the shortest code: the coder names an untrained category by its
    default specific code, which is the unspecified child.
    """

    def __init__(self, ontology, system: str = "icd10cm") -> None:
        owner: dict[frozenset[str], str] = {}
        for code in ontology.codes(system):
            info = ontology.get(code, system)
            for term in (
                variant for text in (info.description, *info.inclusion_terms) for variant in alternatives(text)
            ):
                words = content_words(term, numbers=True)
                if sum(not word.isdigit() for word in words) >= MIN_CONCEPT_WORDS and _precedes(code, owner.get(words)):
                    owner[words] = code
        frequency = Counter(word for words in owner for word in words)
        self.by_word: dict[str, list[tuple[frozenset[str], str]]] = defaultdict(list)
        for words, code in owner.items():
            self.by_word[min(words, key=lambda word: (frequency[word], word))].append((words, code))

    @classmethod
    def load_or_build(cls, ontology, system: str = "icd10cm") -> ConceptIndex:
        """The index from the cache when it was built from the same titles by the same rules, else built and cached:
        building takes a few seconds, loading a fraction of one."""
        from icdcoder.ontology.ontology import cached_on_disk

        sources = (__file__, normaliser.__file__)
        return cached_on_disk(ontology, f"concepts {system}", (system,), sources, lambda: cls(ontology, system), cls)

    def codes_in_sentence(self, sentence: str) -> set[str]:
        """The codes whose content words all occur in ``sentence``; of nested matches, only the most specific."""
        words = content_words(sentence, numbers=True)
        matched = [(need, code) for word in words for need, code in self.by_word.get(word, ()) if need <= words]
        return {code for need, code in matched if not any(need < other for other, _ in matched)}

    def matches(self, text: str) -> list[ConceptMatch]:
        """Every code the sentences of ``text`` hold, with its sentence."""
        return [
            ConceptMatch(code, start, end)
            for start, end in sentence_spans(text)
            for code in sorted(self.codes_in_sentence(text[start:end]))
        ]


def alternatives(term: str) -> list[str]:
    """``term`` with each "X or Y" or "X and Y" (two single words) read either way: "Malignant neoplasm of bronchus
    and lung" -> "... of bronchus", "... of lung"; a note names one of them."""
    found = _ALTERNATIVE.search(term)
    if found is None:
        return [term]
    head, tail = term[: found.start()], term[found.end() :]
    return [variant for word in found.groups() for variant in alternatives(head + word + tail)]


def _precedes(code: str, other: str | None) -> bool:
    """Whether ``code`` is shorter than ``other`` (alphabetically first among equals), or ``other`` is None."""
    return other is None or (len(code), code) < (len(other), other)
