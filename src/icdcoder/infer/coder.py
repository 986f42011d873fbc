"""The span LLM coder: segment a note, run every signal on it, fuse, rank.

``predict`` runs in two stages so that tuning is cheap:

1. :meth:`SpanPredictor.segment_outputs`: per note, its segments with their retrieved candidates
   (:mod:`icdcoder.infer.signals.retrieval`), then each registered signal (:mod:`icdcoder.infer.signals`) adds the
   codes it finds, each with a value in [0, 1] and the span it found it in; a diagnosis code no training note carries
   is named at the level the annotators code (``specify_untrained``);
2. :func:`icdcoder.infer.fusion.aggregate`: per code, each signal's best value over the note, combined as a weighted
   mean and thresholded per system.

``tune`` runs stage 1 once on dev and grid-searches the weights and thresholds of stage 2
(:mod:`icdcoder.infer.tuning`). A saved coder is a folder (:mod:`icdcoder.infer.store`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from icdcoder.data.schema import Document
from icdcoder.errors import InputError
from icdcoder.infer.fusion import aggregate
from icdcoder.infer.settings import CoderSettings
from icdcoder.infer.signals import (
    NoteContext,
    NoteOutputs,
    Signal,
    TrainingNotes,
    complete_phrases,
    new_signals,
)
from icdcoder.infer.signals.llm import load_for_inference
from icdcoder.infer.signals.retrieval import retrieve_segments
from icdcoder.infer.store import (
    MODEL_DIR,
    RETRIEVER_DIR,
    append_cache,
    check_coder_files,
    read_cache,
    read_coder_record,
    with_overrides,
    write_coder_record,
)
from icdcoder.infer.trees import TREES_FILE, TrainingCounts, TreeFusion, language_trees_file, trees_file
from icdcoder.io import progress_bar, write_json_or_remove
from icdcoder.ontology.labels import CODER_SYSTEMS
from icdcoder.predictor import DocumentPrediction, FitReport, Predictor
from icdcoder.spans.phrases import PHRASES_FILE, PhraseCompleter
from icdcoder.spans.translate import WordTranslator, sentence_pairs

if TYPE_CHECKING:
    from icdcoder.spans.retrieval import CandidateRetriever

SignalT = TypeVar("SignalT", bound=Signal)

log = logging.getLogger(__name__)

#: the coder folder's Spanish -> English glossary (:class:`~icdcoder.spans.translate.WordTranslator`)
GLOSSARY_FILE = "glossary.json"
#: notes coded together: enough segments for full generation batches, frequent progress updates
NOTES_PER_CHUNK = 8


def fit_glossary(training: TrainingNotes) -> WordTranslator | None:
    """The glossary of the training notes that have an English version (none for English notes, or without any)."""
    if training.language == "en":
        return None
    english = {doc.id: doc.text for doc in training.english}
    pairs = [
        pair
        for doc in training.documents
        if doc.id in english
        for pair in sentence_pairs(doc.text, english[doc.id].split("\n"))
    ]
    return WordTranslator().fit(pairs) if pairs else None


def with_narrowed_english(training: TrainingNotes, translator: WordTranslator) -> TrainingNotes:
    """``training`` with its English versions' evidence narrowed from the whole lines that translate it to the words
    that do (:meth:`~icdcoder.spans.translate.WordTranslator.project`), where the glossary finds them: the English
    lexicon then learns "iron deficiency anemia", not the sentence around it."""
    from icdcoder.data.align import align_document
    from icdcoder.data.codiesp import to_english

    spanish = {doc.id: doc for doc in training.documents}
    english = [
        to_english(spanish[doc.id], align_document(spanish[doc.id].text, doc.text.split("\n")), translator.project)
        if doc.id in spanish
        else doc
        for doc in training.english
    ]
    return replace(training, english=english)


def changed_references(before: Sequence[Document], after: Sequence[Document]) -> str:
    """``"changed/all"``: how many evidence references of ``after`` differ from those of ``before`` (the same notes)."""
    pairs = [
        (old.pieces, new.pieces)
        for old_doc, new_doc in zip(before, after)
        for old_gold, new_gold in zip(old_doc.codes, new_doc.codes)
        for old, new in zip(old_gold.evidence, new_gold.evidence)
    ]
    return f"{sum(old != new for old, new in pairs)}/{len(pairs)}"


class SpanPredictor(Predictor):
    """Span-centric coder: signals over the note's segments, fused per code (registry name ``span``).

    The LLM is one of its signals and is off in the shipped model (``use_llm: false``): on CPU it did not pay.
    """

    name = "span"

    def __init__(self, settings: CoderSettings | None = None):
        self.settings = settings or CoderSettings()
        self.model = None
        self.tokenizer = None
        self.retriever: CandidateRetriever | None = None
        #: registry name -> the coder's instance of that signal (:data:`icdcoder.infer.signals.SIGNAL_CLASSES`)
        self.signals: dict[str, Signal] = new_signals()
        self._ontology = None
        self._specific_codes: dict[tuple[str, str], str] = {}
        #: note language -> the gradient-boosted trees of ``settings.fusion: trees`` (:mod:`icdcoder.infer.trees`) for
        #: its notes, once fitted or loaded (saved as ``fusion_trees.json`` for the training language's notes,
        #: ``fusion_trees_<language>.json`` for another language's: :meth:`trees_file_of`)
        self.trees: dict[str, TreeFusion] = {}
        #: Spanish -> English words learned from the training notes and their translations (``glossary.json``): narrows a
        #: code found in a note's translation to the words of the note that the match translates
        self.translator: WordTranslator | None = None
        #: the words that may join an evidence span, learned from the training notes' references (``phrases.json``)
        self.phrases: PhraseCompleter | None = None

    # ------------------------------------------------------------------ assembly

    def attach(self, model, tokenizer, retriever, ontology=None) -> SpanPredictor:
        """Use an already loaded model/tokenizer (None: no LLM), fitted retriever and, optionally, ontology."""
        self.model, self.tokenizer, self.retriever = model, tokenizer, retriever
        if ontology is not None:
            self._ontology = ontology
        self._specific_codes = {}
        return self

    def assemble(self, model, tokenizer, retriever, ontology, training: TrainingNotes) -> SpanPredictor:
        """The coder of a trained model: the model and retriever attached, every signal fitted on ``training``. SFT,
        checkpoint export and :meth:`fit` build their coders here."""
        self.attach(model, tokenizer, retriever, ontology=ontology)
        self.fit_signals(training)
        return self

    def fit_signals(self, training: TrainingNotes) -> dict[str, str]:
        """Fit every signal on the training notes (the retriever is attached), the glossary on those notes that have an
        English version (before the signals: it narrows the English versions' evidence), and the phrase words on their
        evidence; returns how many English references the glossary narrowed (``english_evidence_narrowed``)."""
        report = {}
        self.translator = fit_glossary(training)
        if self.translator is not None:
            narrowed = with_narrowed_english(training, self.translator)
            report["english_evidence_narrowed"] = changed_references(training.english, narrowed.english)
            training = narrowed
        for signal in self.signals.values():
            signal.fit(self, training)
        self.phrases = PhraseCompleter.fit(training.documents)
        return report

    def signal_of(self, kind: type[SignalT]) -> SignalT:
        """The coder's instance of the signal class ``kind``."""
        found = [signal for signal in self.signals.values() if isinstance(signal, kind)]
        if not found:
            raise KeyError(f"no {kind.__name__} among the coder's signals")
        return found[0]

    @property
    def fitted_retriever(self) -> CandidateRetriever:
        """The retriever; a clear error before ``fit``, ``load`` or ``attach``."""
        if self.retriever is None:
            raise InputError("the coder has no retriever (fit or load it first)")
        return self.retriever

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

    def resolve(self, code: str):
        """``(canonical code, system)`` of a code the LLM wrote, among the coded systems; None if none."""
        return self.ontology.resolve(code, systems=CODER_SYSTEMS)

    # ------------------------------------------------------------------ training

    def fit(self, train: Sequence[Document], dev: Sequence[Document] | None = None) -> FitReport:
        """Fit the retriever and SFT the LLM (settings.sft_config; checkpoints in a scratch folder), fit the signals,
        then tune on ``dev`` if given."""
        import tempfile

        from icdcoder.config import load_config
        from icdcoder.train.config import SftConfig
        from icdcoder.train.data import training_notes
        from icdcoder.train.sft import run_sft

        sft = load_config(self.settings.sft_config, SftConfig) if self.settings.sft_config else SftConfig()
        with tempfile.TemporaryDirectory() as scratch:
            adapter = run_sft(
                sft.model_copy(update={"output_dir": Path(scratch)}), documents=list(train), ontology=self.ontology
            )
        self.assemble(
            adapter.model,
            adapter.tokenizer,
            adapter.retriever,
            self.ontology,
            training_notes(adapter.documents, sft.data),
        )
        if dev:
            self.tune(dev)
        return adapter.report

    # ------------------------------------------------------------------ inference

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
        done = read_cache(Path(cache)) if cache else {}
        todo = [d for d in documents if d.id not in done]
        if progress and len(todo) < len(documents):
            progress(len(documents) - len(todo))
        for start in range(0, len(todo), NOTES_PER_CHUNK):
            chunk = todo[start : start + NOTES_PER_CHUNK]
            fresh = self._chunk_outputs(chunk)
            done.update((o.doc_id, o) for o in fresh)
            if cache:
                append_cache(Path(cache), fresh)
            if progress:
                progress(len(chunk))
        return [self.finished(done[d.id]) for d in documents]

    def _chunk_outputs(self, documents: Sequence[Document]) -> list[NoteOutputs]:
        """Every signal on a chunk of notes, after retrieval on their segments."""
        settings = self.settings
        k = max(settings.retrieval_k, settings.candidates_k)
        notes = [
            NoteContext(
                d,
                retrieve_segments(self.fitted_retriever, d.text, settings.segment_max_words, k),
                self.translator,
            )
            for d in documents
        ]
        outputs = [NoteOutputs(doc_id=note.document.id, segments=len(note.retrieved)) for note in notes]
        for signal in self.signals.values():
            signal.score(self, notes, outputs)
        if self.phrases is not None:
            for note, output in zip(notes, outputs):
                complete_phrases(output.scored, note.document.text, self.phrases, settings.phrase_context_chars)
        return outputs

    def finished(self, note: NoteOutputs) -> NoteOutputs:
        """``note``'s stage-1 outputs with untrained, non-specific diagnosis codes renamed (see
        ``CoderSettings.specify_untrained``; a renamed code's signals merge with those of the code it now names) and
        the codes no training note carries marked ``untrained`` (``CoderSettings.untrained_threshold``)."""
        trained = self.fitted_retriever.trained_codes
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
            untrained = key not in self.fitted_retriever.trained_codes
            self._specific_codes[key] = self.ontology.default_specific_code(code, system) if untrained else code
        return self._specific_codes[key]

    def predict(self, documents: Sequence[Document]) -> list[DocumentPrediction]:
        """Code every note; a progress bar on stderr counts notes."""
        documents = list(documents)
        if self.settings.threads and (self.model is not None or self.fitted_retriever.embeddings is not None):
            import torch  # only the LLM and the retriever's embeddings run on torch: importing it costs seconds

            torch.set_num_threads(self.settings.threads)
        started = time.time()
        with progress_bar() as bar:
            task = bar.add_task("coding notes", total=len(documents))
            outputs = self.segment_outputs(documents, progress=lambda n: bar.advance(task, n))
        predictions = [self.aggregate(note, doc.language) for note, doc in zip(outputs, documents)]
        log.info(
            "coded %d notes (%d segments, %d to the LLM) in %.1f s",
            len(documents),
            sum(o.segments for o in outputs),
            sum(o.llm_segments for o in outputs),
            time.time() - started,
        )
        return predictions

    def aggregate(self, note: NoteOutputs, language: str) -> DocumentPrediction:
        """Stage 2 for a note of ``language``: its codes fused and thresholded as tuned for that language."""
        return aggregate(note, self.settings.for_language(language), trees=self.trees.get(language))

    # ------------------------------------------------------------------ tuning

    def tune(
        self, dev: Sequence[Document], outputs: list[NoteOutputs] | None = None, objective: str | None = None
    ) -> dict:
        """Grid-search fusion weights and per-system thresholds on dev (micro-F1 + MAP of D and P, or what
        ``objective`` names; default: the settings' ``tuning_objective``).

        The result, the objective with it, is kept for the language of the dev notes (see ``CoderSettings.by_language``).
        """
        from icdcoder.infer.tuning import tune_fusion, tune_tree_thresholds

        dev = list(dev)
        languages = {doc.language for doc in dev}
        if len(languages) != 1:
            raise InputError(f"tune on notes of one language at a time (got {', '.join(sorted(languages))})")
        language = languages.pop()
        outputs = outputs if outputs is not None else self.segment_outputs(dev)
        settings = self.settings.for_language(language)
        if objective is not None:
            settings = settings.model_copy(update={"tuning_objective": objective})
        if settings.fusion == "trees":
            result = tune_tree_thresholds(outputs, dev, settings, self.loaded_trees(language))
        else:
            result = tune_fusion(outputs, dev, settings)
        self.settings = self.settings.with_tuned(language, result["best_settings"])
        return result

    def trees_file_of(self, language: str) -> str:
        """The coder folder's file of the trees of ``language`` notes."""
        return language_trees_file(language, self.settings.language)

    def loaded_trees(self, language: str) -> TreeFusion:
        """The fusion trees of ``language`` notes; a clear error for a coder without them."""
        trees = self.trees.get(language)
        if trees is None:
            raise InputError(
                f"the coder has no fusion trees for '{language}' notes (fit them with icdcoder predict fit-trees)"
            )
        return trees

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path, adapter_saver: Callable | None = None) -> None:
        """Write ``model/`` (adapter + tokenizer), ``retriever/``, every signal's files, the fusion trees (if any) and
        ``coder.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.model is not None:
            if adapter_saver is not None:
                adapter_saver(self.model, directory / MODEL_DIR)
            else:
                self.model.save_pretrained(directory / MODEL_DIR)
                self.tokenizer.save_pretrained(directory / MODEL_DIR)
        if self.retriever is not None:
            self.retriever.save(directory / RETRIEVER_DIR)
        self.save_signals(directory)
        for stale in (directory / TREES_FILE, *directory.glob(trees_file("*"))):
            stale.unlink(missing_ok=True)
        for language, trees in self.trees.items():
            trees.save(directory, self.trees_file_of(language))
        self.write_settings(directory)

    def save_signals(self, directory: str | Path) -> None:
        """Write what each signal learned (``lexicon/``, ``lexicon_en/``, ``concepts.json``, ``quantities.json``), the
        glossary (``glossary.json``) and the phrase words (``phrases.json``); what the coder lacks is removed from the
        folder."""
        for signal in self.signals.values():
            signal.save(Path(directory))
        write_json_or_remove(Path(directory) / GLOSSARY_FILE, self.translator.glossary if self.translator else {})
        write_json_or_remove(Path(directory) / PHRASES_FILE, self.phrases.record() if self.phrases else {})

    def load_signals(self, directory: str | Path) -> None:
        """Read what each signal saved in a coder folder, its glossary and phrase words (a folder without them narrows
        and grows no span)."""
        for signal in self.signals.values():
            signal.load(Path(directory))
        glossary, phrases = Path(directory) / GLOSSARY_FILE, Path(directory) / PHRASES_FILE
        self.translator = WordTranslator.load(glossary) if glossary.is_file() else None
        self.phrases = PhraseCompleter.load(phrases) if phrases.is_file() else None

    def write_settings(self, directory: str | Path, extra: dict | None = None) -> None:
        """Write ``coder.json``: the settings, keeping the file's other records; ``extra`` adds or replaces some."""
        write_coder_record(Path(directory), self.settings, extra)

    @classmethod
    def load(
        cls, directory: str | Path, adapter: str | Path | None = None, check_files: bool = True, **overrides: object
    ) -> SpanPredictor:
        """A saved coder; ``overrides`` replace its saved settings, a None keeping the saved value (``use_llm=True`` to
        study an adapter the shipped settings switch off, ``dtype``, ``llm_mode``). ``adapter``: the LLM of this folder
        (a saved model or adapter, e.g. another coder's ``model/``) in place of the coder's own, to study an adapter
        under this coder's retrieval, lexicons and tuned fusion. ``check_files``: fail on a folder that lacks a file its
        settings or its ``files`` record name (:func:`~icdcoder.infer.store.check_coder_files`); off only to rebuild
        those files."""
        from icdcoder.spans.retrieval import CandidateRetriever

        directory = Path(directory)
        record, settings = read_coder_record(directory)
        settings = with_overrides(settings, overrides)
        if check_files:
            check_coder_files(directory, record, settings)
        model_dir = Path(adapter) if adapter is not None else directory / MODEL_DIR
        if adapter is not None and not model_dir.is_dir():
            raise InputError("no such adapter folder", path=model_dir)
        model, tokenizer = (
            load_for_inference(model_dir, settings.dtype) if model_dir.is_dir() and settings.use_llm else (None, None)
        )
        coder = cls(settings).attach(model, tokenizer, CandidateRetriever.load(directory / RETRIEVER_DIR))
        coder.load_signals(directory)
        counts = TrainingCounts.of(coder.fitted_retriever)
        for language in (settings.language, *settings.by_language):
            trees = coder.saved_trees(directory, language, counts, check_files)
            if trees is not None:
                coder.trees[language] = trees
        return coder

    def saved_trees(
        self, directory: Path, language: str, counts: TrainingCounts, check_files: bool
    ) -> TreeFusion | None:
        """The trees of ``language`` notes saved in ``directory``, if any; with ``check_files`` off (rebuilding files),
        trees this version cannot read are left out with a warning rather than refused, so that ``predict fit-trees``
        can refit one language's trees while the other's are stale too."""
        name = self.trees_file_of(language)
        if not (directory / name).is_file():
            return None
        try:
            return TreeFusion.load(directory, counts, name)
        except InputError as err:
            if check_files:
                raise
            log.warning("%s; left out", err)
            return None
