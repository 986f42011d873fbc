"""The bounded work queue: single notes (``POST /v1/code``, ``POST /v1/notes``) and batch jobs share one worker.

The coder is CPU-bound and not made for concurrent calls, so one worker thread runs it; requests wait for it in a
FIFO queue of at most ``bound`` items. A request that finds the queue full is refused at once (:class:`QueueFull`,
which the app answers with 429 and ``Retry-After``): nothing hangs and nothing is dropped silently. Waiting single
notes are coded together, up to ``batch`` at a time.

A job is written to the database, with every note of it, before it is queued; the worker codes its notes ``batch`` at
a time and commits each batch with its records. After a restart, :meth:`WorkQueue.resume` queues every job that is
not done (beyond the bound: it was accepted already) and the worker skips its notes already coded, so each note is
coded exactly once into its job.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from icdcoder.data.schema import Document
from icdcoder.serve.coding import Coder
from icdcoder.serve.db import Job, Note
from icdcoder.serve.review import store_record

log = logging.getLogger("icdcoder.serve")


class QueueFull(Exception):
    """The queue holds ``bound`` items: try again later."""


@dataclass
class _NoteTask:
    document: Document
    profile: str
    future: Future = field(default_factory=Future)


@dataclass
class _JobTask:
    job_id: str


_STOP = object()


class WorkQueue:
    """One worker thread coding what requests queue, at most ``bound`` items waiting."""

    def __init__(self, coder: Callable[[], Coder], sessions: sessionmaker[Session], bound: int = 64, batch: int = 8):
        self._coder = coder
        self._sessions = sessions
        self.bound = bound
        self.batch = batch
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0
        #: the most items ever waiting at once (the load benchmark checks it against ``bound``)
        self.max_waiting = 0
        self._thread = threading.Thread(target=self._work, name="icdcoder-worker", daemon=True)

    # ---------------------------------------------------------------------------------------------- submitting
    @property
    def waiting(self) -> int:
        return self._waiting

    def _put(self, item, bounded: bool = True) -> None:
        with self._lock:
            if bounded and self._waiting >= self.bound:
                raise QueueFull
            self._waiting += 1
            self.max_waiting = max(self.max_waiting, self._waiting)
        self._queue.put(item)

    def _taken(self, count: int = 1) -> None:
        with self._lock:
            self._waiting -= count

    def submit_note(self, document: Document, profile: str) -> Future:
        """Queue one note; the future resolves to its record (or the coder's exception)."""
        task = _NoteTask(document, profile)
        self._put(task)
        return task.future

    def submit_job(self, job_id: str) -> None:
        """Queue a job already saved with its notes."""
        self._put(_JobTask(job_id))

    def resume(self) -> list[str]:
        """Queue every saved job that is not finished (a restart's leftovers); returns their ids."""
        with self._sessions() as session:
            ids = list(
                session.scalars(select(Job.id).where(Job.status.in_(("queued", "running"))).order_by(Job.created_at))
            )
        for job_id in ids:
            self._put(_JobTask(job_id), bounded=False)
        return ids

    # ---------------------------------------------------------------------------------------------- running
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Let the worker finish its current batch and end, ahead of what is queued: queued jobs stay saved (the next
        start resumes them), queued single notes are refused."""
        self._requeue_front(_STOP)
        self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                self._refuse_rest()
                return
            self._taken()
            if isinstance(item, _JobTask):
                self._run_job(item.job_id)
            else:
                self._run_notes([item, *self._more_notes(item.profile)])

    def _more_notes(self, profile: str) -> list[_NoteTask]:
        """Single notes waiting right behind the first, same profile, up to a batch (the rest keep their place)."""
        more: list[_NoteTask] = []
        while len(more) + 1 < self.batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _NoteTask) and item.profile == profile:
                self._taken()
                more.append(item)
            else:
                self._requeue_front(item)
                break
        return more

    def _requeue_front(self, item) -> None:
        with self._queue.mutex:
            self._queue.queue.appendleft(item)
            self._queue.unfinished_tasks += 1
            self._queue.not_empty.notify()

    def _refuse_rest(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _NoteTask):
                item.future.set_exception(RuntimeError("the server is shutting down"))

    def _run_notes(self, tasks: list[_NoteTask]) -> None:
        try:
            records = self._coder().records([task.document for task in tasks], tasks[0].profile)
        except Exception as err:  # the requests get the failure; the worker lives on
            log.exception("coding %d note(s) failed", len(tasks))
            for task in tasks:
                task.future.set_exception(err)
            return
        for task, record in zip(tasks, records, strict=True):
            task.future.set_result(record)

    def _run_job(self, job_id: str) -> None:
        try:
            self._code_job(job_id)
        except Exception as err:
            log.exception("job %s failed", job_id)
            with self._sessions() as session:
                job = session.get(Job, job_id)
                if job is not None:
                    job.status, job.error = "failed", f"{type(err).__name__}: {err}"
                    session.commit()

    def _code_job(self, job_id: str) -> None:
        coder = self._coder()
        with self._sessions() as session:
            job = session.get(Job, job_id)
            if job is None or job.status in ("done", "failed"):
                return
            job.status = "running"
            session.commit()
            while True:
                pending = list(
                    session.scalars(
                        select(Note)
                        .where(Note.job_id == job_id, Note.status == "pending")
                        .order_by(Note.position)
                        .limit(self.batch)
                    )
                )
                if not pending:
                    break
                documents = [
                    Document(id=n.external_id, text=n.text, language=n.language, translation=n.translation)
                    for n in pending
                ]
                for note, record in zip(pending, coder.records(documents, job.profile), strict=True):
                    store_record(session, note, record, coder.model_version)
                session.commit()
            job.status = "done"
            session.commit()
