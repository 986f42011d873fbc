"""Turn a corpus into SFT examples: spans, documents, expansion, candidates -> a ``datasets.Dataset``.

Every prompt/completion pair goes through ``icdcoder.spans.to_prompt_completion``
(which uses ``icdcoder.prompt``), so SFT, RL and inference read the same format.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import Counter
from collections.abc import Sequence

from icdcoder.data.schema import Document
from icdcoder.infer.signals.base import TrainingNotes
from icdcoder.ontology.labels import CODER_SYSTEMS
from icdcoder.prompt import Candidate
from icdcoder.train.config import DataSettings

log = logging.getLogger(__name__)


def load_training_documents(settings: DataSettings) -> list[Document]:
    """The documents named by ``settings``: its JSONL file, or its CodiEsp folder, split and language.

    The span coder writes ICD-10-CM and ICD-10-PCS codes; notes that carry none of them (ICD-9 notes) are refused
    here rather than yielding a coder that never codes."""
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.data.schema import load_documents
    from icdcoder.errors import InputError

    if settings.documents_jsonl is not None:
        source = settings.documents_jsonl
        documents = load_documents(source, {"language": settings.lang})
    elif settings.data_dir is not None:
        source = settings.data_dir
        documents = load_codiesp(source, settings.split, language=settings.lang)
    else:
        raise InputError("field 'data': give data_dir (a CodiEsp folder) or documents_jsonl (notes as JSONL)")
    if settings.max_documents is not None:
        documents = documents[: settings.max_documents]
    if not any(gold.system in CODER_SYSTEMS for document in documents for gold in document.codes):
        raise InputError(
            "no training note carries an ICD-10-CM or ICD-10-PCS code (the span coder writes those)", path=source
        )
    return documents


def fit_retriever(documents: Sequence[Document], ontology):
    """The candidate retriever used for training prompts and, later, inference."""
    from icdcoder.spans.retrieval import CandidateRetriever

    retriever = CandidateRetriever()
    retriever.fit(list(documents), ontology)
    return retriever


def english_training_notes(documents: Sequence[Document], settings: DataSettings) -> list[Document]:
    """The training notes in English: the notes themselves, or, for Spanish notes, their English versions when the
    CodiEsp split ships them (none otherwise: a JSONL translation has no evidence offsets of its own)."""
    from icdcoder.data.codiesp import load_codiesp, split_dir

    if settings.lang == "en":
        return list(documents)
    if settings.documents_jsonl is not None or settings.data_dir is None:
        return []
    if not (split_dir(settings.data_dir, settings.split) / "text_files_en").is_dir():
        return []
    wanted = {doc.id for doc in documents}
    return [doc for doc in load_codiesp(settings.data_dir, settings.split, language="en") if doc.id in wanted]


def training_notes(documents: Sequence[Document], settings: DataSettings) -> TrainingNotes:
    """What the coder's signals learn from (:mod:`icdcoder.infer.signals`): the notes, their English versions, their
    language and whether lexicons are wanted (``settings.lexicons``)."""
    english = english_training_notes(documents, settings)
    return TrainingNotes(list(documents), english, settings.lang, settings.lexicons)


def fit_coder_lexicons(coder, documents: Sequence[Document], settings: DataSettings) -> dict[str, str]:
    """Give ``coder`` what it learns from the training notes besides retrieval and the LLM: every signal fitted
    (lexicons, concept reliabilities, value templates; see :mod:`icdcoder.infer.signals`); returns the fit's report
    (:meth:`~icdcoder.infer.coder.SpanPredictor.fit_signals`)."""
    return coder.fit_signals(training_notes(documents, settings))


def _describe(retriever, code: str, system: str, doc_id: str | None) -> str:
    """The retriever's short description, non-leaky for ``doc_id``; empty for codes it does not know."""
    if (code, system) not in retriever.code_index:
        return ""
    return retriever.short_description((code, system), doc_id)


