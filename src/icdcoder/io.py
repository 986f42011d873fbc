"""File helpers shared by every module: atomic writes and checked reads."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import pickle
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from icdcoder.errors import InputError

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn

log = logging.getLogger(__name__)


def progress_bar(*columns: ProgressColumn, enabled: bool = True) -> Progress:
    """A transient rich progress bar on stderr: stdout carries results (JSON, tables, TSV) and stays clean."""
    from rich.console import Console
    from rich.progress import Progress

    return Progress(*columns, console=Console(stderr=True), disable=not enabled, transient=True)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    A crash or an exception half-way leaves the old file (or no file), never a
    half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the usual permissions
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file, turning the usual failures into one-line errors."""
    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder, not a file", path=path)
    if not path.is_file():
        raise InputError("file not found", path=path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"cannot read ({err.strerror or err})", path=path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(f"not valid UTF-8 (byte {err.start})", path=path, line=line) from None


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` of a UTF-8 text file without line endings."""
    yield from enumerate(read_text(path).splitlines(), start=1)


def write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Write one JSON object a line, atomically."""
    with atomic_write(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)``; a malformed line raises an error naming it."""
    for number, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"malformed JSON ({err.msg})", path=path, line=number) from None
        if not isinstance(record, dict):
            raise InputError("expected a JSON object", path=path, line=number)
        yield number, record


def readable_json(value, level: int = 0) -> str:
    """``value`` as JSON indented by two spaces, each container that holds only scalars on one line: a table of
    thousands of flat rows stays one line per row."""
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    if not any(isinstance(child, (dict, list)) for child in children):
        return json.dumps(value, ensure_ascii=False)
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, dict):
        items = [
            f"{inner}{json.dumps(key, ensure_ascii=False)}: {readable_json(child, level + 1)}"
            for key, child in value.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    return "[\n" + ",\n".join(f"{inner}{readable_json(child, level + 1)}" for child in value) + f"\n{pad}]"


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Unpickling hundreds of thousands of small objects is about twice as fast without the cyclic GC running."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_cached(path: Path, expected: type):
    """The object of type ``expected`` pickled at ``path``; None when the file is missing, unreadable or holds something
    else (the caller rebuilds it)."""
    try:
        with path.open("rb") as handle, _gc_paused():
            value = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError):
        return None
    return value if isinstance(value, expected) else None


def save_cached(path: Path, value) -> None:
    """Pickle ``value`` to ``path`` atomically. A cache that cannot be written only costs speed: a warning, not an error
    (a read-only home must not stop the tool)."""
    try:
        with atomic_write(path, "wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
    except OSError as err:
        log.warning("could not write the cache %s: %s", path, err)


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same inode when both exist (hard links, ``..`` detours), else the same
    resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _probe_writable(folder: Path, path: Path) -> None:
    """Write a scratch file in ``folder``, or in its nearest existing ancestor when it does not exist yet (nothing is
    created for a run that may still fail); any failure is a one-line error naming ``path``."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot write here ({existing} is not a folder)", path=path)
    try:
        fd, scratch = tempfile.mkstemp(prefix=".icdcoder-probe.", dir=existing)
        os.close(fd)
        os.unlink(scratch)
    except OSError as err:
        raise InputError(f"cannot write here ({err.strerror or err})", path=path) from None


def check_output_file(path: str | Path, inputs: Sequence[str | Path | None] = ()) -> Path:
    """Refuse, before any work, an output file that is one of ``inputs``, an existing folder, or a place that cannot
    be written; returns the path. Nothing is left behind."""
    path = Path(path)
    for given in inputs:
        if given is not None and _same_file(path, Path(given)):
            raise InputError(
                f"is also an input ({given}); the output would replace it: choose another output", path=path
            )
    if path.is_dir():
        raise InputError("is a folder; the output must be a file path", path=path)
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError("cannot write here (permission denied)", path=path)
    _probe_writable(path.parent, path)
    return path


def check_output_dir(path: str | Path, inputs: Sequence[str | Path | None] = ()) -> Path:
    """Refuse, before any work, an output folder that is an existing file, one of ``inputs``, or cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("exists and is not a folder", path=path)
    for given in inputs:
        if given is not None and _same_file(path, Path(given)):
            raise InputError(f"is also an input ({given}): choose another output folder", path=path)
    _probe_writable(path, path)
    return path


def lock_path(output: Path) -> Path:
    """The lock file guarding ``output`` (a file or a folder, existing or not): hidden, beside it, so that every run
    finds the same one."""
    return output.with_name(f".{output.name}.lock")


@contextlib.contextmanager
def output_lock(output: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``output`` (a file or a folder) while it is written, so that two runs never write
    one output at once; a held lock is a one-line error. The operating system drops the lock when the process
    ends, however it ends (``kill -9`` included), so a stale lock never blocks a rerun."""
    from filelock import FileLock, Timeout

    output = Path(output).absolute()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot write here ({err.strerror or err})", path=output) from None
    lock = FileLock(lock_path(output), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise InputError(
            "another icdcoder run is writing this output; wait for it to end or choose another", path=output
        ) from None
    except OSError as err:
        raise InputError(f"cannot lock the output ({err.strerror or err})", path=output) from None
    try:
        yield
    finally:
        lock.release()


def write_json_or_remove(path: Path, record: dict) -> None:
    """``record`` as readable JSON at ``path``; an empty record removes the file (nothing to save)."""
    if not record:
        path.unlink(missing_ok=True)
        return
    with atomic_write(path) as handle:
        handle.write(readable_json(record) + "\n")
