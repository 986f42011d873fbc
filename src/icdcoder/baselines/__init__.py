"""Baseline coders measured against the LLM coders under the same protocol.

``tfidf`` (:mod:`.tfidf`) and ``dictionary`` (:mod:`.dictionary`, around the
surface-form index of :mod:`icdcoder.spans.lexicon`) live here with their shared helpers (:mod:`.base`);
``laat``, ``plm`` and ``prompt`` are neural baselines. All implement
:class:`icdcoder.predictor.Predictor` and are found through
:func:`icdcoder.registry.predictor_class`.
"""
