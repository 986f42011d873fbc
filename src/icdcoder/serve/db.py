"""The workstation's database: notes, their codes under review, batch jobs and the audit trail (SQLAlchemy).

- ``notes``: one clinical note, the coder's record for it (``code --json``'s record) and its review status
  (``pending`` until coded, then ``coded``, ``reviewed`` once a coder signs it off; ``failed`` when coding failed).
- ``codes``: the codes of a note as the review sees them: where each came from (``origin``: ``coded``, ``excluded``
  by the profile, or ``added`` by a reviewer), the reviewer's ``decision`` (none yet, ``accepted`` or ``rejected``),
  and for a changed code the ``original_code`` the coder suggested.
- ``candidates``: the codes the coder scored below its threshold for a note (its record's ``candidates``), ``rank`` 0
  the best. They are not codes of the note: a reviewer who takes one adds it to ``codes`` (origin ``added``), so
  nothing that reads ``codes`` (review, exports) ever sees a candidate that was not taken.
- ``jobs``: batches submitted to ``POST /v1/jobs``; their notes are ``notes`` rows with ``job_id`` and ``position``
  (unique together: a note is never coded into a job twice), so a restart resumes at the first uncoded note.
- ``audit``: append-only, one row per change (user, time, action, before, after, model version). The ORM refuses to
  update or delete a row, and a trigger refuses it in the database too (SQLite and PostgreSQL).

The schema is created and upgraded by the Alembic migrations shipped in ``migrations/`` (:func:`open_database`
applies them at start), never by ``create_all``: an upgrade keeps the data. The same schema runs on SQLite and on
PostgreSQL (``tests/test_serve_postgres.py`` runs the migrations and the API on a real server). What PostgreSQL is
stricter about is checked before a write (:func:`check_storable`): text holds no NUL character, and strings fit their
column (SQLite stores a longer one as it is; PostgreSQL refuses it).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)

from icdcoder.data.schema import Document
from icdcoder.errors import InputError

#: where migrations live inside the package
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: the SQLite file used when no ``--db`` is given, in the working folder
DEFAULT_DB_FILE = "icdcoder-serve.sqlite"

NOTE_STATUSES = ("pending", "coded", "reviewed", "failed")
CODE_ORIGINS = ("coded", "excluded", "added")
DECISIONS = ("accepted", "rejected")
JOB_STATUSES = ("queued", "running", "done", "failed")
#: the longest note id (``external_id``) and user name the tables hold
EXTERNAL_ID_CHARS = 200
USER_CHARS = 200


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    """The workstation's tables."""


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    profile: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    notes: Mapped[list[Note]] = relationship(back_populates="job", order_by="Note.position")


class Note(Base):
    __tablename__ = "notes"
    __table_args__ = (UniqueConstraint("job_id", "position", name="uq_notes_job_position"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    #: the caller's own id for the note (a file name, a CodiEsp id); exports use it
    external_id: Mapped[str] = mapped_column(String(EXTERNAL_ID_CHARS), index=True)
    text: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(8))
    translation: Mapped[str] = mapped_column(Text, default="")
    profile: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    #: the coder's record (``code --json``), kept as it was suggested
    record: Mapped[dict | None] = mapped_column(JSON, default=None)
    model_version: Mapped[str | None] = mapped_column(String(80), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), default=None, index=True)
    position: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)

    job: Mapped[Job | None] = relationship(back_populates="notes")
    codes: Mapped[list[NoteCode]] = relationship(
        back_populates="note", order_by="NoteCode.id", cascade="all, delete-orphan"
    )
    candidates: Mapped[list[Candidate]] = relationship(
        back_populates="note", order_by="Candidate.rank", cascade="all, delete-orphan"
    )


class NoteCode(Base):
    __tablename__ = "codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    note_id: Mapped[str] = mapped_column(ForeignKey("notes.id"), index=True)
    code: Mapped[str] = mapped_column(String(16))
    system: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, default="")
    score: Mapped[float | None] = mapped_column(Float, default=None)
    origin: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str | None] = mapped_column(String(16), default=None)
    original_code: Mapped[str | None] = mapped_column(String(16), default=None)
    #: the code's assertion and, for an excluded code, the profile's reason
    assertion: Mapped[str | None] = mapped_column(String(16), default=None)
    reason: Mapped[str | None] = mapped_column(String(16), default=None)
    #: ``[{start, end, quote, traits}]`` as in the coder's record
    evidence: Mapped[list] = mapped_column(JSON, default=list)
    sentence_evidence: Mapped[list] = mapped_column(JSON, default=list)

    note: Mapped[Note] = relationship(back_populates="codes")


