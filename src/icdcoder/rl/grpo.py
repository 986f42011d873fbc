"""GRPO post-training of the span coder with TRL's ``GRPOTrainer``.

Prompts are built exactly as for SFT and inference (``icdcoder.train.data`` ->
``icdcoder.spans`` -> ``icdcoder.prompt``); candidates are attached the way
inference sees them (leak-free retrieval, gold neither forced in nor taken out).
The dataset columns ``source``, ``gold_codes`` and ``gold_spans`` reach the
reward functions (:class:`icdcoder.rl.rewards.RewardScorer`) as keyword lists.

Starting point: an SFT coder folder (its adapter is trained further; with
``beta > 0`` TRL 1.16 copies it into a frozen ``"ref"`` adapter, so the KL
term anchors to the SFT model, not to the raw backbone), an adapter folder, or
any model ``load_causal_lm`` accepts (then a new LoRA adapter is trained).

Zero-advantage groups. TRL 1.16 has no dynamic-sampling filter: a group whose
rollouts all score the same gets advantage 0, but its tokens still count in the
loss normaliser (diluting the others) and in the KL term, and
``frac_reward_zero_std`` is only logged. :class:`ZeroAdvantageFilteringTrainer`
masks every completion with advantage exactly 0 out of the loss (and out of
the token count), and records which examples fell in such groups so that PHI
can leave them out of its next round and draw other prompts instead.

Output: a coder folder (``model/``, ``retriever/``, ``coder.json``) that
:class:`icdcoder.infer.coder.SpanPredictor` loads, plus ``train_log.jsonl``
(per logging step: mean reward per component, set F1, zero-std share, KL),
``zero_advantage.json`` and ``run_meta.json``; ``checkpoints/`` for ``--resume``. The output folder is checked and
locked for the whole run before any work; ``--resume`` continues from the newest whole checkpoint (damaged ones are
skipped with a warning, none at all is an error), as SFT does (:func:`icdcoder.train.sft.resume_checkpoint`).

A round can continue an earlier optimisation (:class:`Continuation`, used by
PHI): its learning rate follows its share of one linear decay, and AdamW starts
from the moments the previous round saved (``optimizer.pt``) instead of zeros.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from icdcoder.data.schema import Document
from icdcoder.io import atomic_write, output_lock, write_jsonl
from icdcoder.ontology.labels import CODER_SYSTEMS
from icdcoder.predictor import FitReport, peak_rss_mb
from icdcoder.prompt import Candidate, build_prompt, find_quote
from icdcoder.rl.config import GrpoConfig
from icdcoder.rl.rewards import RewardScorer
from icdcoder.train.data import load_training_documents
from icdcoder.train.sft import (
    check_training_output,
    common_trainer_arguments,
    existing_path,
    resume_checkpoint,
    usable_checkpoint,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- starting point


@dataclass
class StartingPoint:
    """Where the policy comes from, and what of an SFT coder folder to carry over."""

    model_path: str
    coder_dir: Path | None = None

    @classmethod
    def from_init(cls, init: str) -> StartingPoint:
        folder = Path(init)
        if (folder / "coder.json").is_file() and (folder / "model").is_dir():
            return cls(str(folder / "model"), folder)
        return cls(init)

    @property
    def adapter_config(self) -> Path:
        return Path(self.model_path) / "adapter_config.json"


@dataclass
class Policy:
    model: object
    tokenizer: object
    #: a new LoRA config for the trainer, or None when the model already carries its trainable adapter
    peft_config: object | None
    #: what the saved adapter names as its base (a name or folder ``load_causal_lm`` resolves)
    base_name: str


def load_policy(start: StartingPoint, config: GrpoConfig) -> Policy:
    """The trainable model: the starting adapter made trainable, or the model plus a new LoRA."""
    from icdcoder.models.loading import ModelSource, load_causal_lm, load_tokenizer

    if start.adapter_config.is_file():
        from peft import PeftModel

        base_name = json.loads(start.adapter_config.read_text())["base_model_name_or_path"]
        base, _ = load_causal_lm(base_name)
        _allow_training(base)
        # with beta > 0, TRL copies this adapter into a frozen "ref" adapter: the KL anchors to the start
        model = PeftModel.from_pretrained(base, start.model_path, is_trainable=True)
        return Policy(model, load_tokenizer(ModelSource(start.model_path)), None, base_name)
    model, tokenizer = load_causal_lm(start.model_path)
    _allow_training(model)
    if not config.lora.enabled and config.beta > 0 and not (Path(start.model_path) / "config.json").is_file():
        from icdcoder.errors import InputError

        raise InputError(
            "full fine-tuning with beta > 0 needs 'init' to be a transformers model folder (TRL reloads the reference from it)"
        )
    return Policy(model, tokenizer, config.lora.to_peft(), start.model_path)


def _allow_training(model) -> None:
    """Drop the GGUF "quantized" flag of a de-quantised model: its weights are full precision, so it can train."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
        if getattr(model.config, "quantization_config", None) is not None:
            del model.config.quantization_config


