"""Code a synthetic archive of MIMIC-IV-shaped discharge summaries (:mod:`icdcoder.data.synthetic`) through
``predict jsonl --workers 1``, ``--workers 2`` and ``predict ray`` (a local Ray with as many actors), with the default
coder; report notes/s, peak RAM per worker and the hours 330,000 notes (MIMIC-IV's discharge summaries) would take.

    python benchmarks/perf/archive_scale.py --codiesp-dir ../shared/data/codiesp --notes 200 [--render]

Each engine runs as the real command in its own process. What is measured:

* ``notes_per_s``: notes written after the first batch (or shard) appeared, over the seconds since: the steady rate,
  start-up (interpreter, coder load in every worker) left out; ``startup_s``: seconds to the first batch;
* ``peak_rss_mb_per_worker``: the largest peak resident memory (``VmHWM``) of a process that codes (the command
  itself with one worker; each pool worker; each Ray actor), sampled from ``/proc`` (Linux). RSS counts every resident
  page of the process, its libraries' and those it shares with other processes included, so N workers take less than
  N times it; ``peak_pss_mb_per_worker`` (each shared page split among the processes that map it) and
  ``peak_uss_mb_per_worker`` (the pages only that process holds: what ending it frees) tell how much less. Those two
  have no kernel high-water mark: they are the largest values sampled, every ``SAMPLE_SECONDS``;
* ``hours_330k``: ``startup_s`` + 330,000 / ``notes_per_s``, in hours;
* ``cpu_s``: CPU seconds of the whole run, all its processes (Ray's own included), sampled from ``/proc``;
  ``steady_cpu_s_per_note``: CPU seconds per note after the first batch (start-up left out), which other work on
  the machine moves less than the wall-clock rate (but still raises: torch's threads spin while they wait for a
  core); ``core_hours_330k``: 330,000 notes at that cost, in CPU-core hours;
* ``load_avg_before`` and ``other_cpu_share``: the load average before the run, and the share of all the CPUs that
  other processes (not the run's, not this script's) took during it, from ``/proc/stat``: 0 on an idle machine.
  Read it before the wall-clock figures on a shared machine.

Writes ``OUT/archive_scale.json`` (with the machine: CPU model, cores, RAM; the command line; the commit) and prints a
Markdown table, then renders the ``perf:archive_scale`` blocks of the README and docs/scale.md from that file
(:func:`icdcoder.reports.render_perf`); ``--render`` only renders. The archive and the predictions (CodiEsp sentences)
stay in ``--work`` (a temporary folder by default), never in the results. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src"))

from icdcoder.data.synthetic import write_synthetic_archive  # noqa: E402
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

MIMIC_IV_NOTES = 330_000
SAMPLE_SECONDS = 0.25


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux ``/proc``)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = {int(child) for child in (task / "children").read_text().split()}
            except OSError:
                continue
            todo.extend(children - found)
            found |= children
    return found


@dataclass
class Memory:
    """One process's memory in MiB: its peak RSS (the kernel's high-water mark) and the largest PSS and USS sampled."""

    command: str
    rss: float
    pss: float
    uss: float

    def merged(self, earlier: Memory | None) -> Memory:
        """This sample, keeping the larger values of an ``earlier`` one."""
        if earlier is None:
            return self
        return Memory(self.command, max(self.rss, earlier.rss), max(self.pss, earlier.pss), max(self.uss, earlier.uss))


def kib_fields(text: str, names: tuple[str, ...]) -> dict[str, int]:
    """The ``Name:   123 kB`` lines of a ``/proc`` file, for ``names``."""
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in names:
            fields[name] = int(value.split()[0])
    return fields


def memory_mb(pid: int) -> Memory | None:
    """A process's command line and memory (MiB), None once it is gone."""
    try:
        status = kib_fields(Path(f"/proc/{pid}/status").read_text(), ("VmHWM",))
        rollup = kib_fields(Path(f"/proc/{pid}/smaps_rollup").read_text(), ("Pss", "Private_Clean", "Private_Dirty"))
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if "VmHWM" not in status or "Pss" not in rollup:  # a zombie: its memory is gone
        return None
    uss = rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
    return Memory(command, status["VmHWM"] / 1024, rollup["Pss"] / 1024, uss / 1024)


