"""Baseline coders measured against the LLM coders under the same protocol.

``tfidf`` (:mod:`.tfidf`) and ``dictionary`` (:mod:`.dictionary`, whose
:class:`~icdcoder.baselines.dictionary.SurfaceFormIndex` is reusable for
candidate retrieval) live here with their shared helpers (:mod:`.base`);
``laat``, ``plm`` and ``prompt`` are neural baselines. All implement
:class:`icdcoder.predictor.Predictor` and are found through
:func:`icdcoder.registry.predictor_class`.
"""
