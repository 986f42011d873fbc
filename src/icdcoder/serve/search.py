"""Code search for the review page: search-as-you-type over codes, English titles and Spanish clinical words.

Built on :func:`icdcoder.ontology.search.search_codes` (titles, inclusion terms and the Spanish forms of the training
evidence, accent- and case-insensitive), with what typing needs on top: a code typed as such (``i21``, ``I21.3``,
``bw03zzz``) comes first with its children, and a last word still being typed (``infart``) is completed from the
words of the Spanish forms (the most used completions first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from icdcoder.ontology.search import search_codes, spanish_forms, words_of

#: the systems a reviewer assigns (CodiEsp's)
REVIEW_SYSTEMS = ("icd10cm", "icd10pcs")
#: completions of a last, unfinished word tried per query
COMPLETIONS = 3
_CODE_LIKE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.]{1,7}$")


@dataclass(frozen=True)
class Hit:
    code: str
    system: str
    description: str
    #: what matched: the ``code`` itself, a ``title`` (or inclusion term), or a ``spanish`` form (its text in ``form``)
    matched: str
    form: str = ""

    def as_dict(self) -> dict:
        return {
            "code": self.code,
            "system": self.system,
            "description": self.description,
            "matched": self.matched,
            "form": self.form,
        }


class CodeSearch:
    """Search over the ontology and the training evidence forms (loaded once, when built)."""

    def __init__(self):
        from icdcoder.ontology import load_ontology

        self.ontology = load_ontology()
        _forms, postings = spanish_forms()
        #: each form word and how many forms hold it, the most used first (what an unfinished word completes to)
        self.vocabulary = sorted(postings, key=lambda word: (-len(postings[word]), word))
        self.words = frozenset(postings)

    def search(self, query: str, limit: int = 20, system: str | None = None) -> list[Hit]:
        systems = (system,) if system else REVIEW_SYSTEMS
        hits: dict[tuple[str, str], Hit] = {}
        for hit in [*self._by_code(query, systems), *self._by_words(query, systems, limit)]:
            hits.setdefault((hit.code, hit.system), hit)
        return list(hits.values())[:limit]

    def _by_code(self, query: str, systems: tuple[str, ...]) -> list[Hit]:
        """The code typed, then its first children (``I21`` lists I21 and I21.0 ...)."""
        query = query.strip()
        if not _CODE_LIKE.match(query) or not any(ch.isdigit() for ch in query):
            return []
        found = self.ontology.resolve(query, systems)
        if found is None:
            return []
        code, system = found
        codes = [code, *self.ontology.children(code, system)[:10]]
        return [Hit(c, system, self.ontology.describe(c, system), "code") for c in codes]

    def _by_words(self, query: str, systems: tuple[str, ...], limit: int) -> list[Hit]:
        """Whole words first, then the query with its last word completed."""
        head = query.split()[:-1]
        queries = [query, *(" ".join([*head, word]) for word in self._completions(query))]
        hits = []
        for text in queries:
            for system in systems:
                hits += [
                    Hit(h.code, h.system, h.description, h.source, h.matched if h.source == "spanish" else "")
                    for h in search_codes(text, system=system, limit=limit, ontology=self.ontology)
                ]
        return hits

    def _completions(self, query: str) -> list[str]:
        """Form words the last typed word begins (``infart`` -> ``infarto``), unless it is a whole word already."""
        words = query.split()
        if not words:
            return []
        last = words_of(words[-1])
        if len(last) != 1:
            return []
        prefix = next(iter(last))
        if len(prefix) < 3 or prefix in self.words:
            return []
        return [word for word in self.vocabulary if word.startswith(prefix)][:COMPLETIONS]
