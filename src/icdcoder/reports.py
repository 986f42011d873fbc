"""Generated blocks in Markdown files, and the speed figures of ``benchmarks/perf/`` rendered into them.

A generated block is the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``. It is rewritten from a
results file and from nothing else, so every figure in the README and the docs can be traced to the command that
printed it. The perf scripts end in :func:`publish_perf`: ``results/perf/NAME.json``, then :func:`render_perf`,
which fills the ``perf:NAME`` block (a short summary, in the README) and the ``perf:NAME_table`` block (the full
table, in the docs).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from icdcoder.errors import InputError, first_invalid_field
from icdcoder.io import atomic_write, read_text

PERF_RESULTS = Path("results/perf")
PERF_TARGETS = (Path("README.md"), Path("docs/serve.md"), Path("docs/scale.md"))
Model = TypeVar("Model", bound=BaseModel)


def block_markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_block(text: str, name: str, body: str, *, path: str | Path) -> str | None:
    """``text`` with block ``name`` holding ``body``; None when ``text`` has no such block (``path`` names the file
    in the error when its start marker has no end)."""
    start, end = block_markers(name)
    head, found_start, rest = text.partition(start)
    if not found_start:
        return None
    _, found_end, tail = rest.partition(end)
    if not found_end:
        raise InputError(f"marker '{start}' without '{end}'", path=path)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def fill_blocks(text: str, blocks: dict[str, str], *, path: str | Path) -> tuple[str, set[str]]:
    """``text`` with each block of ``blocks`` that it holds rewritten, and the names it holds."""
    found = set()
    for name, body in blocks.items():
        replaced = replace_block(text, name, body, path=path)
        if replaced is not None:
            text = replaced
            found.add(name)
    return text, found


def machine_description() -> dict[str, Any]:
    """The CPU model, the cores this process may use and the RAM: what a reader needs to compare timings."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu_model": model, "cores": cores, "memory_gb": round(memory, 1)}


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has been busy since boot, time stolen by the hypervisor included
    (``/proc/stat``; None elsewhere)."""
    try:
        fields = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process so far (``/proc/PID/stat``; None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def other_cpu_share(busy_before: float | None, own_cpu_s: float, wall_s: float) -> float | None:
    """The share of all the machine's CPUs that processes other than the measured ones used during a timed run:
    0 on an otherwise idle machine. The figure to read before trusting a wall-clock rate on a shared machine."""
    busy_after = busy_cpu_seconds()
    if busy_before is None or busy_after is None or wall_s <= 0:
        return None
    others = max(0.0, busy_after - busy_before - own_cpu_s)
    return round(min(1.0, others / (wall_s * (os.cpu_count() or 1))), 3)


class Machine(BaseModel):
    cpu_model: str
    cores: int
    memory_gb: float


class LoadPhase(BaseModel):
    phase: Literal["code", "jobs"]
    notes: int
    wall_s: float
    notes_per_s: float
    p50_ms: int
    p95_ms: int
    refused_429: int
    max_waiting: int
    bound: int
    bound_honoured: bool
    lost: int
    duplicated: int
    mismatched: int
    load_avg_before: float
    other_cpu_share: float | None = None


class ServeLoadResult(BaseModel):
    command: str
    commit: str | None = None
    machine: Machine
    clients: int
    per_client: int
    words_per_note: int
    queue_bound: int
    batch: int
    phases: list[LoadPhase] = Field(min_length=1)


class ScaleRun(BaseModel):
    engine: str
    workers: int
    notes_per_s: float
    startup_s: float
    peak_rss_mb_per_worker: float | None
    hours_330k: float
    steady_cpu_s_per_note: float
    load_avg_before: float
    other_cpu_share: float | None = None


class Archive(BaseModel):
    notes: int
    median_words: int
    words: int
    bytes: int


class ArchiveScaleResult(BaseModel):
    command: str
    commit: str | None = None
    machine: Machine
    archive: Archive
    chunk: int
    shard_notes: int
    output_bytes: int
    identical_outputs: bool
    speedup_workers: float
    ray_vs_workers: float
    runs: list[ScaleRun] = Field(min_length=3, max_length=3)  # --workers 1, --workers N, Ray with N actors


def read_result(path: Path, model: type[Model]) -> Model:
    """A perf results file, checked: a bad one is one line naming the file (and the line or the field)."""
    try:
        record = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(f"not a perf results file ({err.msg})", path=path, line=err.lineno) from None
    try:
        return model.model_validate(record)
    except ValidationError as err:
        field, message = first_invalid_field(err, whole="(top level)")
        raise InputError(f"field '{field}': {message}", path=path) from None


def machine_words(machine: Machine) -> str:
    return f"{machine.cores} cores ({machine.cpu_model}, {machine.memory_gb:g} GB RAM)"


def disturbance(runs: Iterable[LoadPhase | ScaleRun]) -> str:
    """How far the figures are from an idle machine's: the most CPU other processes took during a run, else the
    highest load average before one."""
    runs = list(runs)
    shares = [run.other_cpu_share for run in runs if run.other_cpu_share is not None]
    if len(shares) == len(runs):
        return f"other work took up to {max(shares):.0%} of the CPU"
    return f"load average up to {max(run.load_avg_before for run in runs):.1f} before"


def share_cell(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def provenance(result: ServeLoadResult | ArchiveScaleResult) -> str:
    commit = result.commit
    if not commit:
        return f"`{result.command}`"
    dirty = " with uncommitted changes" if commit.endswith("+dirty") else ""
    return f"`{result.command}` (commit `{commit[:12]}{dirty}`)"


PHASE_NAMES = {"code": "`POST /v1/code`", "jobs": "`POST /v1/jobs`"}


def serve_load_blocks(result: ServeLoadResult) -> dict[str, str]:
    """The README's summary and the docs' table of a ``serve_load.py`` run."""
    phases = "; ".join(
        f"{PHASE_NAMES[phase.phase]} {phase.notes_per_s:.1f} notes/s, p50/p95 {phase.p50_ms:,}/{phase.p95_ms:,} ms"
        for phase in result.phases
    )
    honoured = all(phase.bound_honoured for phase in result.phases)
    lost = sum(phase.lost for phase in result.phases)
    duplicated = sum(phase.duplicated for phase in result.phases)
    summary = (
        f"{result.clients} clients × {result.per_client} notes of {result.words_per_note} words, "
        f"{result.machine.cores} cores, {disturbance(result.phases)}: {phases}; queue bound "
        f"{result.queue_bound} {'honoured' if honoured else 'EXCEEDED'}, {lost} lost, {duplicated} duplicated. "
        f"`{result.command}`"
    )
    rows = [
        "| phase | notes | wall s | notes/s | p50 ms | p95 ms | 429s | max waiting / bound | lost | duplicated | "
        "mismatched | load before | others' CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in result.phases:
        name = PHASE_NAMES[phase.phase]
        if phase.phase == "jobs":
            name += f" ({result.clients} jobs of {result.per_client})"
        rows.append(
            f"| {name} | {phase.notes} | {phase.wall_s:.1f} | {phase.notes_per_s:.1f} | {phase.p50_ms:,} | "
            f"{phase.p95_ms:,} | {phase.refused_429} | {phase.max_waiting} / {phase.bound} | {phase.lost} | "
            f"{phase.duplicated} | {phase.mismatched} | {phase.load_avg_before:.1f} | {share_cell(phase.other_cpu_share)} |"
        )
    table = "\n".join(rows) + (
        f"\n\n{result.clients} clients × {result.per_client} notes of {result.words_per_note} words, "
        f"`--queue-bound {result.queue_bound}`, `--batch {result.batch}`, the shipped default coder, on "
        f"{machine_words(result.machine)}. The last columns: the load average before each phase, and the share of the CPU "
        f"other processes took during it (0% on an idle machine). "
        f"Printed by {provenance(result)}."
    )
    return {"perf:serve_load": summary, "perf:serve_load_table": table}


def archive_scale_blocks(result: ArchiveScaleResult) -> dict[str, str]:
    """The README's summary and the docs' table of an ``archive_scale.py`` run."""
    one, pool, ray = result.runs
    peaks = [run.peak_rss_mb_per_worker for run in result.runs if run.peak_rss_mb_per_worker is not None]
    ram = f"{min(peaks):,.0f}-{max(peaks):,.0f} MB" if peaks else "not measured"
    identical = "byte-identical" if result.identical_outputs else "NOT identical"
    summary = (
        f"{result.archive.notes} synthetic discharge summaries (median {result.archive.median_words:,} words), "
        f"{result.machine.cores} cores, {disturbance(result.runs)}: `--workers {pool.workers}` "
        f"{pool.notes_per_s:.2f} notes/s, {result.speedup_workers:.2f}× one worker; Ray ({ray.workers} actors) "
        f"{result.ray_vs_workers:.2f}× `--workers {pool.workers}`; peak RAM {ram} per worker; outputs {identical}. "
        f"`{result.command}`"
    )
    rows = [
        "| engine | notes/s (steady) | vs one worker | start-up s | peak RAM per worker | steady CPU s per note | "
        "hours for 330k | load before | others' CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result.runs:
        peak = "-" if run.peak_rss_mb_per_worker is None else f"{run.peak_rss_mb_per_worker:,.0f} MB"
        engine = f"`predict ray` ({run.workers} actors)" if run is ray else f"`{run.engine}`"
        rows.append(
            f"| {engine} | {run.notes_per_s:.2f} | {run.notes_per_s / one.notes_per_s:.2f}× | {run.startup_s:.1f} | "
            f"{peak} | {run.steady_cpu_s_per_note:.3f} | {run.hours_330k:.1f} | {run.load_avg_before:.1f} | "
            f"{share_cell(run.other_cpu_share)} |"
        )
    archive = result.archive
    table = "\n".join(rows) + (
        f"\n\n{archive.notes} notes (median {archive.median_words:,} words, {archive.words:,} in all, "
        f"{archive.bytes / archive.notes / 1000:.1f} KB of JSONL a note; the records written are "
        f"{result.output_bytes / archive.bytes:.1f}× the notes' size), the default coder (LLM off), `--chunk "
        f"{result.chunk}`, Ray shards of {result.shard_notes} notes, on "
        f"{machine_words(result.machine)}. `--workers {pool.workers}` codes {result.speedup_workers:.2f}× the "
        f"notes/s of one worker; Ray reaches {result.ray_vs_workers:.2f}× `--workers {pool.workers}`; the outputs "
        f"are {identical}. Printed by {provenance(result)}."
    )
    return {"perf:archive_scale": summary, "perf:archive_scale_table": table}


RENDERERS: dict[str, tuple[type[BaseModel], Callable[[Any], dict[str, str]]]] = {
    "serve_load": (ServeLoadResult, serve_load_blocks),
    "archive_scale": (ArchiveScaleResult, archive_scale_blocks),
}


def render_perf(name: str, root: Path = Path("."), targets: Iterable[Path] = PERF_TARGETS) -> list[Path]:
    """Fill the ``perf:NAME`` blocks of ``targets`` (paths under ``root``) from ``root/results/perf/NAME.json``.
    Every block must be in one of them, else nothing is written. Returns the files that hold one."""
    model, blocks_of = RENDERERS[name]
    blocks = blocks_of(read_result(root / PERF_RESULTS / f"{name}.json", model))
    files = [root / target for target in targets]
    filled, placed = {}, set()
    for path in files:
        original = read_text(path)
        text, found = fill_blocks(original, blocks, path=path)
        placed |= found
        if found:
            filled[path] = (original, text)
    if missing := sorted(set(blocks) - placed):
        start, _ = block_markers(missing[0])
        raise InputError(f"no '{start}' marker in {', '.join(str(path) for path in files)}")
    for path, (original, text) in filled.items():
        if text != original:
            with atomic_write(path) as handle:
                handle.write(text)
    return list(filled)


def publish_perf(name: str, result: dict[str, Any] | None, out: Path, root: Path) -> None:
    """A perf benchmark's last step: write ``result`` (when measured) to ``out/NAME.json``, then fill the docs' blocks
    from it if ``out`` is the repository's ``results/perf`` (a result written elsewhere is not what the docs show).
    A docs problem ends the script with a one-line error."""
    if result is not None:
        with atomic_write(out / f"{name}.json") as handle:
            json.dump(result, handle, indent=2)
    if out.resolve() != (root / PERF_RESULTS).resolve():
        print(f"docs not rendered: they show {PERF_RESULTS}, not {out}", file=sys.stderr)
        return
    try:
        render_perf(name, root=root)
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