def save_policy(model, tokenizer, directory: Path, base_name: str) -> None:
    """Save the trained adapter (only ``default``, never ``ref``) or full model, loadable by ``load_causal_lm``."""
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        model.peft_config["default"].base_model_name_or_path = base_name
        model.save_pretrained(directory, selected_adapters=["default"])
    else:
        model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class RlExample:
    """One training prompt's ingredients; hints are added only by PHI."""

    example_id: str
    doc_id: str
    text: str
    candidates: tuple[Candidate, ...]
    gold: tuple[tuple[str, str], ...]  # (code, system)
    gold_spans: tuple[tuple[str, int, int], ...]  # (code, start, end) in ``text``

    def prompt(self, hints: Sequence[Candidate] = ()) -> str:
        return build_prompt(self.text, self.candidates, hints=hints)

    @property
    def gold_codes(self) -> list[str]:
        return [code for code, _ in self.gold]


def to_rl_example(index: int, example) -> RlExample:
    """A :class:`~icdcoder.spans.SpanExample` -> an :class:`RlExample`; gold offsets = where each quote sits."""
    spans = []
    for code, _system, quote in example.targets:
        found = find_quote(quote, example.text)
        if found is not None:
            spans.append((code, found[0], found[1]))
    gold = tuple(dict.fromkeys((code, system) for code, system, _ in example.targets))
    return RlExample(
        example_id=f"{index}:{example.doc_id}:{example.start}-{example.end}",
        doc_id=example.doc_id,
        text=example.text,
        candidates=tuple(example.candidates),
        gold=gold,
        gold_spans=tuple(spans),
    )


def build_rl_examples(documents: Sequence[Document], config: GrpoConfig, ontology, retriever) -> list[RlExample]:
    """Span/document examples as for SFT, with inference-like (leak-free, unforced) candidates."""
    from icdcoder.spans.examples import attach_candidates
    from icdcoder.train.data import build_examples

    no_candidates = config.data.model_copy(update={"candidates_k": 0})
    examples = build_examples(documents, no_candidates, ontology, retriever=None, seed=config.seed)
    if config.data.candidates_k > 0 and retriever is not None and examples:
        examples = attach_candidates(examples, retriever, k=config.data.candidates_k, leak_free=True)
    return [to_rl_example(index, example) for index, example in enumerate(examples)]


def to_dataset(examples: Sequence[RlExample], hints: Mapping[str, Sequence[Candidate]] | None = None):
    """The TRL dataset: prompt + the columns the rewards read (+ ``example_id``)."""
    from datasets import Dataset

    hints = hints or {}
    rows: dict[str, list] = {
        "prompt": [],
        "source": [],
        "gold_codes": [],
        "gold_spans": [],
        "example_id": [],
        "hinted": [],
    }
    for example in examples:
        example_hints = hints.get(example.example_id, ())
        rows["prompt"].append(example.prompt(example_hints))
        rows["source"].append(example.text)
        rows["gold_codes"].append(example.gold_codes)
        rows["gold_spans"].append([{"code": c, "start": s, "end": e} for c, s, e in example.gold_spans])
        rows["example_id"].append(example.example_id)
        rows["hinted"].append(bool(example_hints))
    return Dataset.from_dict(rows)


# --------------------------------------------------------------------------- trainer


@dataclass(frozen=True)
class Continuation:
    """A GRPO round that carries on an earlier optimisation instead of starting a fresh one."""

    #: learning rate at the round's first step and after its last (a linear decay in between)
    learning_rate: float
    final_learning_rate: float
    #: the AdamW state the previous round saved (``None``: fresh moments)
    optimizer_state: Path | None = None


