"""Shared fixtures. Real data is read from ../shared and skipped, with the reason, when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CODIESP_DIR = Path(os.environ.get("ICDCODER_CODIESP_DIR", REPO.parent / "shared" / "data" / "codiesp"))


@pytest.fixture(scope="session")
def codiesp_dir() -> Path:
    """The CodiEsp corpus (train + dev) beside the repo; skips when it is not there."""
    if not (CODIESP_DIR / "train" / "trainD.tsv").is_file():
        pytest.skip(f"CodiEsp data not found at {CODIESP_DIR} (set ICDCODER_CODIESP_DIR)")
    return CODIESP_DIR


@pytest.fixture(scope="session")
def ontology():
    """The full ICD ontology (all four systems), loaded once per test session."""
    from icdcoder.ontology import load_ontology

    return load_ontology()


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama with the SmolLM2 tokenizer: real code paths, seconds to train."""
    from icdcoder.models.loading import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture()
def fold_coders_with_retrieval_only(monkeypatch):
    """Coders fitted on training folds keep only their retriever: fitting the other signals reads every ontology
    title (seconds a fold whatever the notes), and the tests that use this one check what surrounds the fold coders
    (experiments, fit-trees' languages and inputs); test_fit_trees_saves_trees_the_coder_then_fuses_by fits them whole."""
    import icdcoder.train.data as train_data

    monkeypatch.setattr(train_data, "fit_coder_lexicons", lambda coder, documents, settings: None)
