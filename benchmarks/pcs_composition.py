"""Would composing ICD-10-PCS codes from an operation word and a body part reach procedures unseen in training?

    python benchmarks/pcs_composition.py --data-dir ../shared/data/codiesp

CodiEsp codes procedures as often at 4-character ICD-10-PCS prefixes (section, body system, root operation,
body part: 0DBP "Excision of Rectum") as at full codes, and 23% of dev procedure codes never occur in train,
where the shipped coder finds almost none (P unseen recall 0.005). Here each 4-character prefix title is split
into its root operation and body part; a translation sentence proposes the prefix when it holds a clinical word
for the operation ("biopsy" for Excision, "amputation" for Detachment, "CT" for Computerized Tomography) and
every content word of the body part (site adjectives mapped to nouns, as ``unseen_concepts.py`` does).

A prefix is then written at the level CodiEsp's training notes code its root operation: when they code it more
often as a full code, as the full code under the prefix with the operation's commonest approach, device and
qualifier (biopsies: "...8ZX" or "...0ZX").

Printed, one JSON line each: how precise the proposals are for codes seen and unseen in training (exact match,
and how many are the prefix of a gold full code), as prefixes and at the training level; then, per weight, the
shipped coder with the training-level proposals fused as one more procedure signal (in the LLM's slot) at D/P
thresholds re-tuned on dev, with D/P unseen-code recall; ``unseen_only`` rows add it only to codes no training
note carries. The slot is shared, so diagnosis scores move a little with the weight too.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

from extra_signal import hit_report, load_coder_and_notes, parser_with_model, print_rows_with_hits
from unseen_concepts import content_words

#: clinical words for a root operation or imaging type, keyed by how 4-character PCS titles name it
OPERATION_WORDS = {
    "Excision": {"biopsy", "biopsie", "biopsied", "excision", "excised", "lumpectomy"},
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


class ProcedureComposer:
    """4-character ICD-10-PCS prefixes as (root operation, body-part content words)."""

    def __init__(self, ontology) -> None:
        self.by_operation: dict[str, list[tuple[frozenset[str], str]]] = defaultdict(list)
        for code in ontology.codes("icd10pcs"):
            if len(code) != 4:
                continue
            title = ontology.describe(code, "icd10pcs")
            operation = next((name for name in OPERATION_WORDS if title.startswith(name + " ")), None)
            if operation is None:
                continue
            body = content_words(re.sub(r"^(of|at)\s+", "", title[len(operation) :].strip()))
            if body:
                self.by_operation[operation].append((body, code))

    def codes_in(self, text: str) -> set[str]:
        """Prefixes whose operation and whole body part one sentence of ``text`` names; the most specific per operation."""
        found = set()
        for sentence in re.split(r"(?<=[.;:!?])\s+|\n+", text):
            words = content_words(sentence)
            raw = set(re.findall(r"\w+", sentence.lower()))
            for operation, clues in OPERATION_WORDS.items():
                if not raw & clues:
                    continue
                matched = [(body, code) for body, code in self.by_operation[operation] if body <= words]
                found.update(code for body, code in matched if not any(body < other for other, _ in matched))
        return found


class TrainingLevels:
    """How CodiEsp's training notes code each root operation: as a 4-character prefix or a full code, and which
    approach, device and qualifier (the last three characters) its full codes carry most often."""

    def __init__(self, train, ontology) -> None:
        self.ontology = ontology
        self.levels: dict[str, Counter] = defaultdict(Counter)
        self.tails: dict[str, Counter] = defaultdict(Counter)
        for document in train:
            for code in document.code_set("icd10pcs"):
                operation = code[0] + code[2]
                self.levels[operation]["full" if len(code) == 7 else "prefix"] += 1
                if len(code) == 7:
                    self.tails[operation][code[4:]] += 1

    def coded(self, prefix: str) -> str:
        """``prefix``, or the full code under it with the operation's commonest tail, when training codes the
        operation more often in full."""
        operation = prefix[0] + prefix[2]
        levels = self.levels.get(operation)
        if not levels or levels["full"] <= levels["prefix"]:
            return prefix
        for tail, _ in self.tails[operation].most_common():
            if self.ontology.get(prefix + tail, "icd10pcs") is not None:
                return prefix + tail
        return prefix


def main() -> None:
    from icdcoder.data.codiesp import load_codiesp

    args = parser_with_model(__doc__.splitlines()[0], weights=[0.0, 0.25, 0.5, 1.0]).parse_args()
    coder, dev, train_counts = load_coder_and_notes(args, "procedure")
    train = load_codiesp(args.data_dir, "train")
    composer = ProcedureComposer(coder.ontology)
    prefixes = {document.id: composer.codes_in(document.translation) for document in dev}
    print(json.dumps({"proposals": hit_report(dev, prefixes, "icd10pcs", train_counts)}), flush=True)
    levels = TrainingLevels(train, coder.ontology)
    hits = {doc_id: {levels.coded(prefix) for prefix in found} for doc_id, found in prefixes.items()}
    print(json.dumps({"proposals_at_training_level": hit_report(dev, hits, "icd10pcs", train_counts)}), flush=True)
    print_rows_with_hits(coder, dev, hits, "icd10pcs", train_counts, args.weights)


if __name__ == "__main__":
    main()
