"""``predict jsonl --workers N`` and ``predict codiesp --workers N``: the same output as one process, byte for byte;
a stopped run (Ctrl-C, kill -9 of the parent or of a worker) resumes to that output; bad values are one line.

The pool itself is tested with a made-up coder (no model load); the commands with the shipped default coder."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from catalogue import REPO, assert_one_line_error, run_main, sample_archive, start_interruptible, wait_for_records
from test_infer_support import make_codiesp

from icdcoder.data.schema import Document, Evidence
from icdcoder.errors import InputError
from icdcoder.predictor import CodePrediction, DocumentPrediction, Predictor

SAMPLE = (REPO / "examples" / "sample_note.txt").read_text(encoding="utf-8")


class _EchoCoder(Predictor):
    """A stand-in coder: one code per note, the note's first word as evidence; a note whose text is ``fail`` fails."""

    name = "echo"

    def predict(self, documents):
        time.sleep(0.01 * (len(documents[0].id) % 3))  # uneven batch times: results come back out of order
        if any(document.text == "fail" for document in documents):
            raise InputError("note refused by the coder", path="made-up.jsonl", line=7)
        return [
            DocumentPrediction(
                d.id, [CodePrediction("I10", "icd10cm", 0.5, evidence=[Evidence(pieces=((0, d.text.find(" ")),))])]
            )
            for d in documents
        ]

    def fit(self, train, dev=None):
        raise NotImplementedError("a stand-in for coding only")

    def save(self, directory):
        raise NotImplementedError("a stand-in for coding only")

    @classmethod
    def load(cls, directory):
        raise NotImplementedError("a stand-in for coding only")


def _load_echo(fail_load: bool = False) -> _EchoCoder:
    if fail_load:
        raise OSError("cannot load the made-up coder")
    return _EchoCoder()


def _documents(count: int, text: str = "Paciente con fiebre alta.") -> list[Document]:
    return [Document(id=f"note-{i:0{1 + i % 3}d}", text=text, language="es") for i in range(count)]


class _TorchProbe(_EchoCoder):
    """Codes nothing; reports in each note's ``dropped`` counts the threads torch runs on in its process (0: torch is
    not loaded)."""

    def predict(self, documents):
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch is not None else 0
        return [DocumentPrediction(d.id, dropped={"torch_threads": threads}) for d in documents]


def _load_probe(on_torch: bool) -> _TorchProbe:
    if on_torch:
        import torch  # noqa: F401  (a coder that runs on torch imports it as it loads)
    return _TorchProbe()


def test_the_pool_returns_each_batch_in_input_order_as_one_process_writes_it(tmp_path):
    from icdcoder.infer.parallel import WorkerPool
    from icdcoder.infer.records import predict_to_jsonl

    documents = _documents(23)
    ids = [d.id for d in documents]
    pool = WorkerPool(_load_echo, workers=2)
    one = predict_to_jsonl(_load_echo, documents, ids, tmp_path / "one.jsonl", chunk=3, profile="codiesp")
    two = predict_to_jsonl(None, documents, ids, tmp_path / "two.jsonl", chunk=3, profile="codiesp", engine=pool)
    assert one == two == {"coded": 23, "resumed": 0}
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "two.jsonl").read_bytes()
    assert len(pool.peak_rss_mb) == 2 and all(peak > 0 for peak in pool.peak_rss_mb)


def test_a_worker_error_reaches_the_parent_as_it_was_raised_and_keeps_what_was_finished(tmp_path):
    from icdcoder.infer.parallel import WorkerPool
    from icdcoder.infer.records import predict_to_jsonl

    documents = _documents(12)
    documents[10] = documents[10].model_copy(update={"text": "fail"})
    with pytest.raises(InputError, match="made-up.jsonl:7: note refused by the coder"):
        predict_to_jsonl(
            None,
            documents,
            [d.id for d in documents],
            tmp_path / "out.jsonl",
            chunk=2,
            engine=WorkerPool(_load_echo, 2),
        )
    assert not (tmp_path / "out.jsonl").exists()
    finished = (tmp_path / "out.jsonl.partial").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in finished] == [d.id for d in documents[: len(finished)]]
    assert len(finished) % 2 == 0 and len(finished) <= 10


