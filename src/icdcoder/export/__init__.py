"""Exports of coded (and reviewed) notes: a FHIR R4 ``Bundle`` (:mod:`.fhir`), CodiEsp TSV and canonical JSONL
(:mod:`.formats`), read from a predictions file by ``icdcoder export`` (:mod:`.cli`) or from the workstation's
database by ``icdcoder serve``.

Every exporter reads *records*: the ``predict jsonl`` / ``code --json`` record of a note (``id``, ``codes``,
``excluded``), where a reviewed note's codes may also carry ``review`` (``accepted``, ``added``) and its rejected codes
sit in ``excluded`` with reason ``rejected`` (see :func:`icdcoder.serve.review.export_record`).
"""
