"""``icdcoder predict ray`` on a local Ray started by the test (2 CPUs): the output is the file ``predict jsonl``
writes, byte for byte; an interrupted run resumes by shard; a run with other settings refuses the shards."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from catalogue import REPO, assert_one_line_error, run_main

pytest.importorskip("ray", reason="predict ray needs Ray (pip install 'ray[data]')")

SAMPLE = (REPO / "examples" / "sample_note.txt").read_text(encoding="utf-8")
NOTES = 22


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def archive_and_expected(tmp_path_factory) -> tuple[Path, Path]:
    """Short notes (rotations of the sample note's sentences) and what ``predict jsonl`` writes for them."""
    folder = tmp_path_factory.mktemp("archive")
    sentences = [line for line in SAMPLE.splitlines() if line.strip()]
    records = [
        {"id": f"n{i:03d}", "text": " ".join(sentences[i % len(sentences) :] + sentences[: i % len(sentences)])}
        for i in range(NOTES)
    ]
    archive = folder / "archive.jsonl"
    archive.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    result = run_main("predict", "jsonl", "--input", archive, "--out", folder / "expected.jsonl", "--lang", "es")
    assert result.status == 0, result.stderr[-2000:]
    return archive, folder / "expected.jsonl"


def _ray_run(archive: Path, out: Path, *extra: str):
    return run_main(
        "predict", "ray", "--input", archive, "--out", out, "--lang", "es", "--shard-notes", "5", "--chunk", "2", *extra
    )


def test_ray_writes_the_file_predict_jsonl_writes(tmp_path, local_ray, archive_and_expected):
    archive, expected = archive_and_expected
    result = _ray_run(archive, tmp_path / "out.jsonl", "--actors", "2")
    assert result.status == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == {
        "documents": NOTES,
        "coded": NOTES,
        "resumed": 0,
        "out": str(tmp_path / "out.jsonl"),
    }
    assert (tmp_path / "out.jsonl").read_bytes() == expected.read_bytes()
    assert not (tmp_path / "out.jsonl.shards").exists()


def test_an_interrupted_ray_run_resumes_by_shard(tmp_path, local_ray, archive_and_expected):
    archive, expected = archive_and_expected
    # what a run stopped after its shards 0 and 3 leaves: their files and the run's fingerprint
    shards = tmp_path / "out.jsonl.shards"
    shards.mkdir()
    lines = expected.read_text(encoding="utf-8").splitlines(keepends=True)
    for index in (0, 3):
        (shards / f"{index:06d}.jsonl").write_text("".join(lines[index * 5 : index * 5 + 5]), encoding="utf-8")
    shutil.copy(_fingerprint_of_a_run(archive, tmp_path), shards / "fingerprint.json")
    rerun = _ray_run(archive, tmp_path / "out.jsonl")
    assert rerun.status == 0, rerun.stderr[-2000:]
    assert json.loads(rerun.stdout)["resumed"] == 10 and json.loads(rerun.stdout)["coded"] == NOTES - 10
    assert (tmp_path / "out.jsonl").read_bytes() == expected.read_bytes()
    assert not shards.exists()


def _fingerprint_of_a_run(archive: Path, tmp_path: Path) -> Path:
    """The fingerprint ``_ray_run`` records, as the command computes it."""
    from icdcoder.infer.cli import MAX_NOTE_CHARS, run_fingerprint
    from icdcoder.infer.records import file_digest

    path = tmp_path / "fingerprint.json"
    fingerprint = run_fingerprint(
        file_digest(archive), None, "span", "clinical", language="es", max_note_chars=MAX_NOTE_CHARS, shard_notes=5
    )
    path.write_text(json.dumps(fingerprint), encoding="utf-8")
    return path


def test_shards_of_a_run_with_other_settings_are_refused_in_one_line(tmp_path, local_ray, archive_and_expected):
    archive, _ = archive_and_expected
    shards = tmp_path / "out.jsonl.shards"
    shards.mkdir()
    (shards / "fingerprint.json").write_text(json.dumps({"shard_notes": 7}), encoding="utf-8")
    result = _ray_run(archive, tmp_path / "out.jsonl")
    assert_one_line_error(result, "out.jsonl.shards", "holds shards of a run with another")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_shard_that_holds_other_notes_is_refused_in_one_line(tmp_path, local_ray, archive_and_expected):
    archive, expected = archive_and_expected
    shards = tmp_path / "out.jsonl.shards"
    shards.mkdir()
    shutil.copy(_fingerprint_of_a_run(archive, tmp_path), shards / "fingerprint.json")
    lines = expected.read_text(encoding="utf-8").splitlines(keepends=True)
    (shards / "000001.jsonl").write_text("".join(lines[0:5]), encoding="utf-8")  # shard 0's notes under shard 1's name
    result = _ray_run(archive, tmp_path / "out.jsonl")
    assert_one_line_error(result, "000001.jsonl", "does not hold the notes of its shard")
    assert not (tmp_path / "out.jsonl").exists()


def test_no_cluster_at_the_address_is_one_line(tmp_path, archive_and_expected, monkeypatch):
    import ray

    def no_cluster(**_settings):
        raise ConnectionError("Could not find any running Ray instance.")

    archive, _ = archive_and_expected
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # a Ray of another test may be running in this process
    monkeypatch.setattr(ray, "init", no_cluster)
    result = run_main(
        "predict", "ray", "--input", archive, "--out", tmp_path / "out.jsonl", "--address", "auto", "--lang", "es"
    )
    assert_one_line_error(result, "--address auto: Could not find any running Ray instance")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []  # no output, no shards folder


def test_ray_is_imported_only_by_the_ray_command():
    import subprocess

    script = "import sys\nimport icdcoder.cli\nimport icdcoder.infer.parallel\nprint('ray' in sys.modules)\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
