"""The benchmarked coder's predictions on CodiEsp dev, pinned by digest: a restructuring must leave them byte-identical.

The digest covers every prediction the benchmarked coder (``icdcoder/models/benchmark``, the one every dev score in the
docs is of; the shipped ``default`` is it refitted by ``icdcoder train refit``) makes on the first
``PINNED_NOTES`` dev notes (by id; all 250 took a minute of the suite's 15, 100 half of one), in Spanish (with their
English translations) and in English: codes, systems, scores, evidence and sentence evidence,
the candidates below the threshold, and the dropped-output counts. It is taken on :meth:`SpanPredictor.predict`
itself, so the assertion traits and profiles that the CLI adds on top do not move it.

When the coder is *meant* to change (new model files, a new signal, a retuned fusion), rerun with
``ICDCODER_UPDATE_CODER_DIGEST=1`` to record the new digests, and say in the commit why they changed::

    ICDCODER_UPDATE_CODER_DIGEST=1 .venv/bin/python -m pytest -q tests/test_coder_identity.py
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

DIGEST_FILE = Path(__file__).resolve().parent / "data" / "coder_dev_digest.json"
BENCHMARK_CODER = Path(__file__).resolve().parent.parent / "src" / "icdcoder" / "models" / "benchmark"
#: (note language, whether Spanish notes carry their English translation): the paths ``predict codiesp`` takes
RUNS = {"es": ("es", True), "en": ("en", False)}
#: the dev notes pinned
PINNED_NOTES = 60


def predictions_digest(predictions) -> str:
    """SHA-256 of the predictions as canonical JSON (one line per note, in order)."""
    digest = hashlib.sha256()
    for prediction in predictions:
        record = {
            "id": prediction.doc_id,
            "codes": [
                [
                    code.code,
                    code.system,
                    code.score,
                    [list(e.pieces) for e in code.evidence],
                    [list(e.pieces) for e in code.sentence_evidence],
                ]
                for code in prediction.codes
            ],
            "candidates": [[c.code, c.system, c.score] for c in prediction.candidates],
            "dropped": dict(sorted(prediction.dropped.items())),
        }
        digest.update((json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
    return digest.hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("run", sorted(RUNS))
def test_benchmark_coder_dev_predictions_unchanged(codiesp_dir, run):
    from icdcoder.data.codiesp import load_codiesp
    from icdcoder.registry import predictor_class

    language, with_translation = RUNS[run]
    documents = load_codiesp(codiesp_dir, "dev", language=language, with_translation=with_translation, labelled=False)
    documents = documents[:PINNED_NOTES]
    predictions = predictor_class("span").load(BENCHMARK_CODER).predict(documents)
    digest = predictions_digest(predictions)
    recorded = json.loads(DIGEST_FILE.read_text(encoding="utf-8")) if DIGEST_FILE.is_file() else {}
    if os.environ.get("ICDCODER_UPDATE_CODER_DIGEST") == "1":
        recorded[run] = {"notes": len(documents), "sha256": digest}
        DIGEST_FILE.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert run in recorded, f"no digest recorded for '{run}' (see the module docstring to record one)"
    assert recorded[run] == {"notes": len(documents), "sha256": digest}, (
        "the benchmarked coder's dev predictions changed; if that is meant, record the new digest (module docstring)"
    )