def carry_moments(optimizer, saved: dict) -> None:
    """Give ``optimizer`` the per-parameter state of ``saved`` (AdamW moments, step counts), keeping its own
    hyper-parameters (learning rate, schedule bookkeeping), which belong to the new round."""
    current = optimizer.state_dict()
    current["state"] = saved["state"]
    optimizer.load_state_dict(current)


def trainer_class():
    """TRL's ``GRPOTrainer`` with zero-advantage completions taken out of the loss (class built lazily: TRL is heavy)."""
    from trl import GRPOTrainer

    class ZeroAdvantageFilteringTrainer(GRPOTrainer):
        filter_zero_advantage = True
        #: AdamW state to start from instead of zeros (a checkpoint being resumed still overrides it)
        carried_optimizer_state: Path | None = None

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            #: example_id -> how many of its rollouts had advantage 0
            self.zero_advantage_ids: Counter = Counter()

        def create_optimizer(self, model=None):
            optimizer = super().create_optimizer(model)
            if self.carried_optimizer_state is not None:
                import torch

                carry_moments(optimizer, torch.load(self.carried_optimizer_state, weights_only=True))
            return optimizer

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            zero = output["advantages"] == 0
            for row, is_zero in enumerate(zero.tolist()):
                if is_zero and row < len(inputs):
                    self.zero_advantage_ids[inputs[row]["example_id"]] += 1
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["zero_advantage_share"].append(zero.float().mean().item())
            if self.filter_zero_advantage and mode == "train" and bool(zero.any()):
                mask = output["completion_mask"] * (~zero).unsqueeze(1).to(output["completion_mask"].dtype)
                output["completion_mask"] = mask
                output["num_items_in_batch"] = self.accelerator.gather(mask.sum()).sum()
            return output

    return ZeroAdvantageFilteringTrainer


def _use_vllm(setting) -> bool:
    if setting != "auto":
        return bool(setting)
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def grpo_arguments(
    config: GrpoConfig,
    checkpoint_dir: Path,
    max_steps: int,
    reward_weights: list[float],
    continuation: Continuation | None = None,
):
    from trl import GRPOConfig as TrlGrpoConfig

    arguments = common_trainer_arguments(config, checkpoint_dir)
    if continuation is not None:
        arguments["learning_rate"] = continuation.learning_rate
        arguments["lr_scheduler_type"] = "polynomial"
        arguments["lr_scheduler_kwargs"] = {"lr_end": continuation.final_learning_rate, "power": 1.0}
    return TrlGrpoConfig(
        **arguments,
        max_steps=max_steps,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        reward_weights=reward_weights,
        use_vllm=_use_vllm(config.use_vllm),
        vllm_mode="colocate",
        log_completions=False,
    )


def code_resolver(ontology):
    """``code -> (canonical, system)`` restricted to the systems the coder writes."""
    return lambda code: ontology.resolve(code, systems=CODER_SYSTEMS)


def training_frequencies(documents: Sequence[Document]) -> Counter:
    from icdcoder.evaluate.metrics import code_frequencies

    return code_frequencies(documents)


@dataclass
class RoundResult:
    """What one GRPO run (or PHI round) produced."""

    steps: int
    wall_seconds: float
    log_history: list[dict]
    zero_advantage_ids: Counter = field(default_factory=Counter)


