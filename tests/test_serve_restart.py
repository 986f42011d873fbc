"""``icdcoder serve`` as a real process: killed with SIGKILL in the middle of a job, restarted on the same SQLite file,
it finishes the job, and every note is coded exactly once (one coding audit row each, no note twice in the job)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from test_serve_support import REPO, SAMPLE_NOTE, wait_for

NOTES = 60


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(db: str, port: int, log: Path) -> subprocess.Popen:
    """The server, its log (access lines included) appended to ``log``: a pipe nobody reads would fill and stall it."""
    command = [sys.executable, "-m", "icdcoder.cli", "serve", "--port", str(port), "--db", db, "--batch", "1"]
    with log.open("a") as handle:
        return subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)


def _ready(base: str, process: subprocess.Popen, log: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"the server exited: {log.read_text()[-2000:]}")
    try:
        return httpx.get(base + "/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow
def test_a_killed_server_resumes_its_job_and_codes_each_note_once(tmp_path):
    db, port, log = str(tmp_path / "serve.sqlite"), _free_port(), tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    long_note = " ".join([SAMPLE_NOTE] * 3)  # about 400 words
    notes = [{"text": long_note.replace("58 años", f"{age} años"), "id": f"n{age}"} for age in range(NOTES)]
    server = _start(db, port, log)
    try:
        wait_for(lambda: _ready(base, server, log), timeout=180, step=0.5)
        job_id = httpx.post(base + "/v1/jobs", json={"notes": notes}, timeout=30).json()["id"]
        wait_for(lambda: httpx.get(f"{base}/v1/jobs/{job_id}", timeout=10).json()["done"] >= 2, timeout=120)
        os.kill(server.pid, signal.SIGKILL)
        server.wait(30)
        with sqlite3.connect(db) as connection:
            done_at_kill = connection.execute(
                "select count(*) from notes where job_id = ? and record is not null", (job_id,)
            ).fetchone()[0]
        assert 2 <= done_at_kill < NOTES, "the job finished before the kill: nothing was cut short"
        server = _start(db, port, log)
        wait_for(lambda: _ready(base, server, log), timeout=180, step=0.5)
        job = wait_for(
            lambda: (j := httpx.get(f"{base}/v1/jobs/{job_id}", timeout=10).json())["status"] == "done" and j,
            timeout=300,
            step=0.5,
        )
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    assert [record["id"] for record in job["records"]] == [note["id"] for note in notes]
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "select count(*), count(distinct position) from notes where job_id = ?", (job_id,)
        ).fetchone()
        coded = connection.execute(
            "select count(*), count(distinct note_id) from audit where action = 'code' and note_id in (select id from notes where job_id = ?)",
            (job_id,),
        ).fetchone()
    assert rows == (NOTES, NOTES) and coded == (NOTES, NOTES)
    logged = log.read_text(encoding="utf-8")
    assert '"path": "/v1/jobs", "status": 202' in logged and "Varón" not in logged  # access lines, no note text
