"""Span-level data for code-centric learning: segmentation (:mod:`~icdcoder.spans.segment`), span/document examples
(:mod:`~icdcoder.spans.examples`), code-centric expansion from the code system (:mod:`~icdcoder.spans.expansion`),
candidate retrieval for prompts (:mod:`~icdcoder.spans.retrieval`), lexicon matching (:mod:`~icdcoder.spans.lexicon`).

Import from the modules: the package imports none of them, so that a low layer (sentence alignment in
:mod:`icdcoder.data`) can use the sentence splitter without loading the rest.
"""
