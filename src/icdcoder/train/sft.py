"""Supervised fine-tuning with TRL's ``SFTTrainer`` (LoRA via peft), loss on the completion only.

:func:`run_sft` trains an adapter (checkpoints under ``output_dir/checkpoints/`` for ``--resume``) and returns it;
:mod:`icdcoder.train.coder_folder` makes a coder folder of it (``model/`` loadable by ``load_causal_lm`` anywhere,
``retriever/``, the signals' files, ``coder.json``, ``run_meta.json``).

Checks shared by every training run live here too: the output folder checked (:func:`check_training_output`) and
``--resume``'s checkpoint, the newest one that is whole (:func:`resume_checkpoint`, shared with GRPO and PHI): a
damaged one is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icdcoder.errors import InputError
from icdcoder.io import atomic_write, check_output_dir
from icdcoder.predictor import FitReport, peak_rss_mb
from icdcoder.train.config import SftConfig

log = logging.getLogger(__name__)


def use_bf16(setting: bool | str) -> bool:
    """Resolve the ``bf16`` setting: ``"auto"`` means bf16 exactly where the hardware computes it natively:
    a CUDA device that supports it, or (without CUDA) a CPU with AVX-512 BF16 or AMX instructions. On other
    CPUs bf16 autocast is emulated and several times slower than fp32 (``benchmarks/perf/sft_throughput.py``)."""
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


# --------------------------------------------------------------------------- checkpoints and the output folder

#: how a ``--resume`` with nothing to resume from ends every message
START_FRESH = "drop --resume to start fresh"
#: the weight files a trainer checkpoint holds (at least one of them)
WEIGHT_FILES = (
    "adapter_model.safetensors",
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.bin",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: files written by ``torch.save`` (zip archives): optimizer, scheduler, RNG state, training arguments, .bin weights
TORCH_FILE_SUFFIXES = (".pt", ".pth", ".bin")
#: torch files up to this size get every member's CRC checked too; larger ones only their zip directory (cheap)
CRC_CHECK_BYTES = 64 * 2**20


def _safetensors_problem(path: Path, folder: Path) -> str | None:
    """Why a ``.safetensors`` file is unusable: its header is parsed and checked to cover the file exactly, which
    catches truncation and a damaged header without reading the tensors."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except (SafetensorError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return f"{path.relative_to(folder)} is damaged ({reason})"
    return None


def _torch_file_problem(path: Path, folder: Path) -> str | None:
    """Why a ``torch.save`` file is unusable: its zip directory (at the end: gone when truncated) must read, and a
    small file's members must match their CRCs. Nothing is unpickled."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip() if path.stat().st_size <= CRC_CHECK_BYTES else None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as err:
        return f"{path.relative_to(folder)} is unreadable ({type(err).__name__})"
    return f"{path.relative_to(folder)} is damaged (member {bad})" if bad else None


def _sharded_problem(index: Path, folder: Path) -> str | None:
    """A sharded checkpoint's index must load and every shard it names must be there."""
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return f"{index.name} is unreadable"
    missing = sorted(shard for shard in shards if not (index.parent / shard).is_file())
    return f"{index.relative_to(folder)} names missing shards ({', '.join(missing[:3])})" if missing else None


