"""``icdcoder serve``: the workstation (API + review page) on one port. See ``docs/serve.md``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from icdcoder.errors import InputError


def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; anything but loopback needs --token-file.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port.")] = 8000,
    db: Annotated[
        str | None, typer.Option("--db", help="SQLAlchemy URL or SQLite file path (default: ./icdcoder-serve.sqlite).")
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Saved coder folder (default: the shipped model).")
    ] = None,
    system: Annotated[str, typer.Option("--system", help="tfidf|dictionary|laat|plm|prompt|span")] = "span",
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="API tokens, 'TOKEN [USER]' a line; every request must carry one."),
    ] = None,
    load: Annotated[
        Path | None,
        typer.Option(
            "--load", help="Notes (canonical JSONL) to code into the review queue; ids already there are skipped."
        ),
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="--load: language of notes that name none (es or en).")] = "es",
    profile: Annotated[str, typer.Option("--profile", help="--load: clinical or codiesp.")] = "clinical",
    queue_bound: Annotated[
        int, typer.Option("--queue-bound", min=1, help="Requests that may wait for the coder (429 beyond).")
    ] = 64,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Notes coded at once.")] = 8,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1, help="Largest request body (413 beyond).")
    ] = 4_000_000,
) -> None:
    """Serve the coding API and the review page; the coder loads once. Stop with Ctrl-C."""
    import uvicorn

    from icdcoder.infer.cli import check_language
    from icdcoder.infer.profiles import check_profile
    from icdcoder.serve.app import ServeSettings, check_binding, create_app

    settings = ServeSettings(
        model=model,
        system=system,
        db=db,
        host=host,
        port=port,
        token_file=token_file,
        queue_bound=queue_bound,
        batch=batch,
        max_body_bytes=max_body_bytes,
    )
    check_binding(settings)
    check_language(lang)
    check_profile(profile)
    _log_to_stderr()
    app = create_app(settings)
    if load is not None:
        queued = load_notes(app.state.station, load, lang, profile)
        logging.getLogger("icdcoder.serve").info('{"event": "load", "file": "%s", "queued": %d}', load, queued)
    try:
        uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")
    except SystemExit as exit_:  # uvicorn exits 1 when it cannot bind
        if exit_.code:
            raise InputError(f"cannot serve on {host}:{port} (is the port in use?)") from None


def load_notes(station, path: Path, lang: str, profile: str) -> int:
    """Save the notes of ``path`` whose ids are not in the database as one job (coded when the server starts);
    returns how many."""
    from sqlalchemy import select

    from icdcoder.data.schema import Document, iter_documents
    from icdcoder.infer.cli import MAX_NOTE_CHARS, codable
    from icdcoder.serve.db import Note, add_job, check_storable

    coding_check = codable(MAX_NOTE_CHARS)

    def check(document: Document) -> None:
        coding_check(document)
        check_storable(document)

    documents = list(iter_documents(path, {"language": lang}, check))
    with station.sessions() as session:
        known = set(session.scalars(select(Note.external_id)))
        fresh = [document for document in documents if document.id not in known]
        if not fresh:
            return 0
        add_job(session, fresh, profile)
        session.commit()
    return len(fresh)


def _log_to_stderr() -> None:
    """The access log and the server's own lines on stderr, one message a line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("icdcoder.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
