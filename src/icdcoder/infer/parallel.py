"""Code notes on every core of one machine: ``predict jsonl --workers N`` and ``predict codiesp --workers N``.

A :class:`WorkerPool` is a :data:`icdcoder.infer.records.BatchEngine`: the run's batches (``--chunk`` notes each) go
to ``N`` worker processes, each of which loads the coder once and turns a batch into its records' JSON lines with
:func:`icdcoder.infer.records.batch_lines`, as one process does. The parent keeps everything else: it reads and checks
the notes, writes the batches back in input order, and owns the lock, the ``.partial`` file and the fingerprint, so
the output, and the way an interrupted run resumes, are those of one process, byte for byte.

A worker whose coder runs on torch runs it on its share of the cores (``cores // N`` threads): left at torch's
default, every worker would start a thread per core and ``N`` workers would fight over them (Ray does the same for its
actors). A worker never imports torch itself: the default coder, its LLM off, does not use it, and torch's libraries
would add to every worker's memory.

Workers are started with ``spawn`` (a fresh interpreter: no threads or locks inherited from the parent) and ignore
Ctrl-C, which the parent handles; they end when the parent ends, however it ends (``kill -9`` included). At most
two batches per worker are in flight, so that a large archive streams through in bounded memory.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from icdcoder.errors import InputError
from icdcoder.predictor import Predictor, peak_rss_mb

if TYPE_CHECKING:
    from icdcoder.data.schema import Document

#: batches waiting or being coded, per worker: enough to keep each busy while the parent writes
IN_FLIGHT_PER_WORKER = 2
#: how often (seconds) a waiting parent checks that its workers are alive, and a worker that its parent is
POLL_SECONDS = 1.0
#: the index of a worker's result that is not a batch's: its load error, or its peak memory at the end
NOT_A_BATCH = -1


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the platform tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_workers(workers: int) -> None:
    """``--workers`` must be a core count this machine has: more processes than cores only add memory."""
    cores = usable_cores()
    if not 1 <= workers <= cores:
        raise InputError(
            f"--workers must be between 1 and {cores}, the CPU cores this machine lets the run use (got {workers})"
        )


class WorkerPool:
    """Codes batches of notes in ``workers`` processes, each with the coder ``load()`` returns (``load`` must be
    picklable: a module-level function or a ``functools.partial`` of one)."""

    def __init__(self, load: Callable[[], Predictor], workers: int):
        self.load = load
        self.workers = workers
        #: each worker's peak resident memory in MiB, filled when a run ends normally
        self.peak_rss_mb: list[float] = []

    def __call__(self, batches: Iterator[list[Document]], profile: str) -> Iterator[tuple[int, str]]:
        context = multiprocessing.get_context("spawn")
        tasks, results = context.Queue(), context.Queue()
        processes = [
            context.Process(
                target=_work,
                args=(self.load, profile, tasks, results, os.getpid(), threads_per_worker(self.workers)),
                daemon=True,
                name=f"icdcoder-worker-{i}",
            )
            for i in range(self.workers)
        ]
        for process in processes:
            process.start()
        finished = False
        try:
            yield from _in_order(batches, tasks, results, processes)
            for _ in processes:
                tasks.put(None)
            self.peak_rss_mb = [_peak(results, processes) for _ in processes]
            finished = True
        finally:
            _stop(processes, tasks, finished)


def _in_order(
    batches: Iterator[list[Document]],
    tasks: multiprocessing.Queue,
    results: multiprocessing.Queue,
    processes: Sequence[BaseProcess],
) -> Iterator[tuple[int, str]]:
    """Each batch's size and lines, in the order of ``batches``, with at most ``IN_FLIGHT_PER_WORKER`` per worker out."""
    sizes: dict[int, int] = {}
    coded: dict[int, str] = {}
    submitted = written = 0
    batches = iter(batches)
    while True:
        while (
            submitted - written < IN_FLIGHT_PER_WORKER * len(processes) and (batch := next(batches, None)) is not None
        ):
            tasks.put((submitted, batch))
            sizes[submitted] = len(batch)
            submitted += 1
        if written == submitted:
            return
        while written not in coded:
            index, lines = _result(results, processes)
            coded[index] = str(lines)
        yield sizes.pop(written), coded.pop(written)
        written += 1


def _peak(results: multiprocessing.Queue, processes: Sequence[BaseProcess]) -> float:
    """A finished worker's peak memory in MiB (the last thing each worker sends)."""
    _, value = _result(results, processes)
    assert isinstance(value, float | int), f"a worker sent {type(value).__name__} where its peak memory belongs"
    return float(value)


def _result(results: multiprocessing.Queue, processes: Sequence[BaseProcess]) -> tuple[int, object]:
    """The next ``(index, value)`` a worker sent; a worker's error is raised here, a worker that died is one line."""
    while True:
        try:
            index, value = results.get(timeout=POLL_SECONDS)
        except queue.Empty:
            dead = [process for process in processes if process.exitcode not in (None, 0)]  # 0: stopped when told
            if dead:
                raise InputError(
                    f"a coding worker ended unexpectedly (exit code {dead[0].exitcode}; out of memory?): rerun the same "
                    "command to resume, with fewer --workers if memory is short"
                ) from None
            continue
        if isinstance(value, BaseException):
            raise value
        return index, value


def _stop(processes: Sequence[BaseProcess], tasks: multiprocessing.Queue, finished: bool) -> None:
    """Join the workers of a finished run; end those of a failed or interrupted one now (their batches are lost, as
    an interrupted single process's chunk is, and the rerun codes them again)."""
    if not finished:
        tasks.cancel_join_thread()  # tasks nobody will read must not hold the parent at exit
        for process in processes:
            process.terminate()
    for process in processes:
        process.join()


def threads_per_worker(workers: int) -> int:
    """The torch threads each of ``workers`` processes gets: the usable cores shared out, at least one."""
    return max(1, usable_cores() // workers)


def share_torch_threads(threads: int) -> bool:
    """Run torch on ``threads`` threads if the coder has imported it; whether it has."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return torch is not None


def _work(
    load: Callable[[], Predictor],
    profile: str,
    tasks: multiprocessing.Queue,
    results: multiprocessing.Queue,
    parent: int,
    threads: int,
) -> None:
    """A worker: load the coder once, then code batches until told to stop; finally report its peak memory."""
    from icdcoder.infer.records import batch_lines

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    try:
        predictor = load()
    except Exception as err:
        results.put((NOT_A_BATCH, _portable(err)))
        return
    threads_shared = False
    while (task := tasks.get()) is not None:
        index, batch = task
        threads_shared = threads_shared or share_torch_threads(threads)  # torch comes with the coder's load or a batch
        try:
            results.put((index, batch_lines(predictor, batch, profile)))
        except Exception as err:
            results.put((index, _portable(err)))
    results.put((NOT_A_BATCH, peak_rss_mb()))


def _exit_when_orphaned(parent: int) -> None:
    """End this worker once its parent is gone (a ``kill -9`` of the parent runs no clean-up)."""
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    os._exit(1)


def _portable(err: Exception) -> Exception:
    """``err`` if it survives pickling to the parent (an :class:`InputError` does), else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")
    return err
