"""ICD-10-PCS codes composed from an operation word and a body part named in one English sentence.

CodiEsp codes procedures as often at 4-character ICD-10-PCS prefixes (section, body system, root operation,
body part: 0DBP "Excision of Rectum") as at full codes, and a quarter of dev procedure codes never occur in
the training notes, so neither their surface forms nor retrieval over their long titles reach them. Each
prefix title splits into a root operation and a body part; a sentence proposes the prefix when it holds a
clinical word for the operation ("biopsy" for Excision, "CT" for Computerized Tomography) and every content
word of the body part (:func:`icdcoder.spans.concepts.content_words`); of the prefixes one sentence proposes
for an operation, only the most specific are kept.

A proposal is then written at the level the training notes code its root operation: when they code it more
often as a full code, as the full code under the prefix with the operation's commonest approach, device and
qualifier (biopsies: "...8ZX" or "...0ZX").
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from icdcoder.spans.concepts import content_words, fold_word
from icdcoder.spans.segment import sentence_spans

#: clinical words for a root operation or imaging type, keyed by how 4-character PCS titles name it
OPERATION_WORDS = {
    "Excision": {"biopsy", "biopsied", "excision", "excised", "lumpectomy"},
    "Resection": {"resection", "resected"},
    "Drainage": {"drainage", "drained", "puncture", "paracentesis", "thoracentesis"},
    "Detachment at": {"amputation", "amputated", "disarticulation"},
    "Transplantation": {"transplant", "transplantation", "transplanted"},
    "Fusion": {"arthrodesis", "fusion"},
    "Repair": {"repair", "repaired", "suture", "sutured"},
    "Reposition": {"reduction", "reduced"},
    "Replacement": {"prosthesis", "replacement", "arthroplasty"},
    "Inspection": {"exploration", "inspection"},
    "Dilation": {"dilation", "dilatation", "angioplasty"},
    "Bypass": {"bypass"},
    "Destruction": {"ablation", "cauterization", "fulguration"},
    "Release": {"release", "adhesiolysis"},
    "Computerized Tomography (CT Scan)": {"ct", "tac", "tomography", "scan"},
    "Magnetic Resonance Imaging (MRI)": {"mri", "resonance"},
    "Ultrasonography": {"ultrasound", "ultrasonography", "echography", "ecography", "sonography"},
    "Plain Radiography": {"radiography", "radiograph", "rx", "ray"},
    "Fluoroscopy": {"fluoroscopy"},
}
#: the side words of body-part titles ("Left Kidney", "Bilateral Kidneys")
SIDES = frozenset({"right", "left", "bilateral"})
PREFIX_LENGTH = 4
FULL_LENGTH = 7


@dataclass(frozen=True)
class ComposedCode:
    """A composed ICD-10-PCS code (the prefix as written at the training level), the 4-character prefix the
    sentence named, and the sentence (character offsets)."""

    code: str
    prefix: str
    start: int
    end: int


def operation_key(code: str) -> str:
    """Section and root operation (1st and 3rd characters): what decides the level CodiEsp codes at."""
    return code[0] + code[2]


class ProcedureComposer:
    """Proposes ICD-10-PCS codes for the sentences of an English text.

    ``trained_counts``: ICD-10-PCS code -> how many training notes carry it; it sets the level each root
    operation is written at.
    """

    def __init__(self, ontology, trained_counts: Mapping[str, int]) -> None:
        self.ontology = ontology
        self.clues = {operation: {fold_word(word) for word in words} for operation, words in OPERATION_WORDS.items()}
        self.by_operation: dict[str, list[tuple[frozenset[str], str]]] = defaultdict(list)
        for code in ontology.codes("icd10pcs"):
            if len(code) == PREFIX_LENGTH:
                self._index_prefix(code)
        self.levels: dict[str, Counter] = defaultdict(Counter)
        self.tails: dict[str, Counter] = defaultdict(Counter)
        for code, count in trained_counts.items():
            full = len(code) == FULL_LENGTH
            self.levels[operation_key(code)]["full" if full else "prefix"] += count
            if full:
                self.tails[operation_key(code)][code[PREFIX_LENGTH:]] += count
        self._coded: dict[str, str] = {}

    def _index_prefix(self, code: str) -> None:
        title = self.ontology.describe(code, "icd10pcs")
        operation = next((name for name in OPERATION_WORDS if title.startswith(name + " ")), None)
        if operation is None:
            return
        body = content_words(re.sub(r"^(of|at)\s+", "", title[len(operation) :].strip()))
        if body:
            self.by_operation[operation].append((body, code))

    def prefixes_in(self, sentence: str) -> set[str]:
        """The 4-character prefixes whose operation and whole body part ``sentence`` names; per operation,
        the most specific. A sentence that names no side names both ("renal ultrasound": Bilateral Kidneys)."""
        words = content_words(sentence)
        if not words & SIDES:  # an exam or operation of an organ that has two, no side named: both sides
            words |= {"bilateral"}
        folded = {fold_word(word) for word in re.findall(r"\w+", sentence)}
        found: set[str] = set()
        for operation, clues in self.clues.items():
            if folded & clues:
                matched = [(body, code) for body, code in self.by_operation[operation] if body <= words]
                found.update(code for body, code in matched if not any(body < other for other, _ in matched))
        return found

    def coded(self, prefix: str) -> str:
        """``prefix`` as the training notes would write it: itself, or, when they code its operation more often
        in full, the full code under it with the operation's commonest tail that the code system has."""
        if prefix not in self._coded:
            self._coded[prefix] = self._training_level(prefix)
        return self._coded[prefix]

    def _training_level(self, prefix: str) -> str:
        levels = self.levels.get(operation_key(prefix))
        if not levels or levels["full"] <= levels["prefix"]:
            return prefix
        for tail, _ in self.tails[operation_key(prefix)].most_common():
            if self.ontology.get(prefix + tail, "icd10pcs") is not None:
                return prefix + tail
        return prefix

    def compose(self, text: str) -> list[ComposedCode]:
        """Every code the sentences of ``text`` propose, at the training level, with its sentence."""
        return [
            ComposedCode(self.coded(prefix), prefix, start, end)
            for start, end in sentence_spans(text)
            for prefix in sorted(self.prefixes_in(text[start:end]))
        ]
