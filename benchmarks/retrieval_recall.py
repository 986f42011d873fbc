"""Recall@k of the candidate retriever on gold evidence spans (decides k for the LLM coder).

Fits :class:`icdcoder.spans.CandidateRetriever` on CodiEsp train and, for every
gold code of the chosen split, asks whether the gold code is among the top-k
candidates when the query is

* ``evidence``: the gold evidence text itself (unique per document and code), and
* ``segment``: the segment (``segment_note``) where that evidence starts, which is
  what the span coder sees at inference,

split by whether the code occurs in train. Example::

    python benchmarks/retrieval_recall.py --data-dir ../shared/data/codiesp --split dev --lang es
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import typer

app = typer.Typer(add_completion=False)
KS = (1, 5, 10, 20, 30, 50)


def _queries(documents, max_words: int) -> dict[str, list[tuple[str, str, str]]]:
    """query kind -> [(query text, gold code, doc id)], one per unique (doc, text, code)."""
    from icdcoder.spans import segment_note

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


def _recall_table(retriever, queries, seen_codes: set[str], ks=KS) -> dict[str, dict[str, float]]:
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


@app.command()
def main(
    data_dir: Path = typer.Option(..., help="CodiEsp folder (official layout)"),
    split: str = typer.Option("dev", help="split to measure on (train is always the index)"),
    lang: str = typer.Option("es", help="es or en"),
    mode: str = typer.Option("chapters_in_data", help="label space: chapters_in_data, seen, all"),
    embeddings: bool = typer.Option(False, help="add the MiniLM embedding source (English)"),
    translate: bool = typer.Option(True, help="add the translated source (glossary learned from train es/en)"),
    config: Path = typer.Option(None, help="RetrieverConfig YAML (configs/spans/*.yaml)"),
    max_words: int = typer.Option(40, help="segment length for the segment queries"),
    save: Path = typer.Option(None, help="also save the fitted retriever here"),
    json_out: Path = typer.Option(None, "--json", help="write the numbers as JSON here"),
) -> None:
    import torch

    torch.set_num_threads(1)
    from icdcoder.config import load_config
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.ontology import load_ontology
    from icdcoder.ontology.labels import label_space
    from icdcoder.spans import RetrieverConfig, build_codiesp_retriever

    ontology = load_ontology()
    train = load_codiesp(data_dir, "train", language=lang)
    documents = load_codiesp(data_dir, split, language=lang)
    space = label_space(ontology, train, mode=mode)
    settings = load_config(config, RetrieverConfig) if config else RetrieverConfig()
    started = time.time()
    retriever = build_codiesp_retriever(
        data_dir, ontology, train, config=settings, mode=mode, use_embeddings=embeddings, translate=translate
    )
    fit_seconds = time.time() - started
    if save:
        retriever.save(save)
    seen_codes = {gold.code for document in train for gold in document.codes}
    gold_codes = {gold.code for document in documents for gold in document.codes}
    unseen = gold_codes - seen_codes
    in_space = {code for code, _ in space}
    report = {
        "split": split,
        "lang": lang,
        "label_space": mode,
        "sources": "surface+tfidf+family"
        + ("+translated" if retriever.translator else "")
        + ("+embedding" if retriever.embeddings is not None else ""),
        "label_space_size": len(space),
        "unseen_gold_codes": len(unseen),
        "unseen_gold_codes_in_label_space": round(len(unseen & in_space) / max(1, len(unseen)), 3),
        "fit_seconds": round(fit_seconds, 1),
    }
    for kind, queries in _queries(documents, max_words).items():
        started = time.time()
        report[kind] = _recall_table(retriever, queries, seen_codes)
        report[kind]["spans_per_second"] = round(len(queries) / (time.time() - started), 1)
    _print(report)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))


def _print(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print({key: value for key, value in report.items() if not isinstance(value, dict)})
    for kind in ("evidence", "segment"):
        table = Table(title=f"query = {kind} ({report[kind]['spans_per_second']} spans/s)")
        table.add_column("gold code")
        table.add_column("n", justify="right")
        for k in KS:
            table.add_column(f"R@{k}", justify="right")
        for group in ("all", "seen", "unseen"):
            row = report[kind].get(group)
            if row:
                table.add_row(group, str(row["n"]), *(f"{row[f'r@{k}']:.3f}" for k in KS))
        console.print(table)


if __name__ == "__main__":
    app()
