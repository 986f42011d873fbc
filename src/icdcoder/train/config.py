"""Settings of one SFT run (``configs/sft/*.yaml``), validated by pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from icdcoder.config import StrictModel


class LoraSettings(StrictModel):
    """LoRA adapter shape; ``enabled: false`` means a full fine-tune."""

    enabled: bool = True
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    #: adapt only these decoder layers (``null``: all). On CPU, adapting only the top layers also
    #: stops back-propagation there, roughly halving the cost of a step.
    layers_to_transform: list[int] | None = None

    def to_peft(self):
        """The peft ``LoraConfig`` for these settings, or None for a full fine-tune."""
        if not self.enabled:
            return None
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            layers_to_transform=self.layers_to_transform,
            task_type="CAUSAL_LM",
        )


class DataSettings(StrictModel):
    """Which examples to build from the corpus, and how the prompts look."""

    #: a CodiEsp folder (official layout); ``null`` only for callers that pass documents directly
    data_dir: Path | None = None
    split: str = "train"
    #: the training notes as canonical JSONL (``icdcoder data prepare``/``data export``, or your own: MIMIC, MDACE,
    #: any notes coded in ICD-10-CM/PCS) instead of ``data_dir``/``split``; it wins where both are set
    documents_jsonl: Path | None = None
    #: the notes' language (JSONL: for records that name none)
    lang: Literal["es", "en"] = "es"
    #: span examples (one per evidence-bearing segment, plus sampled NONE segments)
    spans: bool = True
    span_max_words: int = Field(40, ge=5)
    span_context_words: int = Field(0, ge=0)
    negative_ratio: float = Field(0.3, ge=0.0)
    #: whole-note examples, as a share of the span examples
    document_ratio: float = Field(0.0, ge=0.0)
    document_max_words: int = Field(300, ge=20)
    mix_schedule: Literal["shuffled", "documents_first", "spans_first"] = "shuffled"
    #: code-centric expansion from the ontology (descriptions, inclusion terms, relatives)
    expansion: bool = False
    expansion_per_code_cap: int = Field(4, ge=1)
    expansion_label_space: Literal["chapters_in_data", "all", "seen"] = "seen"
    #: expansion examples kept, as a share of all span examples (``null``: every one); on a small step
    #: budget a large label space would otherwise leave almost no real evidence spans
    expansion_share: float | None = Field(None, gt=0.0, lt=1.0)
    #: candidate codes shown in each prompt (0: no candidates, no retriever)
    candidates_k: int = Field(5, ge=0)
    #: probability that the gold codes are put among the candidates; otherwise they are taken out,
    #: so the model also learns to write codes it was not offered
    gold_in_candidates: float = Field(0.8, ge=0.0, le=1.0)
    #: gold codes without evidence offsets (MIMIC-IV's) get evidence located from their ICD terms, so that they make
    #: examples (:mod:`icdcoder.spans.silver`; English notes): the notes' words holding at least ``silver_min_share`` of
    #: a term. the ``silver_evidence`` experiment grades it against CodiEsp's evidence
    silver_evidence: bool = False
    silver_min_share: float = Field(0.5, gt=0.0, le=1.0)
    #: cap on the number of training examples after mixing (``null``: all)
    max_examples: int | None = Field(None, ge=1)
    #: cap on the number of documents read (smoke runs)
    max_documents: int | None = Field(None, ge=1)
    #: give the saved coder its lexicons (training surface forms; English: ontology terms and evidence phrases)
    lexicons: bool = True


class SftConfig(StrictModel):
    """One supervised fine-tuning run: backbone, adapter, optimisation, data, output."""

    backbone: str = "smollm2-135m"
    lora: LoraSettings = LoraSettings()
    epochs: float = Field(1.0, gt=0)
    #: overrides ``epochs`` when > 0
    max_steps: int = -1
    learning_rate: float = Field(2e-4, gt=0)
    per_device_batch_size: int = Field(16, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_length: int = Field(256, ge=16)
    packing: bool = False
    warmup_ratio: float = Field(0.03, ge=0.0, le=1.0)
    #: recompute activations in the backward pass (less memory, ~30% more compute)
    gradient_checkpointing: bool = False
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    #: stop training (and save) after this many minutes of wall time (CPU budgets); ``null``: no cap
    max_wall_minutes: float | None = Field(None, gt=0)
    #: "auto": bf16 when CUDA supports it, else fp32
    bf16: bool | Literal["auto"] = "auto"
    seed: int = 0
    save_steps: int = Field(200, ge=1)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(10, ge=1)
    #: torch CPU threads (``null``: leave torch's default)
    threads: int | None = Field(None, ge=1)
    #: save the adapter in half precision (smaller shipped model)
    save_half_precision: bool = True
    data: DataSettings = DataSettings()
    output_dir: Path = Path("runs/sft")
    #: inference settings written to ``coder.json`` (a ``configs/coder/*.yaml`` file; ``null``: defaults)
    coder_config: Path | None = None
