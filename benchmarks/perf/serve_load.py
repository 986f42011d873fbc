"""Load on ``icdcoder serve``: concurrent clients coding 400-word notes over loopback, bounded in count and time.

    python benchmarks/perf/serve_load.py [--clients 50] [--per-client 4] [--queue-bound 16] [--batch 8] [--timeout 600]
                                         [--out results/perf] [--render]

Starts the server (the shipped default coder, a fresh SQLite file in a temporary folder, 127.0.0.1 on a free port),
then two phases, each with ``--clients`` concurrent clients sending ``--per-client`` notes apiece, every note with its
own id and text:

- ``code``: one ``POST /v1/code`` per note; a 429 waits its ``Retry-After`` and tries again. Latency is from the first
  try to the answer, retries included.
- ``jobs``: each client submits its notes as one job (``POST /v1/jobs``, retried on 429) and polls it to the end.

Checks, per phase: every note answered exactly once with its own id (lost, duplicated and mismatched counted), and the
queue never held more than its bound (the server's ``max_waiting``). Prints one JSON line per phase: notes, wall
seconds, notes/s, p50/p95 latency (ms), 429s, max_waiting, bound, lost, duplicated, mismatched, the load average
before it and the share of the CPUs other processes took during it (0 on an idle machine). Writes them, with the machine (CPU model, cores, RAM), the settings and the command line, to
``--out``/serve_load.json (atomically), then renders the ``perf:serve_load`` blocks of the README and docs/serve.md
from that file (:func:`icdcoder.reports.render_perf`); ``--render`` only renders. Not a test: figures depend on the
machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

from icdcoder.experiments.runner import git_commit  # noqa: E402
from icdcoder.reports import (  # noqa: E402
    PERF_RESULTS,
    busy_cpu_seconds,
    machine_description,
    other_cpu_share,
    own_cpu_seconds,
    process_cpu_seconds,
    publish_perf,
)

SAMPLE = REPO / "examples" / "sample_note.txt"


NOTE_WORDS = 400


def note_text(client: int, index: int) -> str:
    """A 400-word Spanish note: the sample, repeated and cut at a word, made unique by the patient's age and a
    closing line."""
    sample = SAMPLE.read_text(encoding="utf-8").strip()
    closing = f"Control en consulta {client}-{index}."
    repeated = "\n".join([sample] * math.ceil(NOTE_WORDS / len(sample.split())))
    body_words = list(re.finditer(r"\S+", repeated))[: NOTE_WORDS - len(closing.split())]
    body = repeated[: body_words[-1].end()].replace("58 años", f"{20 + (client * 7 + index) % 70} años")
    return f"{body}\n{closing}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(folder: Path, queue_bound: int, batch: int):
    """``icdcoder serve`` on a free loopback port, its log in ``folder``; yields its base URL and process id once it
    is ready."""
    import httpx

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "icdcoder.cli",
        "serve",
        "--port",
        str(port),
        "--db",
        str(folder / "load.sqlite"),
        "--queue-bound",
        str(queue_bound),
        "--batch",
        str(batch),
    ]
    with (folder / "serve.log").open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the server exited: {(folder / 'serve.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                ready = httpx.get(base + "/readyz", timeout=2)
                if ready.status_code == 200:
                    break
                if "error" in ready.json():
                    raise SystemExit(f"the coder failed to load: {ready.json()['error']}")
            time.sleep(0.5)
        else:
            raise SystemExit("the server was not ready within 300 s")
        yield base, process.pid
    except BaseException:
        print(f"server log (tail):\n{(folder / 'serve.log').read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


async def post_retrying(client, url: str, body: dict, refused: Counter):
    """POST until the server takes it; each 429 waits its Retry-After."""
    while True:
        response = await client.post(url, json=body)
        if response.status_code != 429:
            response.raise_for_status()
            return response.json()
        refused["429"] += 1
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))


async def code_phase(base: str, clients: int, per_client: int) -> tuple[list[float], list[tuple[str, str]], Counter]:
    import httpx

    latencies: list[float] = []
    answers: list[tuple[str, str]] = []  # (sent id, answered id)
    refused: Counter = Counter()

    async def one_client(number: int, http) -> None:
        for index in range(per_client):
            note_id = f"c{number}-{index}"
            started = time.perf_counter()
            record = await post_retrying(
                http, base + "/v1/code", {"text": note_text(number, index), "id": note_id}, refused
            )
            latencies.append(time.perf_counter() - started)
            answers.append((note_id, record["id"]))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(*(one_client(number, http) for number in range(clients)))
    return latencies, answers, refused


async def jobs_phase(base: str, clients: int, per_client: int) -> tuple[list[float], list[tuple[str, str]], Counter]:
    import httpx

    latencies: list[float] = []
    answers: list[tuple[str, str]] = []
    refused: Counter = Counter()

    async def one_client(number: int, http) -> None:
        notes = [{"text": note_text(number, index), "id": f"j{number}-{index}"} for index in range(per_client)]
        started = time.perf_counter()
        job = await post_retrying(http, base + "/v1/jobs", {"notes": notes}, refused)
        while job.get("status") not in ("done", "failed"):
            await asyncio.sleep(0.5)
            job = (await http.get(f"{base}/v1/jobs/{job['id']}")).json()
        latencies.append(time.perf_counter() - started)
        answers.extend(zip([note["id"] for note in notes], [record["id"] for record in job["records"]], strict=False))
        answers.extend((note["id"], "") for note in notes[len(job["records"]) :])  # unanswered: lost

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await asyncio.gather(*(one_client(number, http) for number in range(clients)))
    return latencies, answers, refused


def summary(
    phase: str,
    latencies: list[float],
    answers: list[tuple[str, str]],
    refused: Counter,
    wall: float,
    sent: int,
    queue: dict,
) -> dict:
    answered = Counter(answer for _, answer in answers if answer)
    percentiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "phase": phase,
        "notes": sent,
        "wall_s": round(wall, 2),
        "notes_per_s": round(sent / wall, 2),
        "p50_ms": round(percentiles[49] * 1000),
        "p95_ms": round(percentiles[94] * 1000),
        "refused_429": refused["429"],
        "max_waiting": queue["max_waiting"],
        "bound": queue["bound"],
        "bound_honoured": queue["max_waiting"] <= queue["bound"],
        "lost": sum(1 for sent_id, answer in answers if not answer) + (sent - len(answers)),
        "duplicated": sum(count - 1 for count in answered.values() if count > 1),
        "mismatched": sum(1 for sent_id, answer in answers if answer and answer != sent_id),
    }


def measured_cpu_seconds(server: int) -> float:
    """CPU seconds of the server and of this process (the clients) so far."""
    return (process_cpu_seconds(server) or 0.0) + own_cpu_seconds()


def measure(args: argparse.Namespace) -> dict:
    """Start the server, run both phases against it, and return the results record."""
    import httpx

    sent = args.clients * args.per_client
    phases = []
    with (
        tempfile.TemporaryDirectory() as folder,
        running_server(Path(folder), args.queue_bound, args.batch) as (base, server),
    ):
        for phase, run in (("code", code_phase), ("jobs", jobs_phase)):
            load = os.getloadavg()[0]
            busy, ours = busy_cpu_seconds(), measured_cpu_seconds(server)
            started = time.perf_counter()
            latencies, answers, refused = asyncio.run(
                asyncio.wait_for(run(base, args.clients, args.per_client), args.timeout)
            )
            wall = time.perf_counter() - started
            others = other_cpu_share(busy, measured_cpu_seconds(server) - ours, wall)
            queue = httpx.get(base + "/readyz", timeout=10).json()["queue"]
            phases.append(
                {
                    **summary(phase, latencies, answers, refused, wall, sent, queue),
                    "load_avg_before": round(load, 2),
                    "other_cpu_share": others,
                }
            )
            print(json.dumps(phases[-1]), flush=True)
    return {
        "command": shlex.join(["python", "benchmarks/perf/serve_load.py", *sys.argv[1:]]),
        "commit": git_commit(REPO),
        "machine": machine_description(),
        "clients": args.clients,
        "per_client": args.per_client,
        "words_per_note": len(note_text(0, 0).split()),
        "queue_bound": args.queue_bound,
        "batch": args.batch,
        "phases": phases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--per-client", type=int, default=4)
    parser.add_argument("--queue-bound", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=600, help="seconds each phase may take")
    parser.add_argument("--out", type=Path, default=REPO / PERF_RESULTS, help="where serve_load.json goes")
    parser.add_argument("--render", action="store_true", help="only render the docs' blocks from serve_load.json")
    args = parser.parse_args()
    publish_perf("serve_load", None if args.render else measure(args), args.out, REPO)


if __name__ == "__main__":
    main()
