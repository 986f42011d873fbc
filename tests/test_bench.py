"""``icdcoder bench`` on a tiny CodiEsp-layout corpus: outputs, README update, failures, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_baselines_simple import tiny_corpus, write_codiesp_layout

from icdcoder.errors import InputError
from icdcoder.evaluate import bench as bench_module

README = """# project

<!-- bench:tiny:start -->
old table
<!-- bench:tiny:end -->

after
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("codiesp")
    train, dev = tiny_corpus()
    write_codiesp_layout(root, "train", train)
    write_codiesp_layout(root, "dev", dev)
    return root


def write_config(path: Path, data_dir: Path, out: Path, systems: list[dict], isolate: bool = False) -> Path:
    config = {
        "name": "tiny",
        "data_dir": str(data_dir),
        "output_dir": str(out),
        "work_dir": str(out / "work"),
        "readme_marker": "tiny",
        "isolate": isolate,
        "systems": systems,
    }
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


def run_bench(config: Path, *extra: str):
    import typer
    from typer.testing import CliRunner

    app = typer.Typer()
    app.command()(bench_module.bench)
    return CliRunner().invoke(app, ["--config", str(config), *extra])


SYSTEMS = [
    {"name": "dictionary", "system": "dictionary"},
    {"name": "tfidf", "system": "tfidf"},
    {"name": "broken", "system": "no-such-system"},
]


def test_bench_writes_json_md_png_and_updates_readme(data_dir, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    config = write_config(tmp_path / "bench.yaml", data_dir, tmp_path / "results", SYSTEMS)
    result = run_bench(config, "--update-readme", str(readme))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert (summary["ok"], summary["failed"]) == (2, 1)

    report = json.loads((tmp_path / "results" / "tiny.json").read_text(encoding="utf-8"))
    by_name = {r["name"]: r for r in report["results"]}
    assert by_name["broken"]["status"] == "failed" and "no-such-system" in by_name["broken"]["reason"]
    dictionary = by_name["dictionary"]
    assert dictionary["metrics"]["d_map"] > 0.5 and dictionary["metrics"]["x_f1"] > 0.5
    assert dictionary["cost"]["notes_per_second"] > 0 and dictionary["cost"]["train_seconds"] > 0
    assert dictionary["codiesp"]["D"]["map"] == dictionary["metrics"]["d_map"]
    assert (tmp_path / "results" / "work" / "tiny" / "models" / "tfidf" / "meta.json").is_file()
    assert (tmp_path / "results" / "work" / "tiny" / "submissions" / "dictionary" / "X.tsv").is_file()

    table = (tmp_path / "results" / "tiny.md").read_text(encoding="utf-8")
    assert "| dictionary |" in table and "| broken | failed: " in table and "D MAP" in table
    assert (tmp_path / "results" / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    updated = readme.read_text(encoding="utf-8")
    assert "old table" not in updated and "| dictionary |" in updated
    assert updated.startswith("# project\n\n<!-- bench:tiny:start -->\n|") and updated.endswith("end -->\n\nafter\n")


def test_bench_resumes_from_finished_systems(data_dir, tmp_path, monkeypatch):
    systems = SYSTEMS[:1]
    config = write_config(tmp_path / "bench.yaml", data_dir, tmp_path / "results", systems)
    assert run_bench(config).exit_code == 0
    cached = tmp_path / "results" / "tiny" / "dictionary.json"
    before = cached.read_text(encoding="utf-8")

    def must_not_run(*_args, **_kwargs):
        raise AssertionError("a finished system was run again")

    monkeypatch.setattr(bench_module, "run_system", must_not_run)
    resumed = run_bench(config)
    assert resumed.exit_code == 0 and '"ok": 1, "failed": 0' in resumed.output
    assert cached.read_text(encoding="utf-8") == before
    forced = run_bench(config, "--force")  # --force re-runs: here that fails, and is reported, not raised
    assert forced.exit_code == 0 and "failed: AssertionError" in forced.output


def test_bench_runs_each_system_in_its_own_process(data_dir, tmp_path):
    config = write_config(tmp_path / "bench.yaml", data_dir, tmp_path / "out", SYSTEMS[:1], isolate=True)
    result = run_bench(config)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "tiny" / "dictionary.json").read_text(encoding="utf-8"))
    assert record["status"] == "ok" and record["cost"]["peak_rss_mb"] > 0


def test_readme_without_markers_is_an_input_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# nothing here\n", encoding="utf-8")
    with pytest.raises(InputError, match="README.md.*bench:tiny:start"):
        bench_module.update_readme(readme, "tiny", "| table |")
    assert readme.read_text(encoding="utf-8") == "# nothing here\n"


def test_duplicate_system_names_are_rejected(data_dir, tmp_path):
    config = write_config(tmp_path / "bench.yaml", data_dir, tmp_path / "results", SYSTEMS[:1] * 2)
    result = run_bench(config)
    assert isinstance(result.exception, InputError) and "unique" in str(result.exception)


def test_only_runs_the_named_systems_and_tabulates_the_rest(data_dir, tmp_path):
    config = write_config(tmp_path / "bench.yaml", data_dir, tmp_path / "results", SYSTEMS[:2])
    result = run_bench(config, "--only", "dictionary")
    assert result.exit_code == 0, result.output
    assert '"ok": 1, "failed": 0, "skipped": 1' in result.output
    assert "| tfidf | skipped: not run (--only) |" in (tmp_path / "results" / "tiny.md").read_text(encoding="utf-8")
    assert not (tmp_path / "results" / "tiny" / "tfidf.json").exists()
    unknown = run_bench(config, "--only", "nothing")
    assert isinstance(unknown.exception, InputError) and "nothing" in str(unknown.exception)


def test_table_reads_results_another_bench_stored_meanwhile(data_dir, tmp_path, monkeypatch):
    config = write_config(tmp_path / "bench.yaml", data_dir, tmp_path / "results", SYSTEMS[:2])
    assert run_bench(config, "--only", "dictionary").exit_code == 0
    stored = tmp_path / "results" / "tiny" / "dictionary.json"
    finished = stored.read_text(encoding="utf-8")
    stored.unlink()
    run_system = bench_module.run_system

    def run_while_another_bench_finishes_dictionary(spec, settings):
        stored.write_text(finished, encoding="utf-8")
        return run_system(spec, settings)

    monkeypatch.setattr(bench_module, "run_system", run_while_another_bench_finishes_dictionary)
    result = run_bench(config, "--only", "tfidf")
    assert result.exit_code == 0, result.output
    assert '"ok": 2, "failed": 0, "skipped": 0' in result.output
    table = (tmp_path / "results" / "tiny.md").read_text(encoding="utf-8")
    assert "| dictionary |" in table and "skipped" not in table