def _with_candidates(examples: list, retriever, k: int, gold_share: float, rng: random.Random) -> list:
    """Attach non-leaky retrieved candidates.

    With probability ``gold_share`` the gold codes are put among them (at random
    positions), otherwise taken out, so the model learns both to pick from the
    list and to write a code it was not offered.
    """
    retrieved = retriever.retrieve_many(
        [example.text for example in examples], k=k, exclude_doc_ids=[example.doc_id or None for example in examples]
    )
    result = []
    for example, found in zip(examples, retrieved):
        gold = sorted({(code, system) for code, system, _quote in example.targets})
        candidates = [Candidate(c.code, c.description) for c in found if (c.code, c.system) not in gold]
        if gold and rng.random() < gold_share:
            candidates = candidates[: max(k - len(gold), 0)]
            for code, system in gold:
                candidates.insert(
                    rng.randint(0, len(candidates)),
                    Candidate(code, _describe(retriever, code, system, example.doc_id or None)),
                )
        result.append(dataclasses.replace(example, candidates=tuple(candidates[: max(k, len(gold))])))
    return result


def _share_of(extra: list, share: float | None, others: int, rng: random.Random) -> list:
    """A random sample of ``extra`` that makes up ``share`` of ``extra + others`` (all of it when ``share`` is None)."""
    if share is None:
        return extra
    wanted = round(share * others / (1 - share))
    return rng.sample(extra, wanted) if wanted < len(extra) else extra


def build_examples(
    documents: Sequence[Document], settings: DataSettings, ontology, retriever=None, seed: int = 0
) -> list:
    """All training examples the settings ask for, mixed and capped."""
    from icdcoder.ontology.labels import label_space
    from icdcoder.spans.examples import build_document_examples, build_span_examples, mix_examples
    from icdcoder.spans.expansion import expand_from_ontology

    documents = list(documents)
    if settings.silver_evidence:
        from icdcoder.spans.silver import with_silver_evidence

        documents, silver = with_silver_evidence(documents, ontology, settings.silver_min_share)
        log.info(
            "silver evidence located for %d gold codes without offsets (%d not found)", silver.located, silver.missing
        )
    span_examples: list = []
    if settings.spans:
        span_examples = build_span_examples(
            documents,
            max_words=settings.span_max_words,
            context_words=settings.span_context_words,
            negative_ratio=settings.negative_ratio,
            seed=seed,
        )
    if settings.expansion:
        codes = label_space(ontology, documents, mode=settings.expansion_label_space)
        expanded = expand_from_ontology(
            ontology, codes, documents, per_code_cap=settings.expansion_per_code_cap, seed=seed
        )
        span_examples = span_examples + _share_of(
            expanded, settings.expansion_share, len(span_examples), random.Random(seed)
        )
    doc_examples: list = []
    if settings.document_ratio > 0:
        doc_examples = build_document_examples(documents, max_words=settings.document_max_words)
    if span_examples and doc_examples:
        examples = mix_examples(
            span_examples, doc_examples, doc_ratio=settings.document_ratio, schedule=settings.mix_schedule, seed=seed
        )
    else:
        examples = list(span_examples or doc_examples)
        random.Random(seed).shuffle(examples)
    examples = [e for e in examples if all(system in CODER_SYSTEMS for _c, system, _q in e.targets)]
    if settings.max_examples is not None:
        examples = examples[: settings.max_examples]
    if settings.candidates_k > 0 and retriever is not None:
        examples = _with_candidates(
            examples, retriever, settings.candidates_k, settings.gold_in_candidates, random.Random(seed + 1)
        )
    return examples


def provenance_counts(examples: Sequence) -> dict[str, int]:
    """How many examples came from each source (span, span:negative, document, expansion:...)."""
    return dict(Counter(example.provenance for example in examples))


def to_dataset(examples: Sequence, eos_token: str):
    """A ``datasets.Dataset`` of prompt/completion pairs; every completion ends with EOS."""
    from datasets import Dataset

    from icdcoder.spans.examples import to_prompt_completion

    rows: dict[str, list[str]] = {"prompt": [], "completion": []}
    for example in examples:
        pair = to_prompt_completion(example)
        rows["prompt"].append(pair["prompt"])
        rows["completion"].append(pair["completion"] + eos_token)
    return Dataset.from_dict(rows)