def is_coding_worker(command: str, engine: str) -> bool:
    if engine == "ray":
        return command.startswith("ray::MapWorker") or "MapBatches(ShardCoder)" in command
    return "multiprocessing.spawn" in command


def written(out: Path, engine: str, shard_notes: int) -> int:
    """Notes finished so far: lines of the ``.partial`` file, or finished shards."""
    if engine == "ray":
        shards = out.with_name(out.name + ".shards")
        return shard_notes * len(list(shards.glob("*.jsonl"))) if shards.is_dir() else 0
    partial = out.with_name(out.name + ".partial")
    try:
        return partial.read_bytes().count(b"\n")
    except OSError:
        return 0


def run_engine(engine: str, workers: int, archive: Path, out: Path, notes: int, chunk: int, shard_notes: int) -> dict:
    """Run one engine as the real command; sample its progress and its processes' memory until it ends."""
    out.unlink(missing_ok=True)
    common = ["--input", str(archive), "--out", str(out), "--chunk", str(chunk)]
    if engine == "ray":
        command = ["predict", "ray", *common, "--actors", str(workers), "--shard-notes", str(shard_notes)]
    else:
        command = ["predict", "jsonl", *common, "--workers", str(workers)]
    load = os.getloadavg()[0]
    busy, own = busy_cpu_seconds(), own_cpu_seconds()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "icdcoder.cli", *command], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    peaks: dict[int, Memory] = {}
    cpu: dict[int, float] = {}
    first: tuple[float, int] | None = None
    while process.poll() is None:
        for pid in {process.pid} | descendants(process.pid):
            if (sample := memory_mb(pid)) is not None:
                peaks[pid] = sample.merged(peaks.get(pid))
            if (used := process_cpu_seconds(pid)) is not None:
                cpu[pid] = max(used, cpu.get(pid, 0.0))
        done = written(out, engine, shard_notes)
        if first is None and done > 0:
            first = (time.perf_counter() - started, done)
            cpu_at_first = sum(cpu.values())
        time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - started
    others = other_cpu_share(busy, sum(cpu.values()) + own_cpu_seconds() - own, wall)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{engine} x{workers} failed: {stderr.decode(errors='replace')[-2000:]}")
    if first is None:  # finished between two samples: no steady part to measure
        first, cpu_at_first = (wall, 0), 0.0
    startup, at_first = first
    steady = (notes - at_first) / (wall - startup) if wall > startup and notes > at_first else notes / wall
    steady_cpu = (
        (sum(cpu.values()) - cpu_at_first) / (notes - at_first) if notes > at_first else sum(cpu.values()) / notes
    )
    coding = [memory for memory in peaks.values() if is_coding_worker(memory.command, engine)]
    if engine == "jsonl" and workers == 1:
        coding = [peaks[process.pid]]
    return {
        "engine": "predict ray" if engine == "ray" else f"predict jsonl --workers {workers}",
        "workers": workers,
        "notes": notes,
        "wall_s": round(wall, 1),
        "startup_s": round(startup, 1),
        "notes_per_s": round(steady, 3),
        "peak_rss_mb_per_worker": round(max(memory.rss for memory in coding), 1) if coding else None,
        "peak_pss_mb_per_worker": round(max(memory.pss for memory in coding), 1) if coding else None,
        "peak_uss_mb_per_worker": round(max(memory.uss for memory in coding), 1) if coding else None,
        "hours_330k": round((startup + MIMIC_IV_NOTES / steady) / 3600, 2),
        "cpu_s": round(sum(cpu.values()), 1),
        "steady_cpu_s_per_note": round(steady_cpu, 3),
        "core_hours_330k": round(MIMIC_IV_NOTES * steady_cpu / 3600, 1),
        "load_avg_before": round(load, 2),
        "other_cpu_share": others,
        "counts": {key: value for key, value in json.loads(stdout).items() if key != "out"},  # "out": a temporary path
    }