def run_grpo_round(
    config: GrpoConfig,
    policy: Policy,
    dataset,
    scorer: RewardScorer,
    output_dir: Path,
    max_steps: int,
    resume: bool,
    continuation: Continuation | None = None,
    kl_anchor: StartingPoint | None = None,
    checkpoint: Path | None = None,
) -> RoundResult:
    """Train ``policy`` for ``max_steps`` GRPO steps on ``dataset``; save its adapter to ``output_dir/model``
    (and, when the round continues an optimisation, its AdamW state to ``output_dir/optimizer.pt``).
    ``kl_anchor``: the model the KL term anchors to instead of ``policy``'s starting weights. ``checkpoint``: the
    checkpoint to continue from, already chosen; else, with ``resume``, the newest whole one in
    ``output_dir/checkpoints`` (damaged ones skipped with a warning; none: the round starts afresh)."""
    started = time.time()
    functions, weights = scorer.reward_functions()
    checkpoint_dir = output_dir / "checkpoints"
    trainer_type = trainer_class()
    trainer = trainer_type(
        model=policy.model,
        reward_funcs=functions,
        args=grpo_arguments(config, checkpoint_dir, max_steps, weights, continuation),
        train_dataset=dataset,
        processing_class=policy.tokenizer,
        peft_config=policy.peft_config,
    )
    trainer.filter_zero_advantage = config.filter_zero_advantage
    if kl_anchor is not None:
        anchor_reference(trainer.model, kl_anchor)
    if continuation is not None:
        trainer.carried_optimizer_state = continuation.optimizer_state
    if checkpoint is None and resume:
        checkpoint = usable_checkpoint(checkpoint_dir)
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    history = list(trainer.state.log_history)
    if trainer.is_world_process_zero():
        save_policy(trainer.model, policy.tokenizer, output_dir / "model", policy.base_name)
        write_jsonl(output_dir / "train_log.jsonl", history)
        with atomic_write(output_dir / "zero_advantage.json") as handle:
            json.dump(dict(trainer.zero_advantage_ids), handle, indent=1)
        if continuation is not None:
            save_optimizer_state(trainer.optimizer, output_dir / "optimizer.pt")
    return RoundResult(trainer.state.global_step, time.time() - started, history, trainer.zero_advantage_ids)


def anchor_reference(model, anchor: StartingPoint) -> None:
    """Point the KL reference of a LoRA policy at ``anchor``: its adapter's weights go into TRL's frozen ``"ref"``
    adapter; an anchor without an adapter is the bare backbone, which TRL uses when there is no ``"ref"`` adapter."""
    from icdcoder.errors import InputError

    if "ref" not in getattr(model, "peft_config", {}):
        raise InputError("the KL reference can only be moved for a LoRA policy that TRL gave a 'ref' adapter")
    if not anchor.adapter_config.is_file():
        model.delete_adapter("ref")
        return
    from peft import load_peft_weights, set_peft_model_state_dict

    set_peft_model_state_dict(model, load_peft_weights(anchor.model_path, device="cpu"), adapter_name="ref")


def save_optimizer_state(optimizer, path: Path) -> None:
    import torch

    with atomic_write(path, mode="wb") as handle:
        torch.save(optimizer.state_dict(), handle)


# --------------------------------------------------------------------------- coder folder


def prepare_retriever(start: StartingPoint, config: GrpoConfig, documents: Sequence[Document], ontology):
    """The SFT coder's retriever when starting from one, else one fitted on the training documents."""
    from icdcoder.spans.retrieval import CandidateRetriever

    if start.coder_dir is not None and (start.coder_dir / "retriever").is_dir():
        return CandidateRetriever.load(start.coder_dir / "retriever")
    if config.data.candidates_k == 0:
        return None
    from icdcoder.train.data import fit_retriever

    return fit_retriever(documents, ontology)