def test_a_coder_that_cannot_load_fails_the_run_and_leaves_nothing(tmp_path):
    from icdcoder.infer.parallel import WorkerPool
    from icdcoder.infer.records import predict_to_jsonl

    documents = _documents(4)
    with pytest.raises(OSError, match="cannot load the made-up coder"):
        predict_to_jsonl(
            None,
            documents,
            [d.id for d in documents],
            tmp_path / "out.jsonl",
            engine=WorkerPool(partial(_load_echo, True), 2),
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("on_torch", [False, True])
def test_a_worker_loads_torch_only_for_a_coder_that_runs_on_it_and_then_on_its_share_of_the_cores(tmp_path, on_torch):
    from icdcoder.infer.parallel import WorkerPool, threads_per_worker
    from icdcoder.infer.records import predict_to_jsonl

    documents = _documents(4)
    pool = WorkerPool(partial(_load_probe, on_torch), workers=2)
    predict_to_jsonl(None, documents, [d.id for d in documents], tmp_path / "out.jsonl", chunk=1, engine=pool)
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    threads = {json.loads(line)["dropped"]["torch_threads"] for line in lines}
    assert threads == ({threads_per_worker(2)} if on_torch else {0})


@pytest.mark.parametrize(
    "value, message",
    [
        ("0", "--workers must be between 1 and"),
        ("-2", "--workers must be between 1 and"),
        (str(len(os.sched_getaffinity(0)) + 1), "--workers must be between 1 and"),
        ("two", "Invalid value for '--workers'"),
    ],
)
def test_bad_worker_counts_are_one_line_and_write_nothing(tmp_path, value, message):
    notes = tmp_path / "notes.jsonl"
    notes.write_text(json.dumps({"id": "a", "text": SAMPLE, "language": "es"}) + "\n", encoding="utf-8")
    result = run_main("predict", "jsonl", "--input", notes, "--out", tmp_path / "out.jsonl", "--workers", value)
    assert_one_line_error(result, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.jsonl"]
    codiesp = run_main(
        "predict", "codiesp", "--data-dir", tmp_path, "--split", "dev", "--out-dir", tmp_path / "o", "--workers", value
    )
    assert_one_line_error(codiesp, message)


def test_a_model_folder_a_worker_cannot_load_is_one_line(tmp_path):
    notes = tmp_path / "notes.jsonl"
    notes.write_text(json.dumps({"id": "a", "text": SAMPLE, "language": "es"}) + "\n", encoding="utf-8")
    result = run_main(
        "predict",
        "jsonl",
        "--input",
        notes,
        "--out",
        tmp_path / "out.jsonl",
        "--model",
        tmp_path / "nowhere",
        "--workers",
        "2",
    )
    assert_one_line_error(result, "nowhere: model folder not found")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "notes.jsonl"
    ]  # the lock stays hidden


# ------------------------------------------------------------------------------ the commands, with the default coder


def _predict(archive: Path, out: Path, workers: int, *extra: str) -> list[str]:
    return [
        "predict",
        "jsonl",
        "--input",
        str(archive),
        "--out",
        str(out),
        "--lang",
        "es",
        "--chunk",
        "3",
        "--workers",
        str(workers),
        *extra,
    ]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> tuple[Path, Path]:
    """The archive and its predictions from one process."""
    folder = tmp_path_factory.mktemp("one")
    archive = sample_archive(folder, 48)
    result = run_main(*_predict(archive, folder / "one.jsonl", 1))
    assert result.status == 0, result.stderr[-2000:]
    return archive, folder / "one.jsonl"


def test_two_workers_write_the_bytes_one_process_writes(tmp_path, one_process):
    archive, whole = one_process
    result = run_main(*_predict(archive, tmp_path / "two.jsonl", 2))
    assert result.status == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == {"documents": 48, "coded": 48, "resumed": 0, "out": str(tmp_path / "two.jsonl")}
    assert (tmp_path / "two.jsonl").read_bytes() == whole.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["two.jsonl"]


def test_predict_codiesp_with_two_workers_writes_the_files_one_process_writes(tmp_path):
    corpus = make_codiesp(tmp_path / "codiesp")
    for workers in (1, 2):
        result = run_main(
            "predict",
            "codiesp",
            "--data-dir",
            corpus,
            "--split",
            "dev",
            "--out-dir",
            tmp_path / f"w{workers}",
            "--workers",
            str(workers),
        )
        assert result.status == 0, result.stderr[-2000:]
    for name in ("D.tsv", "P.tsv", "X.tsv", "predictions.jsonl"):
        assert (tmp_path / "w2" / name).read_bytes() == (tmp_path / "w1" / name).read_bytes(), name


def _children(pid: int) -> set[int]:
    """The processes ``pid`` started (Linux)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with open(task / "children", encoding="ascii") as handle:
            found.update(int(child) for child in handle.read().split())
    return found


def _coding_workers(children: set[int]) -> set[int]:
    """The pool's workers among a run's child processes: all but multiprocessing's resource tracker (Linux)."""
    return {pid for pid in children if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()}


def _gone(pids: set[int], timeout: float = 15) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(
            Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text() for pid in pids
        ):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process tree from /proc (Linux)")
@pytest.mark.parametrize("stop, rerun_workers", [("SIGINT", 2), ("SIGKILL", 1), ("worker SIGKILL", 2)])
def test_a_stopped_pool_run_resumes_to_the_same_output(tmp_path, one_process, stop, rerun_workers):
    archive, whole = one_process
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "icdcoder.cli", *_predict(archive, out, 2)]
    process = start_interruptible(command, REPO)
    wait_for_records(tmp_path / "out.jsonl.partial", process, at_least=6)
    workers = _children(process.pid)
    assert len(workers) >= 2  # the two workers (and multiprocessing's resource tracker)
    if stop == "worker SIGKILL":  # a coding worker, not multiprocessing's resource tracker
        os.kill(max(_coding_workers(workers)), signal.SIGKILL)
    else:
        process.send_signal(getattr(signal, stop))
    _, stderr = process.communicate(timeout=60)
    assert not out.exists()
    # multiprocessing's resource tracker (its own process) may warn about the ended workers' semaphores after the run's
    # last line
    lines = [line for line in stderr.strip().splitlines() if "resource_tracker" not in line]
    if stop == "SIGINT":
        assert process.returncode == 130 and lines[-1] == "interrupted; rerun the same command to resume"
    elif stop == "worker SIGKILL":
        assert process.returncode == 2 and "a coding worker ended unexpectedly" in lines[-1]
    assert "Traceback" not in stderr
    assert _gone(workers), "workers outlived their run"
    rerun = run_main(*_predict(archive, out, rerun_workers))
    assert rerun.status == 0, rerun.stderr[-2000:]
    counts = json.loads(rerun.stdout)
    assert counts["resumed"] >= 6 and counts["resumed"] + counts["coded"] == 48
    assert out.read_bytes() == whole.read_bytes()
    assert not list(tmp_path.glob("out.jsonl.partial*"))