class Candidate(Base):
    __tablename__ = "candidates"

    note_id: Mapped[str] = mapped_column(ForeignKey("notes.id"), primary_key=True)
    #: the place in the coder's ranking below its threshold, 0 the best
    rank: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    code: Mapped[str] = mapped_column(String(16))
    system: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float)

    note: Mapped[Note] = relationship(back_populates="candidates")


class AuditRow(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    note_id: Mapped[str] = mapped_column(ForeignKey("notes.id"), index=True)
    code_id: Mapped[int | None] = mapped_column(Integer, default=None)
    user: Mapped[str] = mapped_column(String(USER_CHARS))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    action: Mapped[str] = mapped_column(String(16))
    before: Mapped[dict | None] = mapped_column(JSON, default=None)
    after: Mapped[dict | None] = mapped_column(JSON, default=None)
    model_version: Mapped[str | None] = mapped_column(String(80), default=None)


def add_job(session: Session, documents: Sequence[Document], profile: str) -> Job:
    """A new job holding ``documents`` as its notes, in order, added to ``session`` (not committed)."""
    job = Job(profile=profile, total=len(documents))
    session.add(job)
    session.flush()
    for position, document in enumerate(documents):
        session.add(
            Note(
                external_id=document.id,
                text=document.text,
                language=document.language,
                translation=document.translation,
                profile=profile,
                job_id=job.id,
                position=position,
            )
        )
    return job


class AppendOnlyError(RuntimeError):
    """An attempt to change or delete an audit row."""


@event.listens_for(AuditRow, "before_update")
@event.listens_for(AuditRow, "before_delete")
def _refuse_audit_change(_mapper, _connection, row: AuditRow) -> None:
    raise AppendOnlyError(f"audit row {row.id} is append-only")


def check_storable(document: Document) -> None:
    """Refuse (``ValueError`` naming the field) a note the tables cannot hold on every database: PostgreSQL's text
    cannot hold a NUL character, and its ``external_id`` column holds at most ``EXTERNAL_ID_CHARS`` characters."""
    if len(document.id) > EXTERNAL_ID_CHARS:
        raise ValueError(f"field 'id': {len(document.id)} characters, more than the limit of {EXTERNAL_ID_CHARS}")
    for name in ("id", "text", "translation"):
        if "\x00" in getattr(document, name):
            raise ValueError(f"field '{name}': holds a NUL character (\\u0000)")


def as_utc(moment: dt.datetime) -> dt.datetime:
    """A stored time in UTC: SQLite returns the UTC times stored as naive datetimes, PostgreSQL returns them in the
    session's time zone (the server's or the database's ``timezone`` setting)."""
    return moment.astimezone(dt.UTC) if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def database_url(db: str | None) -> str:
    """``--db`` as a SQLAlchemy URL: a URL as given, a plain path as a SQLite file, nothing as the default file."""
    if db is None:
        return f"sqlite:///{Path(DEFAULT_DB_FILE).absolute()}"
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).absolute()}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL lets the page read while the worker writes; a busy wait instead of 'database is locked'."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError) as err:
        raise InputError(f"--db: not a usable database URL ({err})") from None
    except ImportError as err:  # the dialect is known, its driver is not installed
        raise InputError(
            f"--db: the database driver is not installed ({err}); for PostgreSQL: pip install 'psycopg[binary]'"
        ) from None


def upgrade(engine: Engine) -> str:
    """Apply the shipped migrations up to the newest; returns the schema revision now in the database."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() or ""


def open_database(db: str | None) -> tuple[Engine, sessionmaker[Session]]:
    """The database at ``db`` (see :func:`database_url`), migrated to the current schema."""
    from sqlalchemy.exc import OperationalError

    url = database_url(db)
    engine = make_engine(url)
    try:
        upgrade(engine)
    except OperationalError as err:
        raise InputError(f"--db: cannot open the database ({err.orig})") from None
    return engine, sessionmaker(engine, expire_on_commit=False)
