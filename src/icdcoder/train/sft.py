"""Supervised fine-tuning with TRL's ``SFTTrainer`` (LoRA via peft), loss on the completion only.

The output folder is a complete coder folder for :class:`icdcoder.infer.coder.SpanLLMPredictor`:
``model/`` (adapter + tokenizer, loadable by ``load_causal_lm`` anywhere), ``retriever/``,
``coder.json``, plus ``run_meta.json`` (tokens, wall time, memory, example counts, config)
and ``checkpoints/`` for ``--resume``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from icdcoder.errors import InputError
from icdcoder.io import atomic_write
from icdcoder.predictor import FitReport, peak_rss_mb
from icdcoder.train.config import SftConfig

log = logging.getLogger(__name__)


def use_bf16(setting: bool | str) -> bool:
    """Resolve the ``bf16`` setting: ``"auto"`` means bf16 exactly where the hardware computes it natively:
    a CUDA device that supports it, or (without CUDA) a CPU with AVX-512 BF16 or AMX instructions. On other
    CPUs bf16 autocast is emulated and several times slower than fp32 (``benchmarks/sft_throughput.py``)."""
    import torch

    if setting == "auto":
        if torch.cuda.is_available():
            return bool(torch.cuda.is_bf16_supported())
        from icdcoder.models.loading import cpu_has_native_bf16

        return cpu_has_native_bf16()
    return bool(setting)


def common_trainer_arguments(config, checkpoint_dir: Path) -> dict:
    """The ``TrainingArguments`` SFT and GRPO share, from the fields both configs have."""
    import torch

    return {
        "output_dir": str(checkpoint_dir),
        "learning_rate": config.learning_rate,
        "per_device_train_batch_size": config.per_device_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "bf16": use_bf16(config.bf16),
        "seed": config.seed,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "logging_steps": config.logging_steps,
        "report_to": "none",
        "use_cpu": not torch.cuda.is_available(),
        "dataloader_num_workers": 0,
    }


def _trainer_args(config: SftConfig, checkpoint_dir: Path):
    from trl import SFTConfig as TrlSftConfig

    return TrlSftConfig(
        **common_trainer_arguments(config, checkpoint_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,  # a float < 1 is a share of the steps
        lr_scheduler_type=config.lr_scheduler,
        max_length=config.max_length,
        packing=config.packing,
        completion_only_loss=True,
        gradient_checkpointing=config.gradient_checkpointing,
        disable_tqdm=False,
    )


def _wall_clock_stop(minutes: float):
    """A callback that ends training cleanly once ``minutes`` of wall time have passed."""
    from transformers import TrainerCallback

    deadline = time.time() + minutes * 60

    class WallClockStop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if time.time() >= deadline:
                log.info("wall-clock budget of %.1f min reached at step %d", minutes, state.global_step)
                control.should_training_stop = True
                control.should_save = True
            return control

    return WallClockStop()


def _checkpoint_step(checkpoint: str | bool) -> int:
    """The global step a checkpoint folder was saved at (0 when not resuming)."""
    return int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0


def _count_tokens(dataset) -> int:
    """Tokens of one pass over the tokenised training set (prompt + completion + EOS)."""
    return int(sum(len(ids) for ids in dataset["input_ids"]))


def _count_cut(dataset, max_length: int | None) -> int:
    """Training examples the trainer truncated to ``max_length`` (answers come last: they lose them); 0 when packed."""
    if not max_length or "input_ids" not in dataset.column_names:
        return 0
    return sum(len(ids) >= max_length for ids in dataset["input_ids"])


def _save_adapter(model, tokenizer, directory: Path, base_name: str, half: bool) -> None:
    """Save the trained adapter (or full model) so ``load_causal_lm(directory)`` works anywhere."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        for peft_config in model.peft_config.values():
            peft_config.base_model_name_or_path = base_name
        if half:
            model = model.to(torch.float16)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _as_trainable(model):
    """GGUF weights are de-quantised on load, but the model stays flagged as quantised; clear the flag."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config
    return model


def _checkpoint_to_resume(checkpoint_dir: Path, resume: bool) -> str | bool:
    if not resume:
        return False
    checkpoints = sorted(checkpoint_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(checkpoints[-1]) if checkpoints else False


def run_sft(config: SftConfig, resume: bool = False, documents=None, ontology=None) -> FitReport:
    """Build examples, train, save the coder folder; returns what the run cost."""
    import torch
    from trl import SFTTrainer

    from icdcoder.infer.coder import CoderSettings, SpanLLMPredictor, load_coder_settings
    from icdcoder.models.loading import load_causal_lm
    from icdcoder.train.data import build_examples, fit_coder_lexicons, fit_retriever, load_training_documents, provenance_counts, to_dataset

    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.time()
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ontology = ontology or _load_ontology()
    if documents is None:
        documents = load_training_documents(config.data)
    retriever = fit_retriever(documents, ontology)  # the saved coder retrieves even if the examples show no candidates
    examples = build_examples(documents, config.data, ontology, retriever=retriever, seed=config.seed)
    if not any(example.targets for example in examples):
        raise InputError(
            "no training example carries a code: every answer quotes its evidence, so the notes need gold evidence "
            "offsets (CodiEsp X, MDACE) or, English notes, data.silver_evidence: true",
            path=config.data.documents_jsonl or config.data.data_dir,
        )
    log.info("built %d training examples from %d documents", len(examples), len(documents))

    model, tokenizer = load_causal_lm(config.backbone)
    model = _as_trainable(model)
    dataset = to_dataset(examples, tokenizer.eos_token)
    checkpoint_dir = output_dir / "checkpoints"
    trainer = SFTTrainer(
        model=model,
        args=_trainer_args(config, checkpoint_dir),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=config.lora.to_peft(),
        callbacks=[_wall_clock_stop(config.max_wall_minutes)] if config.max_wall_minutes else None,
    )
    tokens_per_epoch = _count_tokens(trainer.train_dataset)
    cut = _count_cut(trainer.train_dataset, None if config.packing else config.max_length)
    if cut:
        log.warning("%d of %d training examples reach max_length=%d and were cut: their answers are lost in part or whole",
                    cut, len(trainer.train_dataset), config.max_length)
    checkpoint = _checkpoint_to_resume(checkpoint_dir, resume)
    steps_started = time.time()
    trainer.train(resume_from_checkpoint=checkpoint)
    steps_seconds = time.time() - steps_started
    wall = time.time() - started
    seen_tokens = _tokens_seen(trainer, tokens_per_epoch)

    if not trainer.is_world_process_zero():
        return FitReport(wall_seconds=wall, train_tokens=seen_tokens, peak_rss_mb=peak_rss_mb())
    settings = load_coder_settings(config.coder_config) if config.coder_config else CoderSettings()
    settings = settings.model_copy(update={"language": config.data.lang})
    coder = SpanLLMPredictor(settings).attach(trainer.model, tokenizer, retriever, ontology=ontology)
    fit_coder_lexicons(coder, documents, config.data)
    coder.save(output_dir, adapter_saver=lambda m, d: _save_adapter(m, tokenizer, d, config.backbone, config.save_half_precision))
    report = FitReport(
        wall_seconds=wall,
        train_tokens=seen_tokens,
        peak_rss_mb=peak_rss_mb(),
        extra={
            "examples": len(examples),
            "examples_cut": cut,
            "tokens_per_epoch": tokens_per_epoch,
            "steps": trainer.state.global_step,
            "steps_this_run": trainer.state.global_step - _checkpoint_step(checkpoint),
            "steps_seconds": round(steps_seconds, 1),
            "resumed_from": str(checkpoint) if checkpoint else "",
        },
    )
    _write_run_meta(output_dir, config, report, provenance_counts(examples), len(documents))
    return report


def export_checkpoint(config: SftConfig, checkpoint: str | Path, output_dir: str | Path | None = None, ontology=None) -> Path:
    """Turn a training checkpoint (e.g. of an interrupted run) into a complete coder folder.

    The adapter is re-saved (half precision if configured) with ``config.backbone`` as its
    base, the retriever is re-fitted on the training documents, and ``coder.json`` comes
    from ``config.coder_config``.
    """
    from peft import PeftModel

    from icdcoder.infer.coder import CoderSettings, SpanLLMPredictor, load_coder_settings
    from icdcoder.models.loading import load_causal_lm
    from icdcoder.train.data import fit_coder_lexicons, fit_retriever, load_training_documents

    checkpoint = Path(checkpoint)
    if not (checkpoint / "adapter_config.json").is_file():
        raise InputError("not an adapter checkpoint (no adapter_config.json)", path=checkpoint)
    output_dir = Path(output_dir or config.output_dir)
    base, tokenizer = load_causal_lm(config.backbone)
    model = PeftModel.from_pretrained(_as_trainable(base), str(checkpoint))
    ontology = ontology or _load_ontology()
    documents = load_training_documents(config.data)
    retriever = fit_retriever(documents, ontology)
    settings = load_coder_settings(config.coder_config) if config.coder_config else CoderSettings()
    settings = settings.model_copy(update={"language": config.data.lang})
    coder = SpanLLMPredictor(settings).attach(model, tokenizer, retriever, ontology=ontology)
    fit_coder_lexicons(coder, documents, config.data)
    coder.save(output_dir, adapter_saver=lambda m, d: _save_adapter(m, tokenizer, d, config.backbone, config.save_half_precision))
    _write_export_meta(output_dir, config, checkpoint)
    return output_dir


def _write_export_meta(output_dir: Path, config: SftConfig, checkpoint: Path) -> None:
    """``run_meta.json`` for an exported checkpoint: its step and training tokens from the trainer state.
    Wall time is unknown (``null``): a checkpoint does not record it."""
    state_path = checkpoint / "trainer_state.json"
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
    meta = {
        "train_tokens": _logged_tokens(state.get("log_history", [])),
        "wall_seconds": None,
        "steps": state.get("global_step"),
        "exported_from": str(checkpoint),
        "config": json.loads(config.model_dump_json()),
    }
    with atomic_write(output_dir / "run_meta.json") as handle:
        json.dump(meta, handle, indent=2, ensure_ascii=False)


def _load_ontology():
    from icdcoder.ontology import load_ontology

    return load_ontology()


def _tokens_seen(trainer, tokens_per_epoch: int) -> int:
    """Training tokens actually processed: TRL's running count when logged, else epochs x tokens."""
    logged = _logged_tokens(trainer.state.log_history)
    return logged if logged is not None else int(tokens_per_epoch * (trainer.state.epoch or 0))


