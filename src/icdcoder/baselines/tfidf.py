"""TF-IDF + one-vs-rest logistic regression over the codes seen in training.

Word 1-2 grams with sublinear tf feed one binary logistic regression per code
(scikit-learn's ``OneVsRestClassifier``). After training, the per-code weights
are pruned of near-zero entries and kept as one sparse matrix, so the saved
model and prediction stay small although there are thousands of codes. Scores
are probabilities; one decision threshold per sub-task (diagnoses, procedures)
is tuned on dev for micro-F1. Evidence, cheap to get: the n-gram that
contributed most to the code's score, at its first occurrence in the note.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from icdcoder.baselines.base import (
    CODE_GROUPS,
    code_group,
    fit_report_from_meta,
    gold_by_group,
    measured_fit,
    read_meta,
    tune_threshold,
    write_meta,
)
from icdcoder.config import StrictModel
from icdcoder.data.schema import Document, Evidence
from icdcoder.errors import InputError
from icdcoder.evaluate.thresholds import THRESHOLDS
from icdcoder.io import atomic_write
from icdcoder.ontology.labels import code_key, split_key
from icdcoder.predictor import (
    CodePrediction,
    DocumentPrediction,
    FitReport,
    Predictor,
    ranking_candidates,
    top_scored,
)
from icdcoder.spans.lexicon import Token, tokenize

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfVectorizer

MODEL_FILE = "tfidf_model.joblib"
#: a probability below the smallest positive tuning threshold is never a prediction (thousands per note otherwise)
SCORE_FLOOR = min(threshold for threshold in THRESHOLDS if threshold > 0)


class TfidfConfig(StrictModel):
    """Settings of the TF-IDF + logistic regression baseline."""

    ngram_max: int = 2
    min_df: int = 2
    max_features: int | None = 100_000
    sublinear_tf: bool = True
    #: inverse regularisation strength of each logistic regression: with 500 notes and thousands of codes, weak
    #: regularisation scored best on CodiEsp dev (the values tried are in CHANGELOG.md)
    C: float = 1000.0
    #: weights smaller than this (in absolute value) are dropped after training
    prune_below: float = 0.05
    #: solver iterations per code (weak regularisation converges slowly; see ``codes_not_converged``)
    max_iter: int = 100
    #: a fixed decision threshold; ``None`` tunes one per sub-task on dev (0.5 without dev)
    threshold: float | None = None
    #: at most this many codes (those above the threshold, best first) are asserted per note
    max_codes_per_note: int = 50


class TfidfPredictor(Predictor):
    """Bag-of-n-grams multi-label classifier; the classic discriminative baseline."""

    name = "tfidf"
    config_model = TfidfConfig

    def __init__(self, config: TfidfConfig | None = None):
        self.config = config or TfidfConfig()
        self.vectorizer: TfidfVectorizer | None = None
        self._names: np.ndarray | None = None
        self.labels: list[str] = []
        self.weights: csr_matrix | None = None  # (codes, features)
        self.intercepts: np.ndarray = np.zeros(0)
        fixed = 0.5 if self.config.threshold is None else self.config.threshold
        self.thresholds: dict[str, float] = dict.fromkeys(CODE_GROUPS, fixed)
        self.fit_report = FitReport()

    def fit(self, train: Sequence[Document], dev: Sequence[Document] | None = None) -> FitReport:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not train:
            raise InputError("no training documents")
        report = FitReport()
        with measured_fit(report):
            self._names = None
            self.vectorizer = TfidfVectorizer(
                ngram_range=(1, self.config.ngram_max),
                min_df=min(self.config.min_df, len(train)),
                max_features=self.config.max_features,
                sublinear_tf=self.config.sublinear_tf,
                strip_accents="unicode",
                dtype=np.float32,
            )
            features = self.vectorizer.fit_transform([doc.text for doc in train])
            self.labels = sorted({code_key(g.code, g.system) for doc in train for g in doc.codes})
            if not self.labels:
                raise InputError("the training documents carry no codes")
            not_converged = self._fit_classifiers(features, train)
            report.extra.update(codes=len(self.labels), features=features.shape[1], weights=int(self._trained()[1].nnz))
            report.extra["codes_not_converged"] = not_converged
            report.train_tokens = sum(len(tokenize(doc.text)) for doc in train)  # words read in training
            if dev and self.config.threshold is None:
                scored = self.code_probabilities([doc.text for doc in dev])
                for group, systems in CODE_GROUPS.items():
                    per_doc = [{k: s for k, s in doc.items() if split_key(k)[1] in systems} for doc in scored]
                    threshold, f1 = tune_threshold(per_doc, gold_by_group(dev, group))
                    self.thresholds[group] = threshold
                    report.extra[f"{group}_threshold"] = threshold
                    report.extra[f"{group}_dev_micro_f1"] = round(f1, 4)
        self.fit_report = report
        return report

    def _fit_classifiers(self, features, train: Sequence[Document]) -> int:
        """One logistic regression per code, then keep the weights as one pruned sparse matrix.

        Returns how many codes' solvers stopped at ``max_iter`` (counted, not printed:
        one warning per code would flood the terminal).
        """
        from scipy import sparse
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.preprocessing import MultiLabelBinarizer

        binarizer = MultiLabelBinarizer(classes=self.labels)
        targets = binarizer.fit_transform([{code_key(g.code, g.system) for g in doc.codes} for doc in train])
        # the dual solver is ~30x faster here: far more features than notes
        solver = LogisticRegression(C=self.config.C, solver="liblinear", dual=True, max_iter=self.config.max_iter)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            classifier = OneVsRestClassifier(solver).fit(features, targets)
        rows, intercepts = [], []
        for estimator in classifier.estimators_:
            coef = np.asarray(getattr(estimator, "coef_", np.zeros((1, features.shape[1]))), dtype=np.float32)
            coef[np.abs(coef) < self.config.prune_below] = 0.0
            rows.append(sparse.csr_matrix(coef))
            # a code present in every note gets a constant predictor: a large intercept
            intercepts.append(float(np.ravel(getattr(estimator, "intercept_", [10.0]))[0]))
        self.weights = sparse.vstack(rows).tocsr()
        self.intercepts = np.asarray(intercepts, dtype=np.float32)
        return sum(issubclass(warning.category, ConvergenceWarning) for warning in caught)

    def _trained(self) -> tuple[TfidfVectorizer, csr_matrix]:
        """The vectorizer and the codes' weights; a clear error before ``fit`` or ``load``."""
        if self.vectorizer is None or self.weights is None:
            raise InputError("the tfidf coder is not trained (fit or load it first)")
        return self.vectorizer, self.weights

    def _probabilities(self, texts: Sequence[str]) -> tuple[csr_matrix, np.ndarray]:
        vectorizer, weights = self._trained()
        features = vectorizer.transform(texts)
        logits = (features @ weights.T).toarray() + self.intercepts
        return features, 1.0 / (1.0 + np.exp(-logits))

    def code_probabilities(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Per text, code key -> probability, for every code scored at least ``SCORE_FLOOR`` (threshold-free: what
        tuning reads, and what another model can take as a feature)."""
        _, probabilities = self._probabilities(texts)
        return [{self.labels[i]: float(row[i]) for i in np.flatnonzero(row >= SCORE_FLOOR)} for row in probabilities]

    def predict(self, documents: Sequence[Document]) -> list[DocumentPrediction]:
        if not documents:
            return []
        features, probabilities = self._probabilities([doc.text for doc in documents])
        weights = self._trained()[1]
        label_pairs = [split_key(key) for key in self.labels]
        group_of_label = np.array([code_group(system) for _, system in label_pairs])
        cutoffs = np.array([max(self.thresholds[group], SCORE_FLOOR) for group in group_of_label], dtype=np.float32)
        predictions = []
        for row, doc in enumerate(documents):
            chosen = np.flatnonzero(probabilities[row] >= cutoffs)
            chosen = chosen[np.argsort(-probabilities[row, chosen], kind="stable")][: self.config.max_codes_per_note]
            # the vectorizer's tokens: words of two or more characters, lower-cased, without accents
            tokens = [token for token in tokenize(doc.text) if len(token.norm) > 1]
            codes = []
            for label in chosen.tolist():
                code, system = label_pairs[label]
                evidence = self._top_ngram_evidence(weights[label], features[row], tokens)
                codes.append(CodePrediction(code, system, round(float(probabilities[row, label]), 6), evidence))
            ranked = [
                (code, system, round(p, 6))
                for code, system, p in top_scored(probabilities[row], label_pairs, SCORE_FLOOR)
            ]
            candidates = ranking_candidates(codes, ranked)
            predictions.append(DocumentPrediction(doc_id=doc.id, codes=codes, candidates=candidates))
        return predictions

    def _top_ngram_evidence(
        self, label_weights: csr_matrix, feature_row: csr_matrix, tokens: list[Token]
    ) -> list[Evidence]:
        """Where the n-gram contributing most to a code (its weights ``label_weights``) first occurs (none if no n-gram
        adds to it)."""
        contributions = feature_row.multiply(label_weights).tocoo()
        if contributions.nnz == 0 or contributions.data.max() <= 0:
            return []
        words = self._feature_names[int(contributions.col[int(np.argmax(contributions.data))])].split(" ")
        for start in range(len(tokens) - len(words) + 1):
            if all(tokens[start + i].norm == word for i, word in enumerate(words)):
                return [Evidence(pieces=((tokens[start].start, tokens[start + len(words) - 1].end),))]
        return []

    @property
    def _feature_names(self) -> np.ndarray:
        if self._names is None:
            self._names = self._trained()[0].get_feature_names_out()
        return self._names

    def save(self, directory: str | Path) -> None:
        import joblib

        if self.vectorizer is None:
            raise InputError("the tfidf coder is not trained (fit it before saving)")
        directory = Path(directory)
        state = {"vectorizer": self.vectorizer, "labels": self.labels, "weights": self.weights,
                 "intercepts": self.intercepts}  # fmt: skip
        with atomic_write(directory / MODEL_FILE, mode="wb") as handle:
            joblib.dump(state, handle, compress=3)
        write_meta(directory, self.name, self.config, self.fit_report, thresholds=self.thresholds)

    @classmethod
    def load(cls, directory: str | Path) -> TfidfPredictor:
        import joblib

        directory = Path(directory)
        meta = read_meta(directory, cls.name)
        predictor = cls(TfidfConfig.model_validate(meta["config"]))
        path = directory / MODEL_FILE
        if not path.is_file():
            raise InputError("model file not found", path=path)
        state = joblib.load(path)
        predictor.vectorizer, predictor.labels = state["vectorizer"], state["labels"]
        predictor.weights, predictor.intercepts = state["weights"], state["intercepts"]
        predictor.thresholds.update({group: float(value) for group, value in meta.get("thresholds", {}).items()})
        predictor.fit_report = fit_report_from_meta(meta)
        return predictor