def table(rows: list[dict]) -> str:
    base = rows[0]["notes_per_s"]
    lines = [
        "| engine | notes/s (steady) | vs 1 worker | start-up s | peak RSS/worker MB | PSS | USS | hours for 330k | "
        "steady CPU s/note | load before |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['engine']} | {row['notes_per_s']} | {row['notes_per_s'] / base:.2f}x | {row['startup_s']} | "
            f"{row['peak_rss_mb_per_worker']} | {row['peak_pss_mb_per_worker']} | {row['peak_uss_mb_per_worker']} | "
            f"{row['hours_330k']} | {row['steady_cpu_s_per_note']} | {row['load_avg_before']} |"
        )
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> dict:
    """Write the archive, code it through each engine, and return the results record."""
    work = args.work or Path(tempfile.mkdtemp(prefix="icdcoder-archive-scale."))
    archive = write_synthetic_archive(
        args.codiesp_dir, work / f"archive_{args.notes}_{args.seed}.jsonl", args.notes, args.seed
    )
    words = [len(json.loads(line)["text"].split()) for line in archive.read_text(encoding="utf-8").splitlines()]
    runs = [("jsonl", 1), ("jsonl", args.workers), ("ray", args.workers)]
    rows = [
        run_engine(
            engine,
            workers,
            archive,
            work / f"predictions_{engine}_{workers}.jsonl",
            args.notes,
            args.chunk,
            args.shard_notes,
        )
        for engine, workers in runs
    ]
    outputs = {
        (engine, workers): (work / f"predictions_{engine}_{workers}.jsonl").read_bytes() for engine, workers in runs
    }
    return {
        "command": shlex.join(["python", "benchmarks/perf/archive_scale.py", *sys.argv[1:]]),
        "commit": git_commit(REPO),
        "machine": machine_description(),
        "archive": {
            "notes": args.notes,
            "seed": args.seed,
            "median_words": sorted(words)[len(words) // 2],
            "words": sum(words),
            "bytes": archive.stat().st_size,
        },
        "chunk": args.chunk,
        "shard_notes": args.shard_notes,
        "output_bytes": len(outputs[runs[0]]),
        "identical_outputs": len(set(outputs.values())) == 1,
        "speedup_workers": round(rows[1]["notes_per_s"] / rows[0]["notes_per_s"], 3),
        "ray_vs_workers": round(rows[2]["notes_per_s"] / rows[1]["notes_per_s"], 3),
        # on idle cores, one per worker: each worker codes 1 / (its steady CPU s per note) notes/s
        "idle_speedup_workers": round(
            rows[0]["steady_cpu_s_per_note"] / rows[1]["steady_cpu_s_per_note"] * args.workers, 3
        ),
        "idle_ray_vs_workers": round(rows[1]["steady_cpu_s_per_note"] / rows[2]["steady_cpu_s_per_note"], 3),
        "runs": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codiesp-dir", default=str(REPO.parent / "shared" / "data" / "codiesp"))
    parser.add_argument("--notes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--chunk", type=int, default=4, help="notes per batch (predict jsonl) and per coding step of an actor"
    )
    parser.add_argument("--shard-notes", type=int, default=8, help="notes per Ray shard")
    parser.add_argument("--workers", type=int, default=2, help="the pool size compared with one worker")
    parser.add_argument("--out", type=Path, default=REPO / PERF_RESULTS, help="where archive_scale.json goes")
    parser.add_argument("--work", type=Path, default=None, help="archive and predictions (default: a temporary folder)")
    parser.add_argument("--render", action="store_true", help="only render the docs' blocks from archive_scale.json")
    args = parser.parse_args()
    result = None if args.render else measure(args)
    if result is not None:
        print(table(result["runs"]))
        print(json.dumps({key: value for key, value in result.items() if key not in ("runs", "command")}))
    publish_perf("archive_scale", result, args.out, REPO)


if __name__ == "__main__":
    main()
