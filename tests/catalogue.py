"""Running the real ``icdcoder`` entry point for the failure catalogue (``tests/test_catalogue_*.py``).

:func:`run_main` calls :func:`icdcoder.cli.main` in this process (the same error path as the installed command,
without a second torch import per case); :func:`run_subprocess` runs ``python -m icdcoder.cli`` for the cases where
the process itself matters (signals, kill -9, two runs at once).
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


def run_main(*args: str, stdin: str = "") -> Result:
    """``icdcoder ARGS`` through :func:`icdcoder.cli.main`, its exit status and both streams captured."""
    from icdcoder.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode("utf-8")), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(arg) for arg in args])
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.stdin = saved_stdin
    return Result(status, out.getvalue(), err.getvalue())


def _default_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_interruptible(command: list[str], cwd: Path) -> subprocess.Popen:
    """``command`` started with Ctrl-C (SIGINT) at its default, so that the test can interrupt it even when the test
    run itself ignores SIGINT (a shell's background job, ``nohup``): an ignored signal is inherited across exec."""
    return subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_ctrl_c
    )


def run_subprocess(*args: str, stdin: str | None = None, timeout: float = 300) -> Result:
    """``python -m icdcoder.cli ARGS`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-m", "icdcoder.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        input=stdin,
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """Exit status 2, one ``error:`` line on stderr holding every fragment, nothing on stdout, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.status == 2, (result.status, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert not result.stdout.strip(), result.stdout[-2000:]


def sample_archive(folder: Path, notes: int) -> Path:
    """``notes`` short notes in ``folder/archive.jsonl``, each a rotation of the sample note's sentences: a run over
    them takes seconds, a chunk a fraction of one."""
    sample = (REPO / "examples" / "sample_note.txt").read_text(encoding="utf-8")
    sentences = [line for line in sample.splitlines() if line.strip()]
    records = [
        {"id": f"n{i:04d}", "text": " ".join(sentences[i % len(sentences) :] + sentences[: i % len(sentences)])}
        for i in range(notes)
    ]
    path = folder / "archive.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def wait_for_records(partial: Path, process: subprocess.Popen, at_least: int, timeout: float = 180) -> None:
    """Return once ``partial`` holds ``at_least`` records; fail if the run ends first or nothing comes in time."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if partial.is_file() and partial.read_bytes().count(b"\n") >= at_least:
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended before it was stopped: {process.communicate()[1][-2000:]}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("no records appeared in time")
