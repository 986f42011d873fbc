"""Helpers for the workstation tests (no tests here): the shipped default coder loaded once, a coder that can be held
or crash on demand, a live server on a free loopback port, the shipped migrations run to a given revision."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE_NOTE = (REPO / "examples" / "sample_note.txt").read_text(encoding="utf-8")
#: the newest schema revision, and the one before candidates had a table
HEAD = "0003_candidates"
BEFORE_CANDIDATES = "0002_postgres_append_only"


@functools.cache
def default_coder():
    """The shipped default coder (loads in seconds), shared by every test of the session."""
    from icdcoder.serve.coding import Coder

    return Coder.load(None, "span")


class Crash(BaseException):
    """Ends the worker thread the way a killed process ends its work: no handler runs, nothing is marked failed."""


class ControlledCoder:
    """The default coder behind a gate: ``hold`` makes calls wait until ``release``; ``crash_after`` calls, the next
    call raises :class:`Crash`. Counts the notes it coded."""

    def __init__(self, crash_after: int | None = None):
        self.inner = default_coder()
        self.model_version = self.inner.model_version
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls = 0
        self.notes: list[str] = []
        self.crash_after = crash_after

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def records(self, documents, profile):
        self.calls += 1
        self.entered.set()
        if self.crash_after is not None and self.calls > self.crash_after:
            raise Crash
        self.gate.wait(60)
        self.notes += [document.id for document in documents]
        return self.inner.records(documents, profile)


def wait_for(condition, timeout: float = 60.0, step: float = 0.05):
    """Poll ``condition`` until it returns something true; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


def migrate(engine, verb: str, target: str) -> None:
    """Run Alembic's ``upgrade`` or ``downgrade`` of the shipped migrations to ``target`` on ``engine``."""
    from alembic import command
    from alembic.config import Config

    from icdcoder.serve.db import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, verb)(config, target)


@contextlib.contextmanager
def live_server(settings, coder=None) -> Iterator[str]:
    """The real app under uvicorn in a thread, on a free loopback port; yields its base URL."""
    import uvicorn

    from icdcoder.serve.app import create_app

    app = create_app(settings.model_copy(update={"host": "127.0.0.1", "port": 0}), coder)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, access_log=False, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
