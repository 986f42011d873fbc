"""Would MiniLM embeddings of the code titles, queried with the English translation, help the shipped coder?

    python benchmarks/translation_embeddings.py --data-dir ../shared/data/codiesp

The question behind it: unseen-code recall. Every code of the retriever's label space (~55k titles) is
embedded (cached under ~/.cache/icdcoder, ~10 min on 2 CPU cores the first time); each segment of a dev
note's translation keeps its ``--top`` nearest codes, scored ``(cosine - floor) / (1 - floor)``. That score
is fused as one more signal with the shipped coder's (LLM off, so the signal borrows the LLM's slot and
weight) and the thresholds are re-tuned on dev for each weight. Prints one JSON line per weight: D/P
micro-F1 and MAP, and the recall of dev diagnosis codes never seen in training.
"""

from __future__ import annotations

import json

from icdcoder.experiments.common import coder_and_notes, script_parser, weight_rows


def add_embedding_signal(coder, documents, outputs, top: int, floor: float) -> None:
    """Append each note's embedding hits (best score per code) to its stage-1 outputs, in the ``llm`` slot."""
    import numpy as np

    from icdcoder.infer.signals import ScoredCode
    from icdcoder.ontology.labels import CODER_SYSTEMS
    from icdcoder.spans import segment_note

    retriever = coder.retriever
    titles = [
        coder.ontology.describe(code, system) if coder.ontology.get(code, system) else ""
        for code, system in retriever.codes
    ]
    vectors = retriever.embed_code_titles(titles)
    for document, note in zip(documents, outputs):
        texts = [
            segment.text(document.translation)
            for segment in segment_note(document.translation, max_words=coder.settings.segment_max_words)
        ]
        if not texts:
            continue
        best: dict[tuple[str, str], float] = {}
        for row in retriever.embed_texts(texts) @ vectors.T:
            for index in np.argpartition(-row, top)[:top]:
                key = retriever.codes[index]
                best[key] = max(best.get(key, 0.0), max(0.0, (float(row[index]) - floor) / (1 - floor)))
        note.scored.extend(
            ScoredCode(code, system, signals={"llm": value})
            for (code, system), value in best.items()
            if system in CODER_SYSTEMS
        )


def main() -> None:
    parser = script_parser(__doc__.splitlines()[0], weights=[0.0, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--top", type=int, default=5, help="nearest codes kept per translation segment")
    parser.add_argument("--floor", type=float, default=0.3, help="cosine that scores 0")
    args = parser.parse_args()
    coder, dev, train_counts = coder_and_notes(args.model, args.data_dir, "es")
    outputs = coder.segment_outputs(dev)
    add_embedding_signal(coder, dev, outputs, args.top, args.floor)
    for row in weight_rows(coder, dev, outputs, train_counts, args.weights, "llm_weight", args.one_threshold):
        print(json.dumps({"top": args.top, "floor": args.floor, **row}), flush=True)


if __name__ == "__main__":
    main()