def write_coder_folder(output_dir: Path, start: StartingPoint, retriever, model_dir: Path) -> None:
    """Make ``output_dir`` a coder folder: the trained ``model/``, the retriever, the SFT coder's ``coder.json`` and
    signals' files (:data:`~icdcoder.infer.signals.SIGNAL_PATHS`), copied as they are."""
    from icdcoder.infer.coder import SpanPredictor
    from icdcoder.infer.signals import SIGNAL_PATHS
    from icdcoder.infer.store import CODER_FILE

    if model_dir.resolve() != (output_dir / "model").resolve():
        if (output_dir / "model").exists():
            shutil.rmtree(output_dir / "model")
        shutil.copytree(model_dir, output_dir / "model")
    if retriever is not None and not (output_dir / "retriever").is_dir():
        retriever.save(output_dir / "retriever")
    if start.coder_dir is not None and (start.coder_dir / CODER_FILE).is_file():
        with atomic_write(output_dir / CODER_FILE) as handle:
            handle.write((start.coder_dir / CODER_FILE).read_text(encoding="utf-8"))
        for name in SIGNAL_PATHS:
            source = start.coder_dir / name
            if source.is_dir():
                shutil.copytree(source, output_dir / name, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copy2(source, output_dir / name)
    elif retriever is not None:
        SpanPredictor().write_settings(output_dir)


def summarise_history(history: Sequence[dict]) -> dict:
    """First and last logged values of the reward components, set F1 and the zero-std share."""
    keys = sorted({key for entry in history for key in entry if key.startswith("rewards/") and key.endswith("/mean")})
    keys += [
        key
        for key in ("reward", "set_f1", "frac_reward_zero_std", "zero_advantage_share", "kl")
        if any(key in e for e in history)
    ]
    logged = [entry for entry in history if "reward" in entry]
    if not logged:
        return {}
    return {key: {"first": logged[0].get(key), "last": logged[-1].get(key)} for key in keys}


def write_run_meta(output_dir: Path, config, report: FitReport, extra: dict) -> None:
    meta = {
        "wall_seconds": round(report.wall_seconds, 1),
        "peak_rss_mb": round(report.peak_rss_mb, 1),
        **report.extra,
        **extra,
        "config": json.loads(config.model_dump_json()),
    }
    with atomic_write(output_dir / "run_meta.json") as handle:
        json.dump(meta, handle, indent=2, ensure_ascii=False)


class RunInputs(NamedTuple):
    """What every RL run (GRPO, PHI) starts from."""

    output_dir: Path
    documents: list[Document]
    ontology: Any
    start: StartingPoint
    retriever: Any
    examples: list


def run_inputs(config: GrpoConfig) -> list[Path | None]:
    """What an RL run reads (the starting model, the notes): its output folder must be none of them."""
    start = StartingPoint.from_init(config.init)
    return [
        existing_path(config.init),
        existing_path(start.model_path),
        config.data.data_dir,
        config.data.documents_jsonl,
    ]


def check_rl_output(config: GrpoConfig, resume: bool) -> Path:
    """The output folder of an RL run, checked before any work (see :func:`icdcoder.train.sft.check_training_output`)."""
    return check_training_output(config.output_dir, run_inputs(config), resume)


def prepare_run(config: GrpoConfig, documents=None, ontology=None) -> RunInputs:
    """Threads, output folder, ontology, documents, starting model, retriever and prompts of a run."""
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if ontology is None:
        from icdcoder.ontology import load_ontology

        ontology = load_ontology()
    documents = list(documents) if documents is not None else load_training_documents(config.data)
    start = StartingPoint.from_init(config.init)
    retriever = prepare_retriever(start, config, documents, ontology)
    examples = build_rl_examples(documents, config, ontology, retriever)
    if not examples:
        from icdcoder.errors import InputError

        raise InputError(
            "no training prompts could be built from the documents",
            path=config.data.documents_jsonl or config.data.data_dir,
        )
    return RunInputs(output_dir, documents, ontology, start, retriever, examples)


def run_grpo(config: GrpoConfig, resume: bool = False, documents=None, ontology=None) -> FitReport:
    """Build prompts, train with GRPO, write the coder folder; returns what the run cost. Before any work the output
    folder is checked and locked for the whole run, and with ``resume`` the checkpoint is chosen (none: an error)."""
    output_dir = check_rl_output(config, resume)
    with output_lock(output_dir):
        checkpoint = resume_checkpoint(output_dir / "checkpoints") if resume else None
        return _run_grpo(config, checkpoint, documents, ontology)


def _run_grpo(config: GrpoConfig, checkpoint: Path | None, documents, ontology) -> FitReport:
    started = time.time()
    output_dir, documents, ontology, start, retriever, examples = prepare_run(config, documents, ontology)
    log.info("GRPO on %d prompts from %d documents", len(examples), len(documents))
    scorer = RewardScorer(code_resolver(ontology), config.reward, training_frequencies(documents))
    policy = load_policy(start, config)
    result = run_grpo_round(
        config,
        policy,
        to_dataset(examples),
        scorer,
        output_dir,
        config.max_steps,
        checkpoint is not None,
        checkpoint=checkpoint,
    )
    write_coder_folder(output_dir, start, retriever, output_dir / "model")
    report = FitReport(
        wall_seconds=time.time() - started,
        peak_rss_mb=peak_rss_mb(),
        extra={"steps": result.steps, "prompts": len(examples), "documents": len(documents)},
    )
    write_run_meta(output_dir, config, report, {"rewards": summarise_history(result.log_history)})
    return report
