"""The span LLM coder: segment a note, retrieve candidates per segment, generate, fuse, rank.

``predict`` runs in two stages so that tuning is cheap:

1. :meth:`SpanLLMPredictor.segment_outputs` — per note, per segment: the
   retrieved candidates (with fused retrieval scores) and, for segments the
   cheap filter lets through, the LLM's parsed answer lines with a confidence
   each (``exp`` of the mean token log-prob of the line); per note, the lexicons'
   hits, the ICD-10-PCS codes composed on its English text and the ICD-10-CM codes whose title words one of
   its English sentences holds; a diagnosis code no
   training note carries is named at the level the annotators code (``specify_untrained``);
2. :func:`aggregate` — per code, each signal's best value over the note's segments
   (LLM confidence, retrieval score, training-surface hit, lexicon reliability,
   composed procedure, concept),
   combined as a weighted mean in [0, 1] and thresholded per system (codes no training note carries
   by their own threshold, where one is set). Evidence is
   every span where a counted signal found the code: the LLM's quote, the lexicons'
   matched words, the training surface form found in a segment, a value's phrase.

The *lexicon* is the surface-form dictionary of the training evidence
(:class:`icdcoder.baselines.dictionary.SurfaceFormIndex`): the reliability of
each matched form, learned on the training notes, is a strong signal that
retrieval's rank fusion flattens, so the coder reads it directly.

``tune`` runs stage 1 once on dev and grid-searches the weights and thresholds of stage 2
(:mod:`icdcoder.infer.tuning`).
A saved coder is a folder: ``model/`` (adapter), ``retriever/``, ``lexicon/`` and ``lexicon_en/`` (optional),
``concepts.json`` (optional), ``coder.json``.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, create_model, field_validator

from icdcoder.config import StrictModel, load_config
from icdcoder.data.schema import Document, Evidence
from icdcoder.errors import InputError, first_invalid_field
from icdcoder.io import atomic_write, progress_bar, read_text, readable_json
from icdcoder.models.generation import BACKENDS
from icdcoder.predictor import CodePrediction, DocumentPrediction, FitReport, Predictor
from icdcoder.prompt import answer_opening, build_prompt, find_quote, parse_answer

log = logging.getLogger(__name__)

CODER_SYSTEMS = ("icd10cm", "icd10pcs")
CODER_FILE = "coder.json"
LEXICON_DIR = "lexicon"
ENGLISH_LEXICON_DIR = "lexicon_en"
LEXICON_FILE = "surface_forms.json.gz"
#: how often each matched concept was right on the training notes (``SpanLLMPredictor.count_concepts``)
CONCEPTS_FILE = "concepts.json"
#: the phrases around a measured value that name a code, per note language (``SpanLLMPredictor.quantity_templates``)
QUANTITIES_FILE = "quantities.json"
#: the file of a coder folder that each signal weight needs: these weights are 0 by default and tuning raises one only
#: where its signal was present, so a folder whose settings weigh one and lacks its file is incomplete (it would code
#: with fewer signals, silently). The concept counts are not here: without them every concept scores 0.5, as for a
#: coder whose training notes had no English text; a folder names such files in its ``coder.json`` record ``files``.
SIGNAL_FILES = {
    "lexical_weight": f"{LEXICON_DIR}/{LEXICON_FILE}",
    "english_weight": f"{ENGLISH_LEXICON_DIR}/{LEXICON_FILE}",
    "ontology_weight": f"{ENGLISH_LEXICON_DIR}/{LEXICON_FILE}",
    "quantity_weight": QUANTITIES_FILE,
}
#: each signal of a scored code (a ``ScoredCode`` field) with its weight field in ``CoderSettings``,
#: in the order evidence is preferred; a new signal is one entry here and those two fields
SIGNAL_WEIGHTS = {
    "llm": "llm_weight",
    "lexical": "lexical_weight",
    "retrieval": "retrieval_weight",
    "surface": "surface_bonus",
    "english": "english_weight",
    "ontology": "ontology_weight",
    "procedure": "procedure_weight",
    "concept": "concept_weight",
    "quantity": "quantity_weight",
}
SIGNALS = tuple(SIGNAL_WEIGHTS)
#: the systems a signal scores, when not all: its weight counts only in those systems' fused scores, so that
#: weighing a procedure-only signal up does not shrink every diagnosis score
SIGNAL_SYSTEMS = {"procedure": ("icd10pcs",), "concept": ("icd10cm",), "quantity": ("icd10cm",)}
#: the inference precisions a coder accepts ("auto": see :func:`icdcoder.models.loading.cpu_inference_dtype`)
INFERENCE_DTYPES = ("auto", "float32", "bfloat16")
#: how the LLM's reading of a segment becomes its ``llm`` signal (``CoderSettings.llm_mode``)
LLM_MODES = ("generate", "score")
#: what ``predict tune`` can maximise (``CoderSettings.tuning_objective``)
TUNING_OBJECTIVES = ("f1+map", "f1")
#: decimals of a fused score (predictions carry it rounded; thresholds compare the rounded score)
SCORE_DIGITS = 6
#: notes coded together: enough segments for full generation batches, frequent progress updates
NOTES_PER_CHUNK = 8

#: fusion weights and thresholds tuned for the notes of one language; unset fields keep the defaults
FusionOverride = create_model(
    "FusionOverride",
    __base__=StrictModel,
    threshold=(dict[str, float] | None, None),
    untrained_threshold=(dict[str, float] | None, None),
    tuning_objective=(Literal[TUNING_OBJECTIVES] | None, None),
    **{name: (float | None, Field(None, ge=0.0)) for name in SIGNAL_WEIGHTS.values()},
)


class CoderSettings(StrictModel):
    """Inference settings (``configs/coder/*.yaml``); weights and thresholds are tuned on dev."""

    segment_max_words: int = Field(40, ge=5)
    #: for document-level models: the LLM reads windows of this many words (no candidates) instead of
    #: the retrieval segments; retrieval and the lexicons are unchanged
    llm_window_words: int | None = Field(None, ge=5)
    #: candidates shown in the prompt
    candidates_k: int = Field(5, ge=0)
    #: candidates scored by retrieval for fusion (>= candidates_k)
    retrieval_k: int = Field(10, ge=1)
    #: skip the LLM on segments whose best normalised retrieval score is below this
    min_retrieval_score: float = Field(0.0, ge=0.0, le=1.0)
    use_llm: bool = True
    #: "generate": the LLM writes answer lines (codes with quotes), each scored by its mean token probability;
    #: "score": one forward pass per segment reads how likely the answer opens with each shown candidate
    #: (:class:`icdcoder.models.scoring.CandidateScorer`), no quotes written: a candidate's evidence is its training
    #: form in the segment, else the segment. Scoring needs candidates in the prompt (``candidates_k`` > 0) and runs on
    #: ``transformers`` whatever ``backend`` says.
    llm_mode: Literal[LLM_MODES] = "generate"

    @field_validator("llm_mode")
    @classmethod
    def _scoring_needs_candidates(cls, mode: str, info: ValidationInfo) -> str:
        if mode == "score" and (info.data.get("candidates_k") == 0 or info.data.get("llm_window_words")):
            raise ValueError("'score' scores the candidates shown with each segment: it needs candidates_k > 0 and no llm_window_words")
        return mode

    #: name an ICD-10-CM code that no training note carries and that is not specific (a category title
    #: matched, say) by its default specific code (:meth:`Ontology.default_specific_code`: "N00" -> "N00.9");
    #: codes the training notes carry keep the level their annotators used
    specify_untrained: bool = True
    constrained: bool = False
    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(48, ge=4)
    max_prompt_tokens: int = Field(384, ge=32)
    llm_weight: float = Field(0.5, ge=0.0)
    retrieval_weight: float = Field(0.5, ge=0.0)
    surface_bonus: float = Field(0.0, ge=0.0)
    lexical_weight: float = Field(0.0, ge=0.0)
    #: also retrieve candidates for the segments of a note's English translation (when it has one)
    retrieve_on_translation: bool = True
    #: weights of the English lexicon, read on the note's English text (the note, or its translation):
    #: its forms confirmed on training notes, and the ontology terms no training note confirmed
    english_weight: float = Field(0.0, ge=0.0)
    ontology_weight: float = Field(0.0, ge=0.0)
    #: weight of the ICD-10-PCS codes composed from an operation word and a body part in one sentence of the
    #: note's English text (:class:`icdcoder.spans.procedures.ProcedureComposer`)
    procedure_weight: float = Field(0.0, ge=0.0)
    #: weight of the ICD-10-CM codes whose title or inclusion term, as content words, one sentence of the note's
    #: English text holds (:class:`icdcoder.spans.concepts.ConceptIndex`); a match scores its reliability on the
    #: training notes (``SpanLLMPredictor.concept_reliability``)
    concept_weight: float = Field(0.0, ge=0.0)
    #: weight of the ICD-10-CM codes named by a measured value ("gestación de 27 semanas" -> Z3A.27) through the
    #: phrases learned on training notes of the note's language (:class:`icdcoder.spans.quantities.QuantityTemplates`);
    #: a match scores the phrase's reliability there
    quantity_weight: float = Field(0.0, ge=0.0)
    threshold: dict[str, float] = {"icd10cm": 0.3, "icd10pcs": 0.3}
    #: per system, the threshold of the codes no training note carries (their scores come only from the ontology,
    #: concept and value signals and sit lower); a system not named here uses ``threshold`` for every code
    untrained_threshold: dict[str, float] = {}
    #: the systems whose untrained codes tuning gives a threshold of their own; on CodiEsp dev, cross-fitted, that
    #: paid for diagnoses (micro-F1 + MAP + macro-F1 +0.014) and not for procedures (-0.010)
    untrained_threshold_systems: list[Literal[CODER_SYSTEMS]] = ["icd10cm"]
    #: what ``predict tune`` maximises (per language, as the weights): "f1+map" micro-F1 + MAP (CodiEsp ranks D and P by MAP; the
    #: untrained codes' threshold adds macro-F1), or "f1" micro-F1 alone (a set of codes, not a ranking, is what
    #: counts); recorded so that re-tuning keeps it
    tuning_objective: Literal[TUNING_OBJECTIVES] = "f1+map"
    max_codes_per_system: int = Field(40, ge=1)
    threads: int | None = Field(None, ge=1)
    #: inference precision; bfloat16 is ~1.7x faster on CPUs with AVX512-BF16 or AMX, and several times slower
    #: where the CPU lacks them (emulated); "auto" picks bfloat16 exactly where the CPU computes it natively
    dtype: Literal[INFERENCE_DTYPES] = "auto"
    #: generation backend: "hf" (transformers ``generate``), "vllm", or "auto": vLLM where it is installed and a CUDA
    #: device is present, unless decoding is ``constrained`` (:func:`icdcoder.models.generation.pick_backend`)
    backend: Literal[BACKENDS] = "auto"
    #: SFT config used by ``fit`` (``configs/sft/*.yaml``)
    sft_config: Path | None = None
    #: the language of the training notes; tuning on notes of another language fills ``by_language``
    language: str = "es"
    by_language: dict[str, FusionOverride] = {}

    def for_language(self, language: str) -> CoderSettings:
        """These settings with the fusion tuned for ``language`` notes, if any."""
        override = self.by_language.get(language)
        return self.model_copy(update=override.model_dump(exclude_none=True)) if override else self

    def with_tuned(self, language: str, tuned: dict) -> CoderSettings:
        """These settings with ``tuned`` fusion values recorded for ``language`` notes."""
        if language == self.language:
            return self.model_copy(update=tuned)
        return self.model_copy(update={"by_language": {**self.by_language, language: FusionOverride(**tuned)}})


def load_coder_settings(path: str | Path) -> CoderSettings:
    return load_config(path, CoderSettings)


@dataclass
class ScoredCode:
    """One code as seen in one segment (or, for the lexicon, the whole note): its signals and evidence."""

    code: str
    system: str
    retrieval: float = 0.0
    surface: bool = False
    llm: float = 0.0
    lexical: float = 0.0
    english: float = 0.0
    ontology: float = 0.0
    procedure: float = 0.0
    concept: float = 0.0
    quantity: float = 0.0
    start: int = -1
    end: int = -1
    #: the span is the note's sentence(s) whose translation the code was found in, not the matched words
    projected: bool = False
    #: no training note carries the code (set when a note's outputs are finished: ``SpanLLMPredictor.finished``)
    untrained: bool = False


@dataclass
class NoteOutputs:
    """Stage-1 output for one note: every scored (segment, code) and dropped answer lines."""

    doc_id: str
    scored: list[ScoredCode] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    segments: int = 0
    llm_segments: int = 0


def signal_weights(settings: CoderSettings, system: str) -> dict[str, float]:
    """Each signal's weight in the fused scores of ``system``'s codes (0 for a signal that never scores them)."""
    return {
        signal: getattr(settings, name) if system in SIGNAL_SYSTEMS.get(signal, CODER_SYSTEMS) else 0.0
        for signal, name in SIGNAL_WEIGHTS.items()
    }


def fuse(signals: dict[str, float], weights: dict[str, float]) -> float:
    """The weighted mean of a code's signals, in [0, 1]."""
    total = sum(weights.values())
    if total <= 0:
        return 0.0
    return sum(weights[name] * signals.get(name, 0.0) for name in SIGNALS) / total


@dataclass
class _CodeSignals:
    """A code's best value of each signal over a note, and the note spans where each signal found it."""

    best: dict[str, float] = field(default_factory=dict)
    spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    #: sentences of the note whose translation a signal found the code in (``ScoredCode.projected``)
    sentences: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    untrained: bool = False

    def add(self, item: ScoredCode) -> None:
        self.untrained = self.untrained or item.untrained
        span = (item.start, item.end) if item.end > item.start >= 0 else None
        for name in SIGNALS:
            value = float(getattr(item, name))
            if value <= 0:
                continue
            spans = (self.sentences if item.projected else self.spans).setdefault(name, [])
            if value > self.best.get(name, 0.0):
                self.best[name] = value
                if span is not None:  # the span of a signal's best value leads its list
                    spans[:] = [span] + [s for s in spans if s != span]
            elif span is not None and span not in spans:
                spans.append(span)

    def evidence(self, weights: dict[str, float]) -> list[Evidence]:
        """Every span of the note's words where a signal that counts found the code (any signal's, when none
        that counts has one); the span of the first signal's best value (in ``SIGNALS`` order) leads."""
        return _signal_evidence(self.spans, weights)

    def sentence_evidence(self, weights: dict[str, float]) -> list[Evidence]:
        """The note's sentences whose translation the signals found the code in (as :meth:`evidence` chooses)."""
        return _signal_evidence(self.sentences, weights)


def _signal_evidence(spans_by_signal: dict[str, list[tuple[int, int]]], weights: dict[str, float]) -> list[Evidence]:
    counted = [name for name in SIGNALS if weights[name] > 0 and spans_by_signal.get(name)]
    names = counted or [name for name in SIGNALS if spans_by_signal.get(name)]
    if not names:
        return []
    return _evidence_list(spans_by_signal[names[0]][0], {span for name in names for span in spans_by_signal[name]})


def _evidence_list(lead: tuple[int, int], spans: set[tuple[int, int]]) -> list[Evidence]:
    """``lead``, then the other spans in text order, leaving out those inside another."""
    kept = [lead]
    for span in sorted(spans - {lead}, key=lambda s: s[0] - s[1]):  # longest first: one inside a kept span comes later
        if not any(k[0] <= span[0] and span[1] <= k[1] for k in kept):
            kept.append(span)
    return [Evidence(pieces=(span,)) for span in [lead, *sorted(kept[1:])]]


def collect_signals(outputs: NoteOutputs) -> dict[tuple[str, str], _CodeSignals]:
    """Each ``(code, system)`` of a note with its best value of every signal (independent of the weights)."""
    signals: dict[tuple[str, str], _CodeSignals] = {}
    for item in outputs.scored:
        signals.setdefault((item.code, item.system), _CodeSignals()).add(item)
    return signals


def aggregate(
    outputs: NoteOutputs, settings: CoderSettings, signals: dict[tuple[str, str], _CodeSignals] | None = None
) -> DocumentPrediction:
    """Rank a note's codes by their fused signals; keep those above their system's threshold.

    ``signals``: the note's :func:`collect_signals`, when the caller aggregates it under many settings.
    """
    signals = collect_signals(outputs) if signals is None else signals
    codes = []
    for system in CODER_SYSTEMS:
        weights = signal_weights(settings, system)
        ranked = sorted(
            ((round(fuse(found.best, weights), SCORE_DIGITS), code, found) for (code, sys_), found in signals.items() if sys_ == system),
            key=lambda x: (-x[0], x[1]),
        )
        for score, code, found in ranked[: settings.max_codes_per_system]:
            if score >= code_threshold(settings, system, found.untrained) and score > 0:
                evidence = found.evidence(weights)
                sentences = [] if evidence else found.sentence_evidence(weights)
                codes.append(CodePrediction(code, system, score, evidence=evidence, sentence_evidence=sentences))
    return DocumentPrediction(doc_id=outputs.doc_id, codes=codes, dropped=dict(outputs.dropped))


def code_threshold(settings: CoderSettings, system: str, untrained: bool) -> float:
    """The score a code of ``system`` needs to be predicted: the untrained codes' own threshold where set."""
    threshold = settings.threshold.get(system, 0.5)
    return settings.untrained_threshold.get(system, threshold) if untrained else threshold


class SpanLLMPredictor(Predictor):
    """Span-level LLM coder with retrieval candidates and score fusion (registry name ``llm``)."""

    name = "llm"

    def __init__(self, settings: CoderSettings | None = None):
        self.settings = settings or CoderSettings()
        self.model = None
        self.tokenizer = None
        self.retriever = None
        self.lexicon = None
        self.english_lexicon = None
        #: code the concept index names -> (training notes whose English text matches it, those among them that carry it)
        self.concept_counts: dict[str, tuple[int, int]] = {}
        #: note language -> the phrases around a measured value that name a code, learned on training notes
        self.quantity_templates: dict = {}
        self._ontology = None
        self._generator = None
        self._specific_codes: dict[tuple[str, str], str] = {}
        self._composer = None
        self._concepts = None

    # ------------------------------------------------------------------ assembly

    def attach(self, model, tokenizer, retriever, ontology=None, lexicon=None, english_lexicon=None) -> SpanLLMPredictor:
        """Use an already loaded model/tokenizer, fitted retriever and (optional) lexicons."""
        self.model, self.tokenizer, self.retriever = model, tokenizer, retriever
        self.lexicon, self.english_lexicon = lexicon, english_lexicon
        self._ontology = ontology
        self._generator = None
        self._specific_codes = {}
        self._composer = None
        self._concepts = None
        return self

    @property
    def ontology(self):
        if self._ontology is None:
            from icdcoder.ontology import load_ontology

            self._ontology = load_ontology()
        return self._ontology

    @property
    def llm_dtype(self) -> str | None:
        """The precision the LLM generates in (None: no LLM loaded)."""
        from icdcoder.models.loading import cpu_inference_dtype

        return cpu_inference_dtype(self.settings.dtype) if self.model is not None else None

    @property
    def procedure_composer(self):
        """The composer of ICD-10-PCS codes, writing each operation at the level the retriever's training notes code it."""
        if self._composer is None:
            from icdcoder.spans.procedures import ProcedureComposer

            counts = {code: n for (code, system), n in self.retriever.trained_note_counts.items() if system == "icd10pcs"}
            self._composer = ProcedureComposer(self.ontology, counts)
        return self._composer

    @property
    def concept_index(self):
        """The ICD-10-CM titles and inclusion terms as content words (loaded from the cache on first use, or built)."""
        if self._concepts is None:
            from icdcoder.spans.concepts import ConceptIndex

            self._concepts = ConceptIndex.load_or_build(self.ontology)
        return self._concepts

    def count_concepts(self, english_notes: Sequence[Document]) -> None:
        """Learn how reliable each matched concept is on training notes in English: per code the concept index
        names, the notes whose text matches it, and how many of those carry it as the coder writes it."""
        counts: dict[str, tuple[int, int]] = {}
        for note in english_notes:
            gold = note.code_set("icd10cm")
            for code in {match.code for match in self.concept_index.matches(note.text)}:
                matched, right = counts.get(code, (0, 0))
                counts[code] = (matched + 1, right + (self.coded_as(code, "icd10cm") in gold))
        self.concept_counts = counts

    def concept_reliability(self, code: str) -> float:
        """How often a match of ``code`` was right on the training notes, smoothed: (right + 1) / (matched + 2).

        A concept the training notes never matched scores 0.5; one that keeps matching notes that do not carry it
        (the "Infectious Diseases Unit" of a hospital -> B99 Other infectious disease) sinks towards 0.
        """
        from icdcoder.baselines.dictionary import smoothed_reliability

        matched, right = self.concept_counts.get(code, (0, 0))
        return smoothed_reliability(right, matched)

    def _resolve(self, code: str):
        return self.ontology.resolve(code, systems=CODER_SYSTEMS)

    # ------------------------------------------------------------------ training

    def fit(self, train: Sequence[Document], dev: Sequence[Document] | None = None) -> FitReport:
        """Fit the retriever and SFT the LLM (settings.sft_config), then tune on ``dev`` if given."""
        import tempfile

        from icdcoder.train.config import SftConfig
        from icdcoder.train.sft import run_sft

        sft = load_config(self.settings.sft_config, SftConfig) if self.settings.sft_config else SftConfig()
        with tempfile.TemporaryDirectory() as scratch:
            sft = sft.model_copy(update={"output_dir": Path(scratch)})
            report = run_sft(sft, documents=list(train), ontology=self.ontology)
            loaded = SpanLLMPredictor.load(scratch)
            self.attach(loaded.model, loaded.tokenizer, loaded.retriever, ontology=self._ontology)
        if dev:
            self.tune(dev)
        return report

    # ------------------------------------------------------------------ inference

    def _generator_for(self):
        if self._generator is None:
            from icdcoder.models.generation import HFGenerator, VLLMGenerator, pick_backend

            settings = self.settings
            if settings.llm_mode == "score":
                from icdcoder.models.scoring import CandidateScorer

                self._generator = CandidateScorer(
                    self.model, self.tokenizer, batch_size=settings.batch_size, max_prompt_tokens=settings.max_prompt_tokens
                )
            elif pick_backend(settings.backend, settings.constrained) == "vllm":
                self._generator = VLLMGenerator.from_model(
                    self.model, self.tokenizer, max_new_tokens=settings.max_new_tokens, max_prompt_tokens=settings.max_prompt_tokens
                )
            else:
                self._generator = HFGenerator(
                    self.model,
                    self.tokenizer,
                    batch_size=settings.batch_size,
                    max_new_tokens=settings.max_new_tokens,
                    max_prompt_tokens=settings.max_prompt_tokens,
                )
        return self._generator

    def _retrieval_scale(self) -> float:
        """The highest fused retrieval score possible, to map scores into [0, 1]."""
        config = self.retriever.config
        weights = config.surface_weight + config.tfidf_weight + (config.embedding_weight if self.retriever.embeddings is not None else 0.0)
        return weights / (config.rrf_k + 1)

    def segment_outputs(
        self,
        documents: Sequence[Document],
        progress: Callable[[int], None] | None = None,
        cache: str | Path | None = None,
    ) -> list[NoteOutputs]:
        """Stage 1 for many notes, a chunk of notes at a time (batches stay full, progress stays live).

        With ``cache`` (a JSONL file), finished notes are appended as they are done
        and skipped on the next call: an interrupted run resumes where it stopped.
        """
        documents = list(documents)
        if self.retriever is None:
            raise InputError("the coder has no retriever (fit or load it first)")
        done = _read_cache(cache) if cache else {}
        todo = [d for d in documents if d.id not in done]
        if progress and len(todo) < len(documents):
            progress(len(documents) - len(todo))
        for start in range(0, len(todo), NOTES_PER_CHUNK):
            chunk = todo[start : start + NOTES_PER_CHUNK]
            fresh = self._chunk_outputs(chunk)
            done.update((o.doc_id, o) for o in fresh)
            if cache:
                _append_cache(cache, fresh)
            if progress:
                progress(len(chunk))
        return [self.finished(done[d.id]) for d in documents]

    def finished(self, note: NoteOutputs) -> NoteOutputs:
        """``note``'s stage-1 outputs with untrained, non-specific diagnosis codes renamed (see
        ``CoderSettings.specify_untrained``; a renamed code's signals merge with those of the code it now names) and
        the codes no training note carries marked ``untrained`` (``CoderSettings.untrained_threshold``)."""
        trained = self.retriever.trained_codes
        scored = []
        for item in note.scored:
            code = self.coded_as(item.code, item.system)
            untrained = (code, item.system) not in trained
            unchanged = code == item.code and untrained == item.untrained
            scored.append(item if unchanged else replace(item, code=code, untrained=untrained))
        return replace(note, scored=scored)

    def coded_as(self, code: str, system: str) -> str:
        """The code a note's scored code is written as: :meth:`specific_code` under ``specify_untrained``, else itself."""
        return self.specific_code(code, system) if self.settings.specify_untrained else code

    def specific_code(self, code: str, system: str) -> str:
        """The code ``specify_untrained`` names ``code`` by: its default specific code when no training note carries it."""
        key = (code, system)
        if key not in self._specific_codes:
            untrained = key not in self.retriever.trained_codes
            self._specific_codes[key] = self.ontology.default_specific_code(code, system) if untrained else code
        return self._specific_codes[key]

    def _chunk_outputs(self, documents: Sequence[Document]) -> list[NoteOutputs]:
        """Retrieval for every segment of the notes; the LLM for segments past the cheap filter
        (or for each window of ``llm_window_words``)."""
        from icdcoder.spans import note_windows

        settings = self.settings
        scale = self._retrieval_scale()
        llm_on = settings.use_llm and self.model is not None
        outputs, jobs = [], []  # jobs: (note index, segment text, segment start, candidates)
        for note_index, document in enumerate(documents):
            retrieved = self._retrieve_segments(document.text, k=max(settings.retrieval_k, settings.candidates_k))
            note = NoteOutputs(doc_id=document.id, segments=len(retrieved))
            note.scored.extend(self._lexical_items(document))
            for segment, text, found in retrieved:
                note.scored.extend(self._retrieval_item(c, text, segment.start, scale) for c in found)
                top = found[0].score / scale if found else 0.0
                if llm_on and not settings.llm_window_words and top >= settings.min_retrieval_score:
                    jobs.append((note_index, text, segment.start, [c.as_candidate() for c in found[: settings.candidates_k]]))
                    note.llm_segments += 1
            if llm_on and settings.llm_window_words:
                windows = note_windows(document.text, max_words=settings.llm_window_words)
                jobs.extend((note_index, window.text(document.text), window.start, []) for window in windows)
                note.llm_segments += len(windows)
            if settings.retrieve_on_translation and document.translation and document.language != "en":
                note.scored.extend(self._translation_retrieval_items(document.translation))
            outputs.append(note)
        if jobs:
            self._run_llm(jobs, outputs)
        return outputs

    def _retrieve_segments(self, text: str, k: int) -> list[tuple]:
        """``(segment, segment text, candidates of the coded systems)`` for each segment of ``text``."""
        from icdcoder.spans import segment_note

        segments = segment_note(text, max_words=self.settings.segment_max_words)
        texts = [segment.text(text) for segment in segments]
        retrieved = self.retriever.retrieve_many(texts, k=k) if texts else []
        return [
            (segment, segment_text, [c for c in found if c.system in CODER_SYSTEMS])
            for segment, segment_text, found in zip(segments, texts, retrieved)
        ]

    def _translation_retrieval_items(self, translation: str) -> list[ScoredCode]:
        """Retrieval on the segments of a note's English translation: the ontology descriptions the
        retriever searches are English, so codes training never showed are found there more often.
        No evidence offsets: the words are not in the note."""
        scale = self._retrieval_scale()
        return [
            ScoredCode(c.code, c.system, retrieval=min(c.score / scale, 1.0))
            for _, _, found in self._retrieve_segments(translation, k=self.settings.retrieval_k)
            for c in found
        ]

    def _lexical_items(self, document: Document) -> list[ScoredCode]:
        """The lexicons' codes for a whole note: the note-language lexicon on its text, the English lexicon,
        the composed procedures and the matched concepts on its English text (the note itself, or its translation),
        and the codes measured values name in the note (templates of its language).

        What is found in a translation has as evidence the note's sentences that it translates (``projected``).
        """
        items = []
        if self.lexicon is not None:
            for hit in self.lexicon.code_hits(document.text):
                items.extend(_hit_items(hit, "lexical"))
        english = document.text if document.language == "en" else document.translation
        if english:
            english_items = self._english_items(english)
            items.extend(english_items if english is document.text else _projected(english_items, document))
        items.extend(self._quantity_items(document))
        return [item for item in items if item.system in CODER_SYSTEMS]

    def _english_items(self, english: str) -> list[ScoredCode]:
        """The English lexicon's hits (trained forms as ``english``, ontology forms as ``ontology``), the composed
        procedures and the matched concepts of an English text, with offsets into it."""
        items = []
        if self.english_lexicon is not None:
            for signal, trained in (("english", True), ("ontology", False)):
                for hit in self.english_lexicon.code_hits(english, trained=trained):
                    items.extend(_hit_items(hit, signal))
        items.extend(self._procedure_items(english))
        items.extend(self._concept_items(english))
        return items

    def _procedure_items(self, english: str) -> list[ScoredCode]:
        """The ICD-10-PCS codes composed on an English text; evidence is the sentence."""
        return [
            ScoredCode(composed.code, "icd10pcs", procedure=1.0, start=composed.start, end=composed.end)
            for composed in self.procedure_composer.compose(english)
        ]

    def _concept_items(self, english: str) -> list[ScoredCode]:
        """The ICD-10-CM codes whose content words a sentence of an English text holds, each scoring its
        reliability on the training notes; evidence is the sentence."""
        return [
            ScoredCode(match.code, "icd10cm", concept=self.concept_reliability(match.code), start=match.start, end=match.end)
            for match in self.concept_index.matches(english)
        ]

    def _quantity_items(self, document: Document) -> list[ScoredCode]:
        """The ICD-10-CM codes named by a measured value in the note, through the templates of its language; evidence
        is the phrase around the value."""
        templates = self.quantity_templates.get(document.language)
        if templates is None:
            return []
        return [
            ScoredCode(match.code, "icd10cm", quantity=match.reliability, start=match.start, end=match.end)
            for match in templates.matches(document.text)
        ]

    def _retrieval_item(self, candidate, text: str, offset: int, scale: float) -> ScoredCode:
        """A retrieval-only scored code, with the training surface form located in the segment if present."""
        item = ScoredCode(candidate.code, candidate.system, retrieval=min(candidate.score / scale, 1.0), surface="surface" in candidate.source)
        span = self._surface_span(candidate.code, candidate.system, text)
        if span is not None:
            item.start, item.end = offset + span[0], offset + span[1]
        return item

    def _surface_span(self, code: str, system: str, text: str) -> tuple[int, int] | None:
        """The longest training surface form (or short description) of ``code`` found in ``text``."""
        retriever = self.retriever
        code_index = retriever.code_index.get((code, system))
        if code_index is None:
            return None
        forms = [retriever.display[form] for form in retriever.forms_by_code.get(code_index, ()) if form in retriever.display]
        best = None
        for form in sorted(forms, key=len, reverse=True):
            span = find_quote(form, text)
            if span is not None:
                best = span
                break
        return best

    def _run_llm(self, jobs, outputs: list[NoteOutputs]) -> None:
        """The LLM on every job (``CoderSettings.llm_mode``); its signals join the notes' outputs."""
        if self.settings.llm_mode == "score":
            self._score_candidates(jobs, outputs)
        else:
            self._generate_answers(jobs, outputs)

    def _score_candidates(self, jobs, outputs: list[NoteOutputs]) -> None:
        """Each shown candidate's ``llm`` signal: the probability that the answer opens with its line."""
        import math

        prompts = [build_prompt(text, candidates) for _, text, _, candidates in jobs]
        openings = [[answer_opening(candidate.code) for candidate in candidates] for *_, candidates in jobs]
        scores = self._generator_for().score(prompts, openings)
        for (note_index, text, offset, candidates), logprobs in zip(jobs, scores):
            for candidate, logprob in zip(candidates, logprobs):
                resolved = self._resolve(candidate.code)
                if resolved is None:  # a training code the ontology does not hold: retrieval alone scores it
                    continue
                code, system = resolved
                start, end = self._surface_span(code, system, text) or (0, len(text))
                outputs[note_index].scored.append(
                    ScoredCode(code, system, llm=math.exp(logprob), start=offset + start, end=offset + end)
                )

    def _generate_answers(self, jobs, outputs: list[NoteOutputs]) -> None:
        """Generate for every job in batches and merge the parsed lines into the notes' outputs."""
        generator = self._generator_for()
        prompts = [build_prompt(text, candidates) for _, text, _, candidates in jobs]
        factory = None
        if self.settings.constrained:
            from icdcoder.models.constrained import constraint_factory

            codes = [code for code, system in self.retriever.codes if system in CODER_SYSTEMS]
            factory = constraint_factory(self.tokenizer, codes, {p: job[1] for p, job in zip(prompts, jobs)})
        generations = generator.generate(prompts, logits_processor_factory=factory)
        for (note_index, text, offset, _candidates), generation in zip(jobs, generations):
            note = outputs[note_index]
            parsed = parse_answer(generation.text, text, self._resolve)
            note.dropped.update(parsed.dropped)
            confidence = _confidence_by_code(generation, self._resolve)
            for item in parsed.items:
                note.scored.append(
                    ScoredCode(item.code, item.system, llm=confidence.get(item.code, 0.0), start=offset + item.start, end=offset + item.end)
                )

    def predict(self, documents: Sequence[Document]) -> list[DocumentPrediction]:
        """Code every note; a progress bar on stderr counts notes."""
        documents = list(documents)
        if self.settings.threads and (self.model is not None or self.retriever.embeddings is not None):
            import torch  # only the LLM and the retriever's embeddings run on torch: importing it costs seconds

            torch.set_num_threads(self.settings.threads)
        started = time.time()
        with progress_bar() as bar:
            task = bar.add_task("coding notes", total=len(documents))
            outputs = self.segment_outputs(documents, progress=lambda n: bar.advance(task, n))
        predictions = [aggregate(note, self.settings.for_language(doc.language)) for note, doc in zip(outputs, documents)]
        log.info(
            "coded %d notes (%d segments, %d to the LLM) in %.1f s",
            len(documents), sum(o.segments for o in outputs), sum(o.llm_segments for o in outputs), time.time() - started,
        )
        return predictions

    # ------------------------------------------------------------------ tuning

    def tune(self, dev: Sequence[Document], outputs: list[NoteOutputs] | None = None, objective: str | None = None) -> dict:
        """Grid-search fusion weights and per-system thresholds on dev (micro-F1 + MAP of D and P, or what
        ``objective`` names; default: the settings' ``tuning_objective``).

        The result, the objective with it, is kept for the language of the dev notes (see ``CoderSettings.by_language``).
        """
        dev = list(dev)
        languages = {doc.language for doc in dev}
        if len(languages) != 1:
            raise InputError(f"tune on notes of one language at a time (got {', '.join(sorted(languages))})")
        language = languages.pop()
        from icdcoder.infer.tuning import tune_fusion

        outputs = outputs if outputs is not None else self.segment_outputs(dev)
        settings = self.settings.for_language(language)
        if objective is not None:
            settings = settings.model_copy(update={"tuning_objective": objective})
        result = tune_fusion(outputs, dev, settings)
        self.settings = self.settings.with_tuned(language, result["best_settings"])
        return result

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path, adapter_saver: Callable | None = None) -> None:
        """Write ``model/`` (adapter + tokenizer), ``retriever/`` and ``coder.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.model is not None:
            if adapter_saver is not None:
                adapter_saver(self.model, directory / "model")
            else:
                self.model.save_pretrained(directory / "model")
                self.tokenizer.save_pretrained(directory / "model")
        if self.retriever is not None:
            self.retriever.save(directory / "retriever")
        self.save_lexicons(directory)
        self.write_settings(directory)

    def save_lexicons(self, directory: str | Path) -> None:
        """Write ``lexicon/``, ``lexicon_en/``, ``concepts.json`` and ``quantities.json``; what the coder lacks is
        removed from the folder."""
        import shutil

        for name, lexicon in ((LEXICON_DIR, self.lexicon), (ENGLISH_LEXICON_DIR, self.english_lexicon)):
            if lexicon is not None:
                save_lexicon(lexicon, Path(directory) / name)
            elif (Path(directory) / name).is_dir():
                shutil.rmtree(Path(directory) / name)
        concepts = {code: list(counts) for code, counts in sorted(self.concept_counts.items())}
        _write_json_or_remove(Path(directory) / CONCEPTS_FILE, concepts)
        quantities = {language: templates.to_json() for language, templates in sorted(self.quantity_templates.items())}
        _write_json_or_remove(Path(directory) / QUANTITIES_FILE, quantities)

    def write_settings(self, directory: str | Path, extra: dict | None = None) -> None:
        """Write ``coder.json``: the settings, keeping the file's other records; ``extra`` adds or replaces some."""
        path = Path(directory) / CODER_FILE
        previous = json.loads(read_text(path)) if path.is_file() else {}
        record = {**previous, **(extra or {}), "settings": json.loads(self.settings.model_dump_json())}
        with atomic_write(path) as handle:
            handle.write(readable_json(record) + "\n")

    @classmethod
    def load(
        cls, directory: str | Path, adapter: str | Path | None = None, check_files: bool = True, **overrides: object
    ) -> SpanLLMPredictor:
        """A saved coder; ``overrides`` replace its saved settings, a None keeping the saved value (``use_llm=True`` to
        study an adapter the shipped settings switch off, ``dtype``, ``llm_mode``). ``adapter``: the LLM of this folder
        (a saved model or adapter, e.g. another coder's ``model/``) in place of the coder's own, to study an adapter
        under this coder's retrieval, lexicons and tuned fusion. ``check_files``: fail on a folder that lacks a file its
        settings or its ``files`` record name (:func:`check_coder_files`); off only to rebuild those files."""
        from icdcoder.spans import CandidateRetriever

        directory = Path(directory)
        settings_path = directory / CODER_FILE
        if not settings_path.is_file():
            raise InputError(f"not a coder folder (no {CODER_FILE})", path=directory)
        try:
            record = json.loads(read_text(settings_path))
            settings = CoderSettings.model_validate(record["settings"])
        except ValidationError as err:
            field, message = first_invalid_field(err)
            raise InputError(f"field 'settings.{field}': {message}", path=settings_path) from None
        except (json.JSONDecodeError, KeyError, ValueError) as err:
            raise InputError(f"malformed coder settings ({str(err).splitlines()[0]})", path=settings_path) from None
        overrides = {name: value for name, value in overrides.items() if value is not None}
        if overrides:
            try:
                settings = CoderSettings.model_validate({**settings.model_dump(), **overrides})
            except ValidationError as err:
                field, message = first_invalid_field(err)
                raise InputError(f"{field}: {message}") from None
        if check_files:
            check_coder_files(directory, record, settings)
        coder = cls(settings)
        model, tokenizer = (None, None)
        model_dir = Path(adapter) if adapter is not None else directory / "model"
        if adapter is not None and not model_dir.is_dir():
            raise InputError("no such adapter folder", path=model_dir)
        if model_dir.is_dir() and settings.use_llm:
            model, tokenizer = load_for_inference(model_dir, settings.dtype)
        retriever = CandidateRetriever.load(directory / "retriever")
        lexicons = [load_lexicon(directory / name) if (directory / name).is_dir() else None for name in (LEXICON_DIR, ENGLISH_LEXICON_DIR)]
        coder.attach(model, tokenizer, retriever, lexicon=lexicons[0], english_lexicon=lexicons[1])
        coder.concept_counts = load_concept_counts(directory / CONCEPTS_FILE)
        coder.quantity_templates = load_quantity_templates(directory / QUANTITIES_FILE)
        return coder


def check_coder_files(directory: Path, record: dict, settings: CoderSettings) -> None:
    """Raise on a coder folder that lacks a file it needs: the file of each signal its settings weigh, for any note
    language (:data:`SIGNAL_FILES`), and each path its ``coder.json`` lists under ``files`` (relative to the folder).

    A coder missing them would not fail, it would code with fewer signals (an install without the default coder's
    lexicons found 1 code of the sample note's 10)."""
    settings_path = directory / CODER_FILE
    named = record.get("files", [])
    if not isinstance(named, list) or not all(isinstance(name, str) and name for name in named):
        raise InputError("field 'files': expected a list of paths inside the coder folder", path=settings_path)
    needed: dict[str, str] = {}
    for fusion in (settings, *settings.by_language.values()):
        for weight, name in SIGNAL_FILES.items():
            value = getattr(fusion, weight)
            if value:
                needed.setdefault(name, f"its settings weigh the signal it feeds ({weight} {value})")
    for name in named:
        needed.setdefault(name, f"{CODER_FILE} lists it under 'files'")
    for name, reason in needed.items():
        if not (directory / name).is_file():
            raise InputError(f"coder file missing: {reason}; the coder folder is incomplete", path=directory / name)


def _write_json_or_remove(path: Path, record: dict) -> None:
    """``record`` as readable JSON at ``path``; an empty record removes the file (the coder has nothing to save)."""
    if not record:
        path.unlink(missing_ok=True)
        return
    with atomic_write(path) as handle:
        handle.write(readable_json(record) + "\n")


def _hit_items(hit, signal: str) -> list[ScoredCode]:
    """A lexicon hit as scored codes, one per match."""
    return [
        ScoredCode(hit.code, hit.system, **{signal: hit.score}, start=match.start, end=match.end)
        for match in sorted(hit.evidence, key=lambda e: e.start)
    ]


def _projected(items: list[ScoredCode], document: Document) -> list[ScoredCode]:
    """Items found in ``document.translation``, their spans carried over to the note's sentences they translate
    (sentence alignment, :mod:`icdcoder.data.align`); an item on an unaligned line keeps no span."""
    from icdcoder.data.align import align_document

    aligned = align_document(document.text, document.translation.split("\n"))
    projected = []
    for item in items:
        span = aligned.source_span_of_target(item.start, item.end) if item.end > item.start >= 0 else None
        start, end = span if span is not None else (-1, -1)
        projected.append(replace(item, start=start, end=end, projected=span is not None))
    return projected


def build_lexicon(train: Sequence[Document], ontology=None):
    """A surface-form index for the coder, with the ``dictionary`` baseline's default settings.

    With ``ontology`` (English notes), its descriptions and inclusion terms are added,
    and the short phrases inside the training evidence sentences: CodiEsp's English
    evidence is whole projected sentences, too long to be forms themselves.
    """
    from icdcoder.baselines.dictionary import DictionaryConfig, SurfaceFormIndex

    if ontology is None:
        return SurfaceFormIndex.build(train, config=DictionaryConfig())
    config = DictionaryConfig(ontology_systems=list(CODER_SYSTEMS), evidence_phrases=3)
    return SurfaceFormIndex.build(train, ontology=ontology, config=config)


def save_lexicon(lexicon, directory: str | Path) -> None:
    """The index as gzipped JSON (ontology terms make the English one ~15 MB uncompressed)."""
    with atomic_write(Path(directory) / LEXICON_FILE, mode="wb") as handle:
        handle.write(gzip.compress(json.dumps(lexicon.to_json(), ensure_ascii=False).encode("utf-8"), mtime=0))


def load_lexicon(directory: str | Path):
    from icdcoder.baselines.dictionary import SurfaceFormIndex

    path = Path(directory) / LEXICON_FILE
    if not path.is_file():
        raise InputError("lexicon file missing", path=path)
    try:
        data = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"unreadable lexicon ({type(err).__name__}: {str(err).splitlines()[0]})", path=path) from None
    return SurfaceFormIndex.from_json(data, path)


def load_concept_counts(path: Path) -> dict[str, tuple[int, int]]:
    """``concepts.json`` (code -> [notes matched, notes right]); none when the coder folder has no such file."""
    if not path.is_file():
        return {}
    try:
        record = json.loads(read_text(path))
        counts = {str(code): (int(matched), int(right)) for code, (matched, right) in record.items()}
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as err:
        reason = str(err).splitlines()[0]
        raise InputError(f"malformed concept counts, expected code -> [matched, right] ({reason})", path=path) from None
    if any(not 0 <= right <= matched for matched, right in counts.values()):
        raise InputError("malformed concept counts: each needs 0 <= right <= matched", path=path)
    return counts


def load_quantity_templates(path: Path) -> dict:
    """``quantities.json`` (note language -> :class:`QuantityTemplates` record); none when the file is absent."""
    from icdcoder.spans.quantities import QuantityTemplates

    if not path.is_file():
        return {}
    try:
        record = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(f"malformed value templates ({str(err).splitlines()[0]})", path=path) from None
    if not isinstance(record, dict):
        raise InputError("malformed value templates, expected language -> templates", path=path)
    return {str(language): QuantityTemplates.from_json(templates, str(path)) for language, templates in record.items()}


def load_for_inference(model_dir: str | Path, dtype: str = "auto"):
    """Load a saved model or adapter for generation: LoRA merged into the base, cast to ``dtype``
    (``"auto"``: see :func:`icdcoder.models.loading.cpu_inference_dtype`)."""
    import torch

    from icdcoder.models.loading import cpu_inference_dtype, load_causal_lm

    model, tokenizer = load_causal_lm(str(model_dir))
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model.to(getattr(torch, cpu_inference_dtype(dtype))).eval(), tokenizer


def _confidence_by_code(generation, resolve) -> dict[str, float]:
    """Confidence of each answer line, keyed by the canonical code it names (first line wins)."""
    result: dict[str, float] = {}
    for line, confidence in zip(generation.text.splitlines(), generation.line_confidences):
        head = line.split("|", 1)[0].strip()
        if not head:
            continue
        resolved = resolve(head)
        if resolved is not None:
            result.setdefault(resolved[0], confidence)
    return result


def _read_cache(path: str | Path) -> dict[str, NoteOutputs]:
    """Notes already coded in a stage-1 cache; a torn last line (interrupted write) is ignored."""
    path = Path(path)
    if not path.is_file():
        return {}
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return {o.doc_id: o for o in outputs_from_json(records)}


def _append_cache(path: str | Path, outputs: list[NoteOutputs]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for record in outputs_to_json(outputs):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def outputs_to_json(outputs: list[NoteOutputs]) -> list[dict]:
    """Stage-1 outputs as JSON records (cached to disk to re-tune without the LLM)."""
    return [{**asdict(o), "scored": [asdict(s) for s in o.scored], "dropped": dict(o.dropped)} for o in outputs]


def outputs_from_json(records: list[dict]) -> list[NoteOutputs]:
    return [
        NoteOutputs(
            doc_id=r["doc_id"], scored=[ScoredCode(**s) for s in r["scored"]], dropped=Counter(r["dropped"]),
            segments=r["segments"], llm_segments=r["llm_segments"],
        )
        for r in records
    ]
