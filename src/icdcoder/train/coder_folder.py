"""Coder folders from training: an SFT run (:func:`train_coder`) or one of its checkpoints (:func:`export_checkpoint`)
becomes a complete folder for :class:`icdcoder.infer.coder.SpanPredictor` (``model/``, ``retriever/``, the signals'
files, ``coder.json``, ``run_meta.json``). The coder itself is put together by
:meth:`~icdcoder.infer.coder.SpanPredictor.assemble`, as ``fit`` puts it together.

Before any work the output folder is checked (:func:`icdcoder.train.sft.check_training_output`) and locked for the
whole run (:func:`icdcoder.io.output_lock`).
"""

from __future__ import annotations

from pathlib import Path

from icdcoder.infer.coder import SpanPredictor
from icdcoder.infer.settings import CoderSettings, load_coder_settings
from icdcoder.io import check_output_dir, output_lock
from icdcoder.predictor import FitReport
from icdcoder.train.config import SftConfig
from icdcoder.train.data import fit_retriever, load_training_documents, training_notes
from icdcoder.train.sft import (
    check_checkpoint,
    check_training_output,
    load_checkpoint,
    resume_checkpoint,
    run_sft,
    save_adapter,
    sft_inputs,
    write_export_meta,
    write_run_meta,
)


def coder_settings(config: SftConfig) -> CoderSettings:
    """The settings of the coder an SFT run makes: ``config.coder_config`` (or the defaults) for its notes' language."""
    settings = load_coder_settings(config.coder_config) if config.coder_config else CoderSettings()
    return settings.model_copy(update={"language": config.data.lang})


def train_coder(config: SftConfig, resume: bool = False, documents=None, ontology=None) -> FitReport:
    """Train an adapter (:func:`icdcoder.train.sft.run_sft`) and save its coder folder in ``config.output_dir``;
    returns what the run cost. ``resume``: continue from the newest whole checkpoint there (none: a one-line error)."""
    output_dir = check_training_output(config.output_dir, sft_inputs(config), resume)
    with output_lock(output_dir):
        checkpoint = resume_checkpoint(output_dir / "checkpoints") if resume else None
        adapter = run_sft(config.model_copy(update={"output_dir": output_dir}), checkpoint, documents, ontology)
        if not adapter.main_process:
            return adapter.report
        coder = SpanPredictor(coder_settings(config)).assemble(
            adapter.model,
            adapter.tokenizer,
            adapter.retriever,
            adapter.ontology,
            training_notes(adapter.documents, config.data),
        )
        coder.save(output_dir, adapter_saver=adapter.saver(config))
        write_run_meta(output_dir, config, adapter.report, adapter.provenance, len(adapter.documents))
        return adapter.report


def export_checkpoint(
    config: SftConfig, checkpoint: str | Path, output_dir: str | Path | None = None, ontology=None
) -> Path:
    """Turn a training checkpoint (e.g. of an interrupted run) into a complete coder folder.

    The adapter is re-saved (half precision if configured) with ``config.backbone`` as its base, the retriever and the
    signals are re-fitted on the training documents, and ``coder.json`` comes from ``config.coder_config``. The
    checkpoint's weights and the output folder are checked, and the output folder locked, before any work.
    """
    checkpoint = Path(checkpoint)
    check_checkpoint(checkpoint)
    output_dir = check_output_dir(Path(output_dir or config.output_dir), inputs=[checkpoint, *sft_inputs(config)])
    with output_lock(output_dir):
        model, tokenizer = load_checkpoint(config, checkpoint)
        if ontology is None:
            from icdcoder.ontology import load_ontology

            ontology = load_ontology()
        documents = load_training_documents(config.data)
        coder = SpanPredictor(coder_settings(config)).assemble(
            model, tokenizer, fit_retriever(documents, ontology), ontology, training_notes(documents, config.data)
        )
        coder.save(
            output_dir,
            adapter_saver=lambda m, d: save_adapter(m, tokenizer, d, config.backbone, config.save_half_precision),
        )
        write_export_meta(output_dir, config, checkpoint)
        return output_dir