def _logged_tokens(log_history: list[dict]) -> int | None:
    """TRL's running count of training tokens in a trainer's log, if it logged one."""
    logged = [entry["num_tokens"] for entry in log_history if "num_tokens" in entry]
    return int(max(logged)) if logged else None


def _write_run_meta(output_dir: Path, config: SftConfig, report: FitReport, provenance: dict[str, int], n_documents: int) -> None:
    import torch

    meta = {
        "train_tokens": report.train_tokens,
        "tokens_per_epoch": report.extra.get("tokens_per_epoch"),
        "wall_seconds": round(report.wall_seconds, 1),
        "peak_rss_mb": round(report.peak_rss_mb, 1),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "steps": report.extra.get("steps"),
        "steps_this_run": report.extra.get("steps_this_run"),
        #: wall time of the optimizer steps alone (wall_seconds adds data preparation and saving)
        "steps_seconds": report.extra.get("steps_seconds"),
        "resumed_from": report.extra.get("resumed_from") or None,
        "documents": n_documents,
        "examples": report.extra.get("examples"),
        #: examples the trainer truncated at max_length (their answers lost in part or whole)
        "examples_cut": report.extra.get("examples_cut"),
        "examples_by_provenance": provenance,
        "config": json.loads(config.model_dump_json()),
    }
    with atomic_write(output_dir / "run_meta.json") as handle:
        json.dump(meta, handle, indent=2, ensure_ascii=False)
