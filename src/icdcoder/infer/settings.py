"""The coder's settings (``configs/coder/*.yaml``, and ``coder.json`` of a coder folder): how notes are cut and read,
and the fusion's weights and thresholds, tuned on dev.

Each signal's weight field comes from the signal registry (:mod:`icdcoder.infer.signals`): a new signal brings its
own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, ValidationInfo, create_model, field_validator

from icdcoder.config import StrictModel, load_config
from icdcoder.evaluate.thresholds import Objective
from icdcoder.infer.signals import SIGNAL_WEIGHTS, SPECS
from icdcoder.models.generation import Backend
from icdcoder.ontology.labels import CoderSystem
from icdcoder.predictor import RANKING_DEPTH
from icdcoder.spans.phrases import PHRASE_CONTEXT_CHARS

#: the inference precisions a coder accepts ("auto": see :func:`icdcoder.models.loading.cpu_inference_dtype`)
InferenceDtype = Literal["auto", "float32", "bfloat16"]
INFERENCE_DTYPES: tuple[str, ...] = get_args(InferenceDtype)
#: how the LLM's reading of a segment becomes its ``llm`` signal (``CoderSettings.llm_mode``)
LlmMode = Literal["generate", "score"]
LLM_MODES: tuple[str, ...] = get_args(LlmMode)
#: how a code's signals become its score (``CoderSettings.fusion``)
Fusion = Literal["mean", "trees"]
#: what ``predict tune`` can maximise (``CoderSettings.tuning_objective``)
TUNING_OBJECTIVES: tuple[str, ...] = get_args(Objective)

# the weight fields come from the signal registry: typed Any, as they can be keyword arguments of create_model
_WEIGHT_FIELDS: dict[str, Any] = {
    spec.weight_field: (float, Field(spec.default_weight, ge=0.0, description=spec.description)) for spec in SPECS
}
_OVERRIDE_FIELDS: dict[str, Any] = {spec.weight_field: (float | None, Field(None, ge=0.0)) for spec in SPECS}

#: each signal's weight in the fused scores (the weighted mean of a code's signals)
SignalWeights = create_model("SignalWeights", __base__=StrictModel, **_WEIGHT_FIELDS)

#: fusion weights and thresholds tuned for the notes of one language; unset fields keep the defaults
FusionOverride = create_model(
    "FusionOverride",
    __base__=StrictModel,
    threshold=(dict[str, float] | None, None),
    untrained_threshold=(dict[str, float] | None, None),
    tuning_objective=(Objective | None, None),
    fusion=(Fusion | None, None),
    **_OVERRIDE_FIELDS,
)


class CoderSettings(SignalWeights):
    """Inference settings; the weights (one field per signal, see :data:`SignalWeights`) and thresholds are tuned on
    dev."""

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
    llm_mode: LlmMode = "generate"

    @field_validator("llm_mode")
    @classmethod
    def _scoring_needs_candidates(cls, mode: str, info: ValidationInfo) -> str:
        if mode == "score" and (info.data.get("candidates_k") == 0 or info.data.get("llm_window_words")):
            raise ValueError(
                "'score' scores the candidates shown with each segment: it needs candidates_k > 0 and no llm_window_words"
            )
        return mode

    #: name an ICD-10-CM code that no training note carries and that is not specific (a category title
    #: matched, say) by its default specific code (:meth:`Ontology.default_specific_code`: "N00" -> "N00.9");
    #: codes the training notes carry keep the level their annotators used
    specify_untrained: bool = True
    constrained: bool = False
    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(48, ge=4)
    max_prompt_tokens: int = Field(384, ge=32)
    #: also retrieve candidates for the segments of a note's English translation (when it has one)
    retrieve_on_translation: bool = True
    #: evidence spans grow by whole words of their phrase, at most this many characters on each side (0: the matched
    #: words only; :meth:`icdcoder.spans.phrases.PhraseCompleter.complete`)
    phrase_context_chars: int = Field(PHRASE_CONTEXT_CHARS, ge=0, le=40)
    threshold: dict[str, float] = {"icd10cm": 0.3, "icd10pcs": 0.3}
    #: per system, the threshold of the codes no training note carries (their scores come only from the ontology,
    #: concept and value signals and sit lower); a system not named here uses ``threshold`` for every code
    untrained_threshold: dict[str, float] = {}
    #: the systems whose untrained codes tuning gives a threshold of their own; on CodiEsp dev, cross-fitted, that
    #: paid for diagnoses and not for procedures
    untrained_threshold_systems: list[CoderSystem] = ["icd10cm"]
    #: "mean": a code's score is the weighted mean of its signals; "trees": the probability of the coder folder's
    #: gradient-boosted trees (``fusion_trees.json``, :mod:`icdcoder.infer.trees`; fitted by ``predict fit-trees``),
    #: whose thresholds ``predict tune`` tunes (the weights then only feed the trees' ``fused`` feature as saved with
    #: them, and choose which signals' spans are evidence)
    fusion: Fusion = "mean"
    #: what ``predict tune``'s weight grid maximises (per language, as the weights): "f1+map" micro-F1 of the decisions +
    #: MAP of the ranking (CodiEsp ranks D and P by MAP; the untrained codes' threshold adds macro-F1), or "f1" micro-F1
    #: alone; thresholds always maximise micro-F1. Recorded so that re-tuning keeps it
    tuning_objective: Objective = "f1+map"
    #: codes per system in a note's ranking: its decisions, then its candidates
    max_codes_per_system: int = Field(RANKING_DEPTH, ge=1)
    threads: int | None = Field(None, ge=1)
    #: inference precision; bfloat16 is faster on CPUs with AVX512-BF16 or AMX, and several times slower
    #: where the CPU lacks them (emulated); "auto" picks bfloat16 exactly where the CPU computes it natively
    dtype: InferenceDtype = "auto"
    #: generation backend: "hf" (transformers ``generate``), "vllm", or "auto": vLLM where it is installed and a CUDA
    #: device is present, unless decoding is ``constrained`` (:func:`icdcoder.models.generation.pick_backend`)
    backend: Backend = "auto"
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
        """These settings with ``tuned`` fusion values recorded for ``language`` notes (another language's values that
        ``tuned`` leaves out are kept: tuning the trees' thresholds keeps its weights)."""
        if language == self.language:
            return self.model_copy(update=tuned)
        kept = self.by_language[language].model_dump(exclude_none=True) if language in self.by_language else {}
        return self.model_copy(
            update={"by_language": {**self.by_language, language: FusionOverride(**{**kept, **tuned})}}
        )

    def fused_by_trees(self, language: str | None = None) -> CoderSettings:
        """These settings with notes of ``language`` (default: the training language) fused by trees and every other
        language's kept at the fusion it was tuned with (its weighted mean unless it names another): each language's
        trees are fitted apart (``predict fit-trees --lang``)."""
        if language is not None and language != self.language:
            return self.with_tuned(language, {"fusion": "trees"})
        others = {
            language: override.model_copy(update={"fusion": getattr(override, "fusion", None) or "mean"})
            for language, override in self.by_language.items()
        }
        return self.model_copy(update={"fusion": "trees", "by_language": others})

    def weight(self, spec_name: str) -> float:
        """The weight of a fused value (``SignalSpec.name``)."""
        return getattr(self, SIGNAL_WEIGHTS[spec_name])


def load_coder_settings(path: str | Path) -> CoderSettings:
    return load_config(path, CoderSettings)
