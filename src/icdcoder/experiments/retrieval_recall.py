"""Recall@k of the candidate retriever on gold evidence (what decides how many candidates the LLM is shown).

Fits :class:`icdcoder.spans.CandidateRetriever` on CodiEsp train and, for every gold code of ``split``, asks whether
the gold code is among the top-k candidates when the query is

* ``evidence``: the gold evidence text itself (unique per document and code), and
* ``segment``: the segment (``segment_note``) where that evidence starts, which is what the span coder reads at
  inference,

split by whether the code occurs in train.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from icdcoder.config import StrictModel
from icdcoder.experiments import Experiment
from icdcoder.experiments.common import CODIESP
from icdcoder.ontology.labels import LabelSpaceMode

KS = (1, 5, 10, 20, 30, 50)


class RetrievalRecallConfig(StrictModel):
    data_dir: Path = CODIESP
    #: the split measured (train is always the index)
    split: str = "dev"
    lang: Literal["es", "en"] = "es"
    #: the label space the retriever chooses among
    mode: LabelSpaceMode = "chapters_in_data"
    #: add the MiniLM embedding source
    embeddings: bool = False
    #: add the translated source (glossary learned from train es/en)
    translate: bool = True
    #: a RetrieverConfig YAML (``configs/spans/*.yaml``); None: the defaults
    retriever_config: Path | None = None
    #: segment length for the segment queries
    max_words: int = Field(40, ge=1)
    #: also save the fitted retriever here
    save: Path | None = None


def queries_by_kind(documents: list, max_words: int) -> dict[str, list[tuple[str, str, str]]]:
    """query kind -> [(query text, gold code, doc id)], one per unique (doc, text, code)."""
    from icdcoder.spans.segment import segment_note

    found: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for document in documents:
        segments = segment_note(document.text, max_words=max_words)
        for gold in document.codes:
            for evidence in gold.evidence:
                found["evidence"].add((evidence.text_in(document.text), gold.code, document.id))
                for segment in segments:
                    if evidence.start < segment.end:
                        found["segment"].add((segment.text(document.text), gold.code, document.id))
                        break
    return {kind: sorted(items) for kind, items in found.items()}


def recall_table(retriever, queries: list, seen_codes: set[str], ks=KS) -> dict[str, dict[str, float]]:
    """group -> {n, r@k...} for all / seen / unseen gold codes."""
    results = retriever.retrieve_many([text for text, _, _ in queries], k=max(ks))
    hits: dict[str, list[list[bool]]] = defaultdict(list)
    for (_, code, _), found in zip(queries, results):
        codes = [candidate.code for candidate in found]
        row = [code in codes[:k] for k in ks]
        hits["all"].append(row)
        hits["seen" if code in seen_codes else "unseen"].append(row)
    return {
        group: {"n": len(rows), **{f"r@{k}": round(sum(r[i] for r in rows) / len(rows), 3) for i, k in enumerate(ks)}}
        for group, rows in hits.items()
    }


def run(config: RetrievalRecallConfig) -> dict[str, Any]:
    import torch

    from icdcoder.config import load_config
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.ontology import load_ontology
    from icdcoder.ontology.labels import label_space
    from icdcoder.spans.retrieval import RetrieverConfig, build_codiesp_retriever

    torch.set_num_threads(1)
    ontology = load_ontology()
    train = load_codiesp(config.data_dir, "train", language=config.lang)
    documents = load_codiesp(config.data_dir, config.split, language=config.lang)
    space = label_space(ontology, train, mode=config.mode)
    settings = load_config(config.retriever_config, RetrieverConfig) if config.retriever_config else RetrieverConfig()
    started = time.time()
    retriever = build_codiesp_retriever(
        config.data_dir,
        ontology,
        train,
        config=settings,
        mode=config.mode,
        use_embeddings=config.embeddings,
        translate=config.translate,
    )
    fit_seconds = time.time() - started
    if config.save:
        retriever.save(config.save)
    seen_codes = {gold.code for document in train for gold in document.codes}
    gold_codes = {gold.code for document in documents for gold in document.codes}
    unseen = gold_codes - seen_codes
    in_space = {code for code, _ in space}
    report: dict[str, Any] = {
        "split": config.split,
        "lang": config.lang,
        "label_space": config.mode,
        "sources": "surface+tfidf+family"
        + ("+translated" if retriever.translator else "")
        + ("+embedding" if retriever.embeddings is not None else ""),
        "label_space_size": len(space),
        "unseen_gold_codes": len(unseen),
        "unseen_gold_codes_in_label_space": round(len(unseen & in_space) / max(1, len(unseen)), 3),
        "fit_seconds": round(fit_seconds, 1),
    }
    for kind, queries in queries_by_kind(documents, config.max_words).items():
        started = time.time()
        report[kind] = recall_table(retriever, queries, seen_codes)
        report[kind]["spans_per_second"] = round(len(queries) / (time.time() - started), 1)
    return report


def table(results: dict[str, Any]) -> str:
    lines = [
        "| query | gold codes | n | " + " | ".join(f"R@{k}" for k in KS) + " |",
        "|---|---|---|" + "---|" * len(KS),
    ]
    for kind in ("evidence", "segment"):
        for group in ("all", "seen", "unseen"):
            row = results.get(kind, {}).get(group)
            if row:
                recalls = " | ".join(f"{row[f'r@{k}']:.3f}" for k in KS)
                lines.append(f"| {kind} | {group} in train | {row['n']:,} | {recalls} |")
    lines.append(
        f"\nNotes: {results['lang']}; sources: {results['sources']}; label space `{results['label_space']}` "
        f"({results['label_space_size']:,} codes), holding {results['unseen_gold_codes_in_label_space']:.1%} of the "
        f"{results['unseen_gold_codes']:,} gold codes train never shows."
    )
    return "\n".join(lines) + "\n"


CAVEATS = """\
- The retriever is fitted on the training notes only; nothing is tuned on the split measured.
- The label space bounds recall: a gold code outside it can never be retrieved (its share is under the table).
- `fit_seconds` and `spans_per_second` in the results file depend on the machine and on what else ran on it.
"""

EXPERIMENT = Experiment(
    name="retrieval_recall",
    title="candidate retrieval recall at k on gold evidence and dev segments",
    config=RetrievalRecallConfig,
    run=run,
    table=table,
    caveats=CAVEATS,
    cost="a few minutes on one CPU core (fitting the retriever on ~60,000 codes)",
)
