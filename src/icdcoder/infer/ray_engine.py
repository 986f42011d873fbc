"""``icdcoder predict ray``: code an archive on a Ray cluster (or this machine's Ray) with Ray Data.

The notes are cut, in input order, into shards of ``shard_notes`` notes; each shard still to code is one row of a Ray
dataset, and the coder is a stateful actor pool (``map_batches`` with a callable class: each actor loads the coder
once, then codes whole shards with :func:`icdcoder.infer.records.batch_lines`, ``chunk`` notes at a time, as
``predict jsonl`` does). The driver writes each finished shard atomically to ``OUT.shards/NNNNNN.jsonl``; when all are
there it merges them, in order, into ``OUT`` (by rename) and removes the folder, so the output is the file
``predict jsonl`` writes. An interrupted run resumes by shard: finished shards are kept, under the same fingerprint
(input, model, settings, shard size) only, recorded in ``OUT.shards/fingerprint.json``.

Only the driver reads the input and writes the output: the nodes need icdcoder and the coder, not a shared disk. The
shards' notes travel through Ray's object store (about the archive's text size; see ``docs/scale.md``).
Ray is imported here only, when the command runs.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from icdcoder.errors import InputError
from icdcoder.io import atomic_write

if TYPE_CHECKING:
    import numpy as np

    from icdcoder.data.schema import Document
    from icdcoder.predictor import Predictor

#: suffix of the folder of an unfinished run's shards, beside the output
SHARDS_SUFFIX = ".shards"
#: the run's fingerprint, inside the shards folder
FINGERPRINT_FILE = "fingerprint.json"


@dataclass(frozen=True)
class ActorPool:
    """Where the coder actors run and what each reserves."""

    #: the cluster (``auto``, ``ray://host:10001``); None: a Ray already started in this process, or a new local one
    address: str | None = None
    #: how many actors; None: the cluster's CPUs / ``cpus_per_actor``
    actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0


def shards_folder(out: Path) -> Path:
    return out.with_name(out.name + SHARDS_SUFFIX)


def shard_file(folder: Path, index: int) -> Path:
    return folder / f"{index:06d}.jsonl"


class ShardCoder:
    """The Ray actor: loads the coder once, then turns each row's shard of notes into its records' JSON lines."""

    def __init__(self, load: Callable[[], Predictor], profile: str, chunk: int):
        self.predictor = load()
        self.profile = profile
        self.chunk = chunk

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np

        lines = [self.code_shard(notes) for notes in batch["notes"]]
        return {"shard": batch["shard"], "lines": np.array(lines, dtype=object)}

    def code_shard(self, notes_json: str) -> str:
        from icdcoder.data.schema import Document
        from icdcoder.infer.records import batch_lines

        documents = [Document.model_validate(note) for note in json.loads(notes_json)]
        return "".join(
            batch_lines(self.predictor, documents[start : start + self.chunk], self.profile)
            for start in range(0, len(documents), self.chunk)
        )


def predict_on_ray(
    load: Callable[[], Predictor],
    documents: Iterable[Document],
    ids: Sequence[str],
    out: Path,
    *,
    fingerprint: dict,
    profile: str,
    chunk: int,
    shard_notes: int,
    pool: ActorPool,
    report: Callable[[int, int], None] | None = None,
) -> dict:
    """Code ``documents`` (``ids``: theirs, in order) into ``out`` on Ray, resuming an interrupted run's shards.
    Returns how many notes were coded now and how many finished shards held. A run that fails before it finishes a
    shard leaves nothing behind."""
    folder = shards_folder(out)
    _check_or_start(folder, fingerprint)
    try:
        return _code_shards(load, documents, ids, out, folder, profile, chunk, shard_notes, pool, report)
    except BaseException:
        if folder.is_dir() and not any(folder.glob("*.jsonl")):
            shutil.rmtree(folder)
        raise


def _code_shards(
    load: Callable[[], Predictor],
    documents: Iterable[Document],
    ids: Sequence[str],
    out: Path,
    folder: Path,
    profile: str,
    chunk: int,
    shard_notes: int,
    pool: ActorPool,
    report: Callable[[int, int], None] | None,
) -> dict:
    plan = [list(ids[start : start + shard_notes]) for start in range(0, len(ids), shard_notes)]
    finished = {index for index in range(len(plan)) if shard_file(folder, index).is_file()}
    resumed = sum(len(plan[index]) for index in finished)
    rows = _pending_rows(documents, shard_notes, finished)
    if report:
        report(resumed, len(ids))
    if rows:
        done = resumed
        for row in _coded_shards(rows, load, profile, chunk, pool):
            index = int(row["shard"])
            with atomic_write(shard_file(folder, index)) as handle:
                handle.write(row["lines"])
            done += len(plan[index])
            if report:
                report(done, len(ids))
    _merge(folder, plan, out)
    return {"coded": len(ids) - resumed, "resumed": resumed}


def _check_or_start(folder: Path, fingerprint: dict) -> None:
    """Resume only shards of a run with the same fingerprint; a new run records its own first."""
    path = folder / FINGERPRINT_FILE
    if not folder.exists():
        folder.mkdir(parents=True)
        with atomic_write(path) as handle:
            json.dump(fingerprint, handle, sort_keys=True)
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise InputError(
            f"has no readable {FINGERPRINT_FILE}, so what wrote it is unknown; delete it to start over", path=folder
        ) from None
    differing = sorted(key for key in set(recorded) | set(fingerprint) if recorded.get(key) != fingerprint.get(key))
    if differing:
        raise InputError(
            f"holds shards of a run with another {', '.join(differing)}; rerun with the same input, model and settings "
            "to resume, or delete it to start over",
            path=folder,
        )


def _pending_rows(documents: Iterable[Document], shard_notes: int, finished: set[int]) -> list[dict]:
    """One row per shard still to code: its index and its notes as JSON (what Ray ships to the actors)."""
    rows: list[dict] = []
    notes: list[dict] = []
    for position, document in enumerate(documents):
        index = position // shard_notes
        if index not in finished:
            notes.append(document.model_dump(mode="json"))
        if (position + 1) % shard_notes == 0 and notes:
            rows.append({"shard": index, "notes": json.dumps(notes, ensure_ascii=False)})
            notes = []
    if notes:
        rows.append({"shard": position // shard_notes, "notes": json.dumps(notes, ensure_ascii=False)})
    return rows


def _coded_shards(
    rows: list[dict], load: Callable[[], Predictor], profile: str, chunk: int, pool: ActorPool
) -> Iterator[dict]:
    """The coded rows, as the actors finish them (any order)."""
    ray = _connected(pool.address)
    actors = pool.actors or max(1, int(ray.cluster_resources().get("CPU", 1) // pool.cpus_per_actor))
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        ShardCoder,
        fn_constructor_kwargs={"load": load, "profile": profile, "chunk": chunk},
        batch_size=1,
        concurrency=min(actors, len(rows)),
        num_cpus=pool.cpus_per_actor,
        num_gpus=pool.gpus_per_actor,
    )
    return dataset.iter_rows()


def _connected(address: str | None):
    """Ray, connected to the cluster at ``address`` or, without one, to a Ray already started in this process or a
    new local one; quiet (the command prints its own progress)."""
    import ray

    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        except (
            ConnectionError,
            ValueError,
        ) as err:  # no cluster there; a malformed address or a missing client package
            raise InputError(f"--address {address}: {err}") from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return ray


def _merge(folder: Path, plan: list[list[str]], out: Path) -> None:
    """The shards, in order, into ``out`` (by rename); each must hold exactly its notes, in order."""
    with atomic_write(out) as handle:
        for index, expected in enumerate(plan):
            path = shard_file(folder, index)
            text = path.read_text(encoding="utf-8")
            found = [json.loads(line)["id"] for line in text.splitlines()]
            if found != expected:
                raise InputError(
                    "does not hold the notes of its shard of the input; delete the shards folder to start over",
                    path=path,
                )
            handle.write(text)
    shutil.rmtree(folder)
