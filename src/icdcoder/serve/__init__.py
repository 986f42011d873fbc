"""``icdcoder serve``: the coding workstation.

An HTTP API (FastAPI) over a coder loaded once (:mod:`.coding`), a bounded work queue shared by single-note requests
and batch jobs (:mod:`.jobs`), a database of notes, review decisions and an append-only audit trail (:mod:`.db`,
Alembic migrations in ``migrations/``), and the review page (``static/``) served at ``/``.
"""