def weights_problem(folder: Path) -> str | None:
    """Why the model weights in ``folder`` (a checkpoint or an adapter folder) are unusable; None when they look whole."""
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        return "no model weights (" + " or ".join(WEIGHT_FILES[:2]) + ")"
    for path in sorted(folder.rglob("*.safetensors")):
        problem = _safetensors_problem(path, folder)
        if problem:
            return problem
    for path in sorted(folder.rglob("*.index.json")):
        problem = _sharded_problem(path, folder)
        if problem:
            return problem
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why a trainer checkpoint cannot be resumed from (missing or unreadable ``trainer_state.json``, truncated or
    corrupt weights, unreadable optimizer/scheduler/RNG state); None when it looks whole. Cheap: headers and zip
    directories are read, tensors are not."""
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json"
    try:
        loaded = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "trainer_state.json is unreadable"
    if not isinstance(loaded, dict) or not isinstance(loaded.get("global_step"), int):
        return "trainer_state.json holds no global_step"
    problem = weights_problem(folder)
    if problem:
        return problem
    for path in sorted(folder.rglob("*")):
        if path.suffix in TORCH_FILE_SUFFIXES and path.is_file():
            problem = _torch_file_problem(path, folder)
            if problem:
                return problem
    return None


def find_checkpoint(checkpoint_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest whole ``checkpoint-<step>`` folder under ``checkpoint_dir`` (None when there is none), and the
    newer ones skipped as damaged, each with why. Nothing is logged (see :func:`usable_checkpoint`)."""
    checkpoint_dir = Path(checkpoint_dir)
    steps = []
    if checkpoint_dir.is_dir():
        for folder in checkpoint_dir.glob("checkpoint-*"):
            step = folder.name.removeprefix("checkpoint-")
            if step.isdigit() and folder.is_dir():
                steps.append((int(step), folder))
    skipped: list[tuple[Path, str]] = []
    for _, folder in sorted(steps, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder, skipped
        skipped.append((folder, problem))
    return None, skipped


def _warn_skipped(skipped: Sequence[tuple[Path, str]]) -> None:
    for folder, problem in skipped:
        log.warning("skipping the damaged checkpoint %s: %s; trying the one before", folder, problem)


def usable_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest whole checkpoint under ``checkpoint_dir``, or None; each damaged newer one is skipped with a warning."""
    found, skipped = find_checkpoint(checkpoint_dir)
    _warn_skipped(skipped)
    return found


def damaged_list(problems: Sequence[str], shown: int = 3) -> str:
    """The first ``shown`` damaged checkpoints' problems, and how many more, for a one-line error."""
    more = f"; {len(problems) - shown} more" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def resume_checkpoint(checkpoint_dir: Path) -> Path:
    """The checkpoint ``--resume`` continues from: the newest whole one under ``checkpoint_dir`` (damaged newer ones
    skipped with a warning); none at all is a one-line error naming the folder (and what was wrong with each)."""
    checkpoint_dir = Path(checkpoint_dir)
    found, skipped = find_checkpoint(checkpoint_dir)
    if found is None:
        damaged = damaged_list([f"{folder.name}: {problem}" for folder, problem in skipped])
        detail = f" (every checkpoint is damaged: {damaged})" if skipped else ""
        raise InputError(f"no usable checkpoint to resume from{detail}; {START_FRESH}", path=checkpoint_dir)
    _warn_skipped(skipped)
    log.info("resuming from %s", found)
    return found


def check_training_output(output_dir: str | Path, inputs: Sequence[str | Path | None], resume: bool) -> Path:
    """:func:`icdcoder.io.check_output_dir` for a training run; a ``--resume`` into a folder that does not exist is
    refused first (and nothing is created)."""
    output_dir = Path(output_dir)
    if resume and not output_dir.exists():
        raise InputError(f"nothing to resume: the folder does not exist; {START_FRESH}", path=output_dir)
    return check_output_dir(output_dir, inputs=inputs)


def existing_path(name: str | Path | None) -> Path | None:
    """``name`` as a path when it names something on disk (a model folder), else None (a registered model name)."""
    return Path(name) if name is not None and Path(name).exists() else None


def sft_inputs(config: SftConfig) -> list[Path | None]:
    """What an SFT run reads: the output folder must be none of them."""
    return [existing_path(config.backbone), config.data.data_dir, config.data.documents_jsonl, config.coder_config]


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


def _checkpoint_step(checkpoint: str | Path | None) -> int:
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


def save_adapter(model, tokenizer, directory: Path, base_name: str, half: bool) -> None:
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


@dataclass
class SftAdapter:
    """What an SFT run trained: the model (LoRA adapter on its base) and tokenizer, the retriever its prompts' candidates
    came from, the notes and ontology it read, what it cost, and how many examples each source gave."""

    model: Any
    tokenizer: Any
    retriever: Any
    documents: list
    ontology: Any
    report: FitReport
    provenance: dict[str, int] = field(default_factory=dict)
    #: whether this process is the one that saves (one of several in a distributed run)
    main_process: bool = True

    def saver(self, config: SftConfig) -> Callable[[Any, Path], None]:
        """How a coder folder saves this adapter: with ``config.backbone`` as its base, half precision if configured."""
        backbone, half = config.backbone, config.save_half_precision
        return lambda model, directory: save_adapter(model, self.tokenizer, directory, backbone, half)


def run_sft(config: SftConfig, checkpoint: Path | None = None, documents=None, ontology=None) -> SftAdapter:
    """Build examples and train an adapter, checkpoints under ``config.output_dir`` (from ``checkpoint`` if given).

    Making a coder folder of it is :func:`icdcoder.train.coder_folder.train_coder`'s work."""
    import torch
    from trl import SFTTrainer

    from icdcoder.models.loading import load_causal_lm
    from icdcoder.train.data import (
        build_examples,
        fit_retriever,
        load_training_documents,
        provenance_counts,
        to_dataset,
    )

    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.time()
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
    trainer = SFTTrainer(
        model=model,
        args=_trainer_args(config, Path(config.output_dir) / "checkpoints"),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=config.lora.to_peft(),
        callbacks=[_wall_clock_stop(config.max_wall_minutes)] if config.max_wall_minutes else None,
    )
    tokens_per_epoch = _count_tokens(trainer.train_dataset)
    cut = _count_cut(trainer.train_dataset, None if config.packing else config.max_length)
    if cut:
        log.warning(
            "%d of %d training examples reach max_length=%d and were cut: their answers are lost in part or whole",
            cut,
            len(dataset),
            config.max_length,
        )
    steps_started = time.time()
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    steps_seconds = time.time() - steps_started
    report = FitReport(
        wall_seconds=time.time() - started,
        train_tokens=_tokens_seen(trainer, tokens_per_epoch),
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
    return SftAdapter(
        trainer.model,
        tokenizer,
        retriever,
        list(documents),
        ontology,
        report,
        provenance_counts(examples),
        main_process=trainer.is_world_process_zero(),
    )


def check_checkpoint(checkpoint: Path) -> None:
    """Raise unless ``checkpoint`` is an adapter checkpoint whose weights are whole."""
    if not checkpoint.is_dir():
        raise InputError("checkpoint folder not found", path=checkpoint)
    if not (checkpoint / "adapter_config.json").is_file():
        raise InputError("not an adapter checkpoint (no adapter_config.json)", path=checkpoint)
    problem = weights_problem(checkpoint)
    if problem:
        raise InputError(f"cannot export this checkpoint: {problem}", path=checkpoint)


def load_checkpoint(config: SftConfig, checkpoint: Path):
    """The model of a training checkpoint (its adapter on ``config.backbone``) and its tokenizer."""
    from peft import PeftModel

    from icdcoder.models.loading import load_causal_lm

    base, tokenizer = load_causal_lm(config.backbone)
    return PeftModel.from_pretrained(_as_trainable(base), str(checkpoint)), tokenizer


def write_export_meta(output_dir: Path, config: SftConfig, checkpoint: Path) -> None:
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


def write_run_meta(
    output_dir: Path, config: SftConfig, report: FitReport, provenance: dict[str, int], n_documents: int
) -> None:
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
