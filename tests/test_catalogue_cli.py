"""The failure catalogue of the coding commands: bad usage, bad inputs, outputs that would destroy or mix data, runs
that cannot resume. Each case runs the real entry point and must end in one line naming the place, exit status 2,
nothing written. The fault tests at the end stop real processes (Ctrl-C, kill -9) and run two at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from catalogue import REPO, assert_one_line_error, run_main, sample_archive, start_interruptible, wait_for_records

SAMPLE = (REPO / "examples" / "sample_note.txt").read_text(encoding="utf-8")


@dataclass
class Case:
    """``args`` may hold ``{tmp}`` (the case's folder) and ``{codiesp}`` (a small CodiEsp folder); ``setup`` writes
    the case's files; ``fragments`` must all be in the error line."""

    id: str
    args: list[str]
    fragments: tuple[str, ...]
    setup: Callable[[Path], None] | None = None
    stdin: str = ""


def _notes(tmp: Path, *records: dict, name: str = "notes.jsonl") -> None:
    (tmp / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _good_notes(tmp: Path) -> None:
    _notes(
        tmp, {"id": "a", "text": SAMPLE, "language": "es"}, {"id": "b", "text": "Paciente con hipertensión arterial."}
    )


def _partial(tmp: Path, record: dict, fingerprint: dict | None) -> None:
    """An interrupted run's leftovers beside ``out.jsonl`` (the fingerprint of a run with ``--lang en``)."""
    from icdcoder.infer.cli import MAX_NOTE_CHARS, run_fingerprint
    from icdcoder.infer.records import file_digest

    _good_notes(tmp)
    (tmp / "out.jsonl.partial").write_text(json.dumps(record) + "\n", encoding="utf-8")
    if fingerprint is not None:
        recorded = run_fingerprint(
            file_digest(tmp / "notes.jsonl"), None, "span", "clinical", language="en", max_note_chars=MAX_NOTE_CHARS
        )
        (tmp / "out.jsonl.partial.json").write_text(json.dumps({**recorded, **fingerprint}), encoding="utf-8")


def _mkdir(*parts: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp.joinpath(*parts)).mkdir(parents=True)


def _file(name: str, content: bytes = b"x") -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_bytes(content)


def _both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        for setup in setups:
            setup(tmp)

    return run


PREDICT = ["predict", "jsonl", "--input", "{tmp}/notes.jsonl", "--out", "{tmp}/out.jsonl"]
CODIESP = ["predict", "codiesp", "--data-dir", "{codiesp}", "--split", "dev"]

CASES = [
    # usage: one line naming the command, never a traceback
    Case(
        "missing-out", ["predict", "jsonl", "--input", "x.jsonl"], ("icdcoder predict jsonl", "Missing option '--out'")
    ),
    Case("missing-input", ["predict", "jsonl", "--out", "x.jsonl"], ("Missing option '--input'",)),
    Case("unknown-option", ["code", "note.txt", "--bogus"], ("icdcoder code", "No such option: --bogus")),
    Case("unknown-command", ["nope"], ("No such command 'nope'",)),
    Case("unknown-subcommand", ["predict", "nope"], ("icdcoder predict", "No such command 'nope'")),
    Case("chunk-zero", [*PREDICT, "--chunk", "0"], ("--chunk",)),
    Case("chunk-not-a-number", [*PREDICT, "--chunk", "many"], ("--chunk", "valid integer")),
    Case("children-negative", ["codes", "show", "--children", "-1", "I10"], ("--children",)),
    Case("code-without-note", ["code"], ("Missing argument",)),
    Case("max-note-chars-zero", [*PREDICT, "--max-note-chars", "0"], ("--max-note-chars",)),
    Case("lang-unknown-code", ["code", "-", "--lang", "xx"], ("--lang must be es or en",), stdin="fiebre"),
    Case("lang-unknown-predict", [*PREDICT, "--lang", "fr"], ("--lang must be es or en",), _good_notes),
    Case("lang-unknown-codiesp", [*CODIESP, "--out-dir", "{tmp}/o", "--lang", "de"], ("--lang must be es or en",)),
    # outputs that would destroy or mix data, refused before any work
    Case(
        "out-is-input",
        ["predict", "jsonl", "--input", "{tmp}/notes.jsonl", "--out", "{tmp}/notes.jsonl"],
        ("is also an input",),
        _good_notes,
    ),
    Case(
        "out-is-input-by-detour",
        ["predict", "jsonl", "--input", "{tmp}/notes.jsonl", "--out", "{tmp}/sub/../notes.jsonl"],
        ("is also an input",),
        _both(_good_notes, _mkdir("sub")),
    ),
    Case(
        "out-is-input-by-hard-link",
        ["predict", "jsonl", "--input", "{tmp}/notes.jsonl", "--out", "{tmp}/link.jsonl"],
        ("is also an input",),
        _both(_good_notes, lambda tmp: os.link(tmp / "notes.jsonl", tmp / "link.jsonl")),
    ),
    Case(
        "out-is-a-folder",
        [*PREDICT[:4], "--out", "{tmp}/folder"],
        ("is a folder",),
        _both(_good_notes, _mkdir("folder")),
    ),
    Case(
        "out-under-proc",
        [*PREDICT[:4], "--out", "/proc/icdcoder/out.jsonl"],
        ("/proc/icdcoder/out.jsonl", "cannot write here"),
        _good_notes,
    ),
    Case(
        "out-under-a-file",
        [*PREDICT[:4], "--out", "{tmp}/plain/out.jsonl"],
        ("cannot write here",),
        _both(_good_notes, _file("plain")),
    ),
    Case("out-dir-is-a-file", [*CODIESP, "--out-dir", "{tmp}/plain"], ("exists and is not a folder",), _file("plain")),
    Case("out-dir-is-the-split", [*CODIESP, "--out-dir", "{codiesp}/dev"], ("is also an input",)),
    Case("out-dir-is-the-corpus", [*CODIESP, "--out-dir", "{codiesp}"], ("is also an input",)),
    Case("out-dir-under-proc", [*CODIESP, "--out-dir", "/proc/icdcoder"], ("cannot write here",)),
    Case(
        "export-out-is-a-folder",
        ["data", "export", "codiesp", "--data-dir", "{codiesp}", "--split", "dev", "--out", "{tmp}"],
        ("is a folder",),
    ),
    Case(
        "export-out-under-proc",
        ["data", "export", "codiesp", "--data-dir", "{codiesp}", "--split", "dev", "--out", "/proc/x/y"],
        ("cannot write here",),
    ),
    Case(
        "tune-out-dir-is-a-file",
        ["predict", "tune", "--model", "{tmp}", "--out-dir", "{tmp}/plain"],
        ("exists and is not a folder",),
        _file("plain"),
    ),
    # notes the coder cannot read
    Case("input-missing", PREDICT, ("notes.jsonl", "file not found")),
    Case("input-is-a-folder", ["predict", "jsonl", "--input", "{tmp}", "--out", "{tmp}/o.jsonl"], ("is a folder",)),
    Case(
        "input-not-utf8",
        PREDICT,
        ("notes.jsonl:1", "not valid UTF-8"),
        _file("notes.jsonl", b'{"id": "a", "text": "\xff"}\n'),
    ),
    Case(
        "input-malformed-json",
        PREDICT,
        ("notes.jsonl:2", "malformed JSON"),
        lambda tmp: (tmp / "notes.jsonl").write_text('{"id": "a", "text": "fiebre"}\n{"id": \n', encoding="utf-8"),
    ),
    Case("input-not-an-object", PREDICT, ("notes.jsonl:1", "expected a JSON object"), _file("notes.jsonl", b"[1]\n")),
    Case("input-no-text", PREDICT, ("notes.jsonl:1", "field 'text'"), lambda tmp: _notes(tmp, {"id": "a"})),
    Case("input-no-id", PREDICT, ("notes.jsonl:1", "field 'id'"), lambda tmp: _notes(tmp, {"text": "fiebre"})),
    Case(
        "input-unknown-field",
        PREDICT,
        ("notes.jsonl:1", "field 'colour'"),
        lambda tmp: _notes(tmp, {"id": "a", "text": "x", "colour": 1}),
    ),
    Case(
        "input-unknown-language",
        PREDICT,
        ("notes.jsonl:2", "field 'language'", "'xx'"),
        lambda tmp: _notes(tmp, {"id": "a", "text": "fiebre"}, {"id": "b", "text": "fiebre", "language": "xx"}),
    ),
    Case(
        "input-empty-text",
        PREDICT,
        ("notes.jsonl:1", "field 'text'", "empty"),
        lambda tmp: _notes(tmp, {"id": "a", "text": ""}),
    ),
    Case(
        "input-blank-text", PREDICT, ("notes.jsonl:1", "empty"), lambda tmp: _notes(tmp, {"id": "a", "text": " \n\t "})
    ),
    Case(
        "input-text-not-a-string",
        PREDICT,
        ("notes.jsonl:1", "field 'text'"),
        lambda tmp: _notes(tmp, {"id": "a", "text": 7}),
    ),
    Case(
        "input-id-twice",
        PREDICT,
        ("notes.jsonl", "'a' occurs twice"),
        lambda tmp: _notes(tmp, {"id": "a", "text": "x"}, {"id": "a", "text": "y"}),
    ),
    Case(
        "input-note-too-long",
        [*PREDICT, "--max-note-chars", "100"],
        ("notes.jsonl:1", "more than the limit of 100"),
        _good_notes,
    ),
    Case(
        "input-bad-gold-evidence",
        PREDICT,
        ("notes.jsonl:1", "ends past the text"),
        lambda tmp: _notes(
            tmp,
            {
                "id": "a",
                "text": "fiebre",
                "codes": [{"code": "R50.9", "system": "icd10cm", "evidence": [{"pieces": [[0, 60]]}]}],
            },
        ),
    ),
    Case(
        "code-note-too-long",
        ["code", "-", "--max-note-chars", "10"],
        ("<stdin>", "more than the limit of 10"),
        stdin=SAMPLE,
    ),
    Case("code-empty-stdin", ["code", "-"], ("<stdin>", "empty"), stdin="  \n"),
    Case("code-note-missing", ["code", "{tmp}/none.txt"], ("none.txt", "file not found")),
    Case("code-note-is-a-folder", ["code", "{tmp}"], ("is a folder",)),
    Case("code-note-unreadable", ["code", "/proc/self/mem"], ("/proc/self/mem", "cannot read")),
    Case(
        "input-unreadable",
        ["predict", "jsonl", "--input", "/proc/self/mem", "--out", "{tmp}/o.jsonl"],
        ("/proc/self/mem", "cannot read"),
    ),
    Case(
        "code-translation-missing",
        ["code", "-", "--translation", "{tmp}/en.txt"],
        ("en.txt", "file not found"),
        stdin="fiebre",
    ),
    Case(
        "codiesp-split-missing",
        [*CODIESP[:4], "--split", "test", "--out-dir", "{tmp}/o"],
        ("split folder 'test' not found",),
    ),
    Case(
        "codiesp-note-too-long",
        [*CODIESP, "--out-dir", "{tmp}/o", "--max-note-chars", "20"],
        ("text_files", ".txt", "more than the limit"),
    ),
    Case("model-missing", [*PREDICT, "--model", "{tmp}/nomodel"], ("nomodel", "model folder not found"), _good_notes),
    Case(
        "model-not-a-coder",
        [*PREDICT, "--model", "{tmp}/empty"],
        ("not a coder folder",),
        _both(_good_notes, _mkdir("empty")),
    ),
    Case("system-unknown", [*PREDICT, "--system", "gpt"], ("unknown system 'gpt'",), _good_notes),
    # an interrupted run's leftovers that must not be carried into the output
    Case(
        "resume-other-language",
        [*PREDICT, "--lang", "es"],
        ("out.jsonl.partial", "another language"),
        lambda tmp: _partial(tmp, {"id": "a", "codes": []}, {}),
    ),
    Case(
        "resume-other-input",
        [*PREDICT, "--lang", "en"],
        ("another input",),
        lambda tmp: _partial(tmp, {"id": "a", "codes": []}, {"input": "0" * 64}),
    ),
    Case(
        "resume-other-model",
        [*PREDICT, "--lang", "en"],
        ("another model",),
        lambda tmp: _partial(tmp, {"id": "a", "codes": []}, {"model": "0" * 64}),
    ),
    Case(
        "resume-other-limit",
        [*PREDICT, "--lang", "en", "--max-note-chars", "9999"],
        ("another max_note_chars",),
        lambda tmp: _partial(tmp, {"id": "a", "codes": []}, {}),
    ),
    Case(
        "resume-no-fingerprint",
        PREDICT,
        ("has no fingerprint",),
        lambda tmp: _partial(tmp, {"id": "a", "codes": []}, None),
    ),
    Case(
        "resume-record-without-codes",
        [*PREDICT, "--lang", "en"],
        ("out.jsonl.partial:1", "field 'codes'"),
        lambda tmp: _partial(tmp, {"id": "a"}, {}),
    ),
    Case(
        "resume-nan-score",
        [*PREDICT, "--lang", "en"],
        ("out.jsonl.partial:1", "finite"),
        lambda tmp: _partial(
            tmp, {"id": "a", "codes": [{"code": "I10", "system": "icd10cm", "score": float("nan")}]}, {}
        ),
    ),
    Case(
        "resume-foreign-note",
        [*PREDICT, "--lang", "en"],
        ("not in the input", "'zz'"),
        lambda tmp: _partial(tmp, {"id": "zz", "codes": []}, {}),
    ),
    Case(
        "resume-quote-not-in-note",
        [*PREDICT, "--lang", "en"],
        ("out.jsonl.partial:1", "does not quote the note"),
        lambda tmp: _partial(
            tmp,
            {
                "id": "b",
                "codes": [
                    {
                        "code": "I10",
                        "system": "icd10cm",
                        "score": 0.9,
                        "evidence": [{"start": 13, "end": 25, "quote": "diabetes"}],
                    }
                ],
            },
            {},
        ),
    ),
]


@pytest.fixture(scope="module")
def small_codiesp(tmp_path_factory) -> Path:
    from test_infer_support import make_codiesp

    return make_codiesp(tmp_path_factory.mktemp("codiesp"))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_catalogue(case: Case, tmp_path: Path, small_codiesp: Path):
    if case.setup is not None:
        case.setup(tmp_path)
    before = _listing(tmp_path)
    args = [arg.format(tmp=tmp_path, codiesp=small_codiesp) for arg in case.args]
    result = run_main(*args, stdin=case.stdin)
    assert_one_line_error(result, *(fragment.format(tmp=tmp_path) for fragment in case.fragments))
    assert "hipertensión" not in result.stderr and "Paciente" not in result.stderr  # no clinical text in messages
    assert not {path for path in _listing(tmp_path) - before if not path.endswith((".lock", "/o"))}, (
        "a failed run wrote files"
    )


def _listing(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def test_version_and_help_exit_0():
    from icdcoder import __version__

    assert run_main("--version").stdout.strip() == f"icdcoder {__version__}"
    bare = run_main()
    assert bare.status == 0 and "Usage" in bare.stdout


def test_the_installed_entry_point_gives_one_line_for_a_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "icdcoder.cli", "predict", "jsonl", "--input", "x"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert (
        result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "Missing option '--out'" in result.stderr
    )


def test_a_held_lock_refuses_a_second_writer_in_one_line(tmp_path):
    from icdcoder.io import output_lock

    _good_notes(tmp_path)
    with output_lock(tmp_path / "out.jsonl"):
        result = run_main(*[arg.format(tmp=tmp_path) for arg in PREDICT])
    assert_one_line_error(result, "another icdcoder run is writing this output")
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.partial").exists()


# ---------------------------------------------------------------------------------------------- fault tests


def _start(archive: Path, out: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "icdcoder.cli",
        "predict",
        "jsonl",
        "--input",
        str(archive),
        "--out",
        str(out),
        "--lang",
        "es",
        "--chunk",
        "4",
    ]
    return start_interruptible(command, REPO)


def _ids_of(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, Path]:
    """The archive and its predictions from one run that nothing stopped."""
    folder = tmp_path_factory.mktemp("whole")
    archive = sample_archive(folder, 240)
    result = run_main("predict", "jsonl", "--input", str(archive), "--out", str(folder / "whole.jsonl"), "--lang", "es")
    assert result.status == 0, result.stderr[-2000:]
    return archive, folder / "whole.jsonl"


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["SIGINT", "SIGKILL"])
def test_a_stopped_run_resumes_to_the_same_output(stop, tmp_path, uninterrupted):
    archive, whole = uninterrupted
    out = tmp_path / "out.jsonl"
    process = _start(archive, out)
    wait_for_records(tmp_path / "out.jsonl.partial", process, at_least=8)
    process.send_signal(getattr(signal, stop))
    _, stderr = process.communicate(timeout=60)
    assert not out.exists()
    if stop == "SIGINT":
        assert (
            process.returncode == 130
            and stderr.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
        )
        assert "Traceback" not in stderr
    else:
        assert process.returncode == -signal.SIGKILL
    rerun = run_main("predict", "jsonl", "--input", str(archive), "--out", str(out), "--lang", "es")
    assert rerun.status == 0, rerun.stderr[-2000:]
    counts = json.loads(rerun.stdout)
    assert counts["resumed"] >= 8 and counts["resumed"] + counts["coded"] == 240
    assert out.read_text(encoding="utf-8").splitlines() != []
    assert sorted(_ids_of(out)) == _ids_of(whole)  # every note once
    by_id = {json.loads(line)["id"]: line for line in out.read_text(encoding="utf-8").splitlines()}
    assert [by_id[i] for i in _ids_of(whole)] == whole.read_text(encoding="utf-8").splitlines()
    assert not list(tmp_path.glob("out.jsonl.partial*"))


@pytest.mark.slow
def test_two_runs_on_one_output_never_mix(tmp_path, uninterrupted):
    archive, whole = uninterrupted
    out = tmp_path / "out.jsonl"
    first = _start(archive, out)
    wait_for_records(tmp_path / "out.jsonl.partial", first, at_least=1)
    second = run_main("predict", "jsonl", "--input", str(archive), "--out", str(out), "--lang", "es")
    assert_one_line_error(second, "another icdcoder run is writing this output")
    assert first.wait(timeout=300) == 0, first.communicate()[1][-2000:]
    assert _ids_of(out) == _ids_of(whole)  # each note once, in input order
