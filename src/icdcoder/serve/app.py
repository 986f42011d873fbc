"""The FastAPI application: the coding API, the review API, exports, the review page at ``/``.

:func:`create_app` builds it from :class:`ServeSettings`; the coder loads once, in the background (``/readyz``
answers 503 until it is loaded), unless one is passed in (tests share one). Requests that code go through the bounded
:class:`~icdcoder.serve.jobs.WorkQueue`: a full queue answers 429 with ``Retry-After``.

Access: with API tokens (``--token-file``, required off loopback), every request but ``/healthz`` and the page's own
static files (which hold no data) needs ``Authorization: Bearer TOKEN``; the token's line names its user, who signs
the audit rows. Without tokens the user is the ``X-User`` header (default ``local``).

Logs: one JSON access line per request (method, path without the query, status, milliseconds, bytes in, user); never
a note's text or a query string.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from icdcoder import __version__
from icdcoder.config import StrictModel
from icdcoder.data.schema import Document
from icdcoder.errors import InputError
from icdcoder.serve import review
from icdcoder.serve.coding import Coder
from icdcoder.serve.db import USER_CHARS, AuditRow, Job, Note, add_job, as_utc, check_storable, open_database
from icdcoder.serve.jobs import QueueFull, WorkQueue

STATIC_DIR = Path(__file__).resolve().parent / "static"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: paths that answer without a token: liveness and the page's files (no data in them)
PUBLIC_PATHS = ("/healthz", "/", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)
#: seconds a refused client is told to wait
RETRY_AFTER_S = 1
access_log = logging.getLogger("icdcoder.serve.access")


class ServeSettings(StrictModel):
    """What ``icdcoder serve`` runs with (its options)."""

    model: Path | None = None
    system: str = "span"
    db: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token_file: Path | None = None
    #: the largest request body accepted (413 beyond)
    max_body_bytes: int = Field(4_000_000, ge=1)
    max_note_chars: int = Field(250_000, ge=1)
    #: items (single notes or jobs) that may wait for the worker (429 beyond)
    queue_bound: int = Field(64, ge=1)
    #: notes the worker codes at once
    batch: int = Field(8, ge=1)
    max_job_notes: int = Field(1000, ge=1)


# ------------------------------------------------------------------------------------------------- request bodies
Language = Literal["es", "en"]
ProfileName = Literal["clinical", "codiesp"]


class NoteIn(BaseModel):
    """One note to code."""

    text: str = Field(min_length=1, description="The note.")
    language: Language = "es"
    translation: str = Field("", description="The note's English translation, read for English code terms.")
    profile: ProfileName = "clinical"
    id: str = Field(
        "note", min_length=1, max_length=200, description="Your id for the note (records and exports carry it)."
    )


class JobIn(BaseModel):
    notes: list[NoteIn] = Field(min_length=1)
    profile: ProfileName = "clinical"


class DecisionIn(BaseModel):
    action: Literal["accept", "reject", "change", "undo"]
    code: str | None = Field(None, description="The new code (change).")
    system: str | None = None


class AddCodeIn(BaseModel):
    code: str
    system: Literal["icd10cm", "icd10pcs"] = "icd10cm"
    start: int | None = Field(None, ge=0, description="The selected text's start: the code's evidence (with end).")
    end: int | None = Field(None, ge=0, description="The selected text's end; without start and end, no evidence.")


class ReviewedIn(BaseModel):
    reviewed: bool = True


# ------------------------------------------------------------------------------------------------- access control
def read_tokens(path: Path) -> dict[str, str]:
    """``TOKEN [USER]`` a line (``#`` comments); a token shorter than 16 characters is refused."""
    from icdcoder.io import iter_lines

    tokens: dict[str, str] = {}
    for number, line in iter_lines(path):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields[0]) < 16:
            raise InputError("a token must have at least 16 characters", path=path, line=number)
        if len(fields) > 1 and len(fields[1]) > USER_CHARS:
            raise InputError(f"a user name has at most {USER_CHARS} characters", path=path, line=number)
        tokens[fields[0]] = fields[1] if len(fields) > 1 else f"token-{number}"
    if not tokens:
        raise InputError("holds no token", path=path)
    return tokens


def check_binding(settings: ServeSettings) -> None:
    if settings.host not in LOOPBACK_HOSTS and settings.token_file is None:
        raise InputError(f"--host {settings.host} is reachable from other machines: give --token-file (API tokens)")


def _token_user(tokens: dict[str, str], header: str | None) -> str | None:
    if not header or not header.startswith("Bearer "):
        return None
    given = header[len("Bearer ") :].strip().encode()
    for token, user in tokens.items():
        if hmac.compare_digest(token.encode(), given):
            return user
    return None


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


# ------------------------------------------------------------------------------------------------- middleware
class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413, declared or streamed, before the app sees it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self._refuse(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        response = JSONResponse({"detail": f"request body larger than {self.limit:,} bytes"}, status_code=413)
        await response(scope, receive, send)


def _access_line(request: Request, status: int, started: float) -> str:
    return json.dumps(
        {
            "event": "access",
            "method": request.method,
            "path": request.url.path,
            "status": status,
            "ms": round((time.perf_counter() - started) * 1000, 1),
            "bytes_in": int(request.headers.get("content-length") or 0),
            "user": getattr(request.state, "user", None),
        }
    )


# ------------------------------------------------------------------------------------------------- the app
class Workstation:
    """What the app holds: settings, the database, the coder (loaded once) and the work queue."""

    def __init__(self, settings: ServeSettings, coder: Coder | None):
        self.settings = settings
        self.tokens = read_tokens(settings.token_file) if settings.token_file else {}
        self.engine, self.sessions = open_database(settings.db)
        self.coder = coder
        self.load_error: str | None = None
        self.loaded = threading.Event()
        if coder is not None:
            self.loaded.set()
        self.queue = WorkQueue(self.wait_for_coder, self.sessions, bound=settings.queue_bound, batch=settings.batch)
        self._search = None

    def load_coder(self) -> None:
        try:
            self.coder = Coder.load(self.settings.model, self.settings.system)
            self._search = self._build_search()  # now, rather than on the first search-as-you-type
        except Exception as err:  # shown by /readyz; the process stays up to say so
            logging.getLogger("icdcoder.serve").exception("the coder failed to load")
            self.load_error = f"{type(err).__name__}: {err}"
        finally:
            self.loaded.set()

    def wait_for_coder(self) -> Coder:
        self.loaded.wait()
        if self.coder is None:
            raise RuntimeError(f"the coder failed to load ({self.load_error})")
        return self.coder

    def _build_search(self):
        from icdcoder.serve.search import CodeSearch

        return CodeSearch()

    @property
    def search(self):
        if self._search is None:
            self._search = self._build_search()
        return self._search


def create_app(settings: ServeSettings, coder: Coder | None = None) -> FastAPI:
    """The workstation app; ``coder``: an already loaded coder (else it loads in the background at start)."""
    station = Workstation(settings, coder)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if station.coder is None:
            threading.Thread(target=station.load_coder, name="icdcoder-load", daemon=True).start()
        station.queue.start()
        station.queue.resume()
        yield
        await asyncio.to_thread(station.queue.stop)
        station.engine.dispose()

    app = FastAPI(
        title="icdcoder workstation",
        version=__version__,
        lifespan=lifespan,
        description="ICD-10 coding with evidence: code notes, review them, export FHIR.",
    )
    app.state.station = station
    _add_middleware(app, station)
    _add_coding_routes(app, station)
    _add_review_routes(app, station)
    _add_export_routes(app, station)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    return app


def _add_middleware(app: FastAPI, station: Workstation) -> None:
    @app.middleware("http")
    async def guard_and_log(request: Request, call_next):
        started = time.perf_counter()
        request.state.user = request.headers.get("x-user") or "local"
        if station.tokens and not _is_public(request.url.path):
            user = _token_user(station.tokens, request.headers.get("authorization"))
            if user is None:
                response = JSONResponse(
                    {"detail": "missing or unknown API token"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                access_log.info(_access_line(request, 401, started))
                return response
            request.state.user = user
        response = await call_next(request)
        access_log.info(_access_line(request, response.status_code, started))
        return response

    app.add_middleware(BodyLimit, limit=station.settings.max_body_bytes)

    @app.exception_handler(InputError)
    async def input_error(_request: Request, err: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=400)

    @app.exception_handler(QueueFull)
    async def queue_full(_request: Request, _err: QueueFull) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the coding queue is full ({station.queue.bound} waiting); retry later"},
            status_code=429,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


def _session(request: Request):
    with request.app.state.station.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(_session)]


def _current_user(request: Request) -> str:
    """Who makes a change: the token's user, else the X-User header, else ``local``."""
    if len(request.state.user) > USER_CHARS:
        raise HTTPException(400, f"header 'X-User': more than {USER_CHARS} characters")
    return request.state.user


User = Annotated[str, Depends(_current_user)]


def _document(note: NoteIn, settings: ServeSettings) -> Document:
    if not note.text.strip():
        raise InputError("field 'text': the note is empty")
    if len(note.text) > settings.max_note_chars:
        raise HTTPException(
            413,
            f"field 'text': the note has {len(note.text):,} characters, more than the limit of {settings.max_note_chars:,}",
        )
    document = Document(id=note.id, text=note.text, language=note.language, translation=note.translation)
    try:
        check_storable(document)
    except ValueError as err:
        raise InputError(str(err)) from None
    return document


def _get_note(session: Session, note_id: str) -> Note:
    note = session.get(Note, note_id)
    if note is None:
        raise HTTPException(404, f"no note {note_id}")
    return note


def _add_coding_routes(app: FastAPI, station: Workstation) -> None:
    @app.get("/healthz", tags=["status"])
    def healthz() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["status"])
    def readyz(session: SessionDep) -> JSONResponse:
        """Readiness: the coder is loaded and the database answers; with the queue's state."""
        session.execute(select(1))
        queue = {
            "waiting": station.queue.waiting,
            "bound": station.queue.bound,
            "max_waiting": station.queue.max_waiting,
        }
        coder = station.coder
        body = {
            "ready": coder is not None,
            "model_version": coder.model_version if coder is not None else None,
            "queue": queue,
            **({"error": station.load_error} if station.load_error else {}),
        }
        return JSONResponse(body, status_code=200 if coder is not None else 503)

    @app.post("/v1/code", tags=["coding"])
    async def code_note(note: NoteIn) -> dict:
        """Code one note: the record ``icdcoder code --json`` prints (descriptions, evidence, traits, the profile's
        exclusions). Not stored. 429 with Retry-After when the queue is full."""
        future = station.queue.submit_note(_document(note, station.settings), note.profile)
        return await asyncio.wrap_future(future)

    @app.post("/v1/jobs", status_code=202, tags=["coding"])
    def submit_job(body: JobIn, session: SessionDep, response: Response) -> dict:
        """Queue a batch of notes; poll ``GET /v1/jobs/{id}``. The job and its notes are saved first: a restart
        resumes it. 429 with Retry-After when the queue is full."""
        if len(body.notes) > station.settings.max_job_notes:
            raise HTTPException(
                413, f"a job holds at most {station.settings.max_job_notes} notes (got {len(body.notes)})"
            )
        documents = [_document(note, station.settings) for note in body.notes]
        if station.queue.waiting >= station.queue.bound:
            raise QueueFull
        job = add_job(session, documents, body.profile)
        session.commit()
        try:
            station.queue.submit_job(job.id)
        except QueueFull:
            job.status, job.error = "failed", "refused: the coding queue was full"
            session.commit()
            raise
        response.headers["Location"] = f"/v1/jobs/{job.id}"
        return {"id": job.id, "status": job.status, "total": job.total}

    @app.get("/v1/jobs/{job_id}", tags=["coding"])
    def get_job(job_id: str, session: SessionDep) -> dict:
        """A job's status and the records of its notes coded so far, in submission order."""
        job = session.get(Job, job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        notes = list(session.scalars(select(Note).where(Note.job_id == job_id).order_by(Note.position)))
        records = [
            {**note.record, "id": note.external_id, "note_id": note.id} for note in notes if note.record is not None
        ]
        return {
            "id": job.id,
            "status": job.status,
            "total": job.total,
            "done": len(records),
            "error": job.error,
            "created_at": as_utc(job.created_at).isoformat(),
            "records": records,
        }

    @app.get("/v1/codes", tags=["ontology"])
    def search_codes(
        q: Annotated[str, Query(min_length=1, max_length=200)],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        system: Literal["icd10cm", "icd10pcs"] | None = None,
    ) -> list[dict]:
        """Codes for words (English titles, Spanish and English clinical words; the last word as a prefix) or a code."""
        return [hit.as_dict() for hit in station.search.search(q, limit=limit, system=system)]

    @app.get("/v1/codes/{code}", tags=["ontology"])
    def show_code(code: str, system: str | None = None) -> dict:
        """One code: title, hierarchy, children, includes, excludes, GEM mappings (``icdcoder codes show --json``)."""
        from icdcoder.ontology import SYSTEMS, load_ontology
        from icdcoder.ontology.cli import code_record

        if system is not None and system not in SYSTEMS:
            raise HTTPException(400, f"unknown code system '{system}' (expected one of: {', '.join(SYSTEMS)})")
        ontology = load_ontology()
        systems = (system,) if system else SYSTEMS
        found = ontology.resolve(code, systems)
        if found is None:
            raise HTTPException(404, f"unknown code '{code}' (systems tried: {', '.join(systems)})")
        return code_record(ontology, ontology.get(*found), 50)


def _add_review_routes(app: FastAPI, station: Workstation) -> None:
    @app.post("/v1/notes", status_code=201, tags=["review"])
    async def add_note(note: NoteIn, session: SessionDep) -> dict:
        """Code a note and keep it for review."""
        document = _document(note, station.settings)
        record = await asyncio.wrap_future(station.queue.submit_note(document, note.profile))
        row = Note(
            external_id=note.id,
            text=note.text,
            language=note.language,
            translation=note.translation,
            profile=note.profile,
        )
        session.add(row)
        session.flush()
        review.store_record(session, row, record, station.wait_for_coder().model_version)
        session.commit()
        return review.note_view(row)

    @app.get("/v1/notes", tags=["review"])
    def list_notes(
        session: SessionDep, status: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 200
    ) -> dict:
        """The review queue: notes (newest last), optionally of one status (coded = waiting for review)."""
        query = select(Note).order_by(Note.created_at, Note.id).limit(limit)
        if status is not None:
            query = query.where(Note.status == status)
        counts = dict(session.execute(select(Note.status, func.count()).group_by(Note.status)).all())
        return {"counts": counts, "notes": [review.note_summary(note) for note in session.scalars(query)]}

    @app.get("/v1/notes/{note_id}", tags=["review"])
    def get_note(note_id: str, session: SessionDep) -> dict:
        """The note, its codes under review and its ``candidates`` (the codes the coder scored below its threshold,
        not among the codes, best first)."""
        return review.note_view(_get_note(session, note_id))

    @app.post("/v1/notes/{note_id}/codes/{code_id}", tags=["review"])
    def decide(note_id: str, code_id: int, body: DecisionIn, session: SessionDep, who: User) -> dict:
        """Accept, reject, change (to ``code``) a code, or undo the decision; audited."""
        note = _get_note(session, note_id)
        try:
            row = review.decide(session, note, code_id, body.action, who, body.code, body.system)
        except review.UnknownCode as err:
            raise HTTPException(404, str(err)) from None
        session.commit()
        return review.note_code_view(note, row)

    @app.post("/v1/notes/{note_id}/codes", status_code=201, tags=["review"])
    def add_code(note_id: str, body: AddCodeIn, session: SessionDep, who: User) -> dict:
        """Add a code the coder missed (one of the note's ``candidates``, or any other), the selected text as its
        evidence (none without ``start`` and ``end``); audited."""
        note = _get_note(session, note_id)
        row = review.add_code(session, note, body.code, body.system, body.start, body.end, who)
        session.commit()
        return review.note_code_view(note, row)

    @app.post("/v1/notes/{note_id}/review", tags=["review"])
    def set_reviewed(note_id: str, body: ReviewedIn, session: SessionDep, who: User) -> dict:
        """Sign the note off as reviewed (or reopen it); audited."""
        note = _get_note(session, note_id)
        review.set_reviewed(session, note, body.reviewed, who)
        session.commit()
        return review.note_summary(note)

    @app.get("/v1/notes/{note_id}/audit", tags=["review"])
    def note_audit(note_id: str, session: SessionDep) -> list[dict]:
        """Every change to the note, oldest first."""
        _get_note(session, note_id)
        rows = session.scalars(select(AuditRow).where(AuditRow.note_id == note_id).order_by(AuditRow.id))
        return [
            {
                "id": r.id,
                "code_id": r.code_id,
                "user": r.user,
                "at": as_utc(r.at).isoformat(),
                "action": r.action,
                "before": r.before,
                "after": r.after,
                "model_version": r.model_version,
            }
            for r in rows
        ]


def _export_notes(session: Session, note_id: str | None) -> list[Note]:
    return [_get_note(session, note_id)] if note_id else review.reviewed_notes(session)


def _add_export_routes(app: FastAPI, station: Workstation) -> None:
    @app.get("/v1/export/fhir", tags=["export"])
    def export_fhir(session: SessionDep, note: str | None = None) -> JSONResponse:
        """A FHIR R4 Bundle of the reviewed notes (or of ``note``), validated; left-out counts in a header."""
        from icdcoder.export.fhir import bundle

        document, left_out = bundle(review.export_record(n) for n in _export_notes(session, note))
        return JSONResponse(document, media_type="application/fhir+json", headers={"X-Left-Out": json.dumps(left_out)})

    @app.get("/v1/export/codiesp/{name}", tags=["export"])
    def export_codiesp(
        name: Literal["D.tsv", "P.tsv", "X.tsv"], session: SessionDep, note: str | None = None
    ) -> PlainTextResponse:
        """One CodiEsp file (D.tsv, P.tsv or X.tsv) of the reviewed notes (or of ``note``)."""
        from icdcoder.export.formats import codiesp_rows

        rows = codiesp_rows(review.export_record(n) for n in _export_notes(session, note))
        return PlainTextResponse("".join(line + "\n" for line in rows[name]), media_type="text/tab-separated-values")

    @app.get("/v1/export/jsonl", tags=["export"])
    def export_jsonl(session: SessionDep, note: str | None = None) -> PlainTextResponse:
        """The reviewed notes (or ``note``) as canonical JSONL training notes, their kept codes as gold."""
        from icdcoder.export.formats import canonical_lines

        lines = canonical_lines(review.export_record(n) for n in _export_notes(session, note))
        return PlainTextResponse(
            "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), media_type="application/x-ndjson"
        )
