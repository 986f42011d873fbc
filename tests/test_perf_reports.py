"""``icdcoder.reports``: the perf results files become the generated blocks of the README and the docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from icdcoder.errors import InputError
from icdcoder.reports import publish_perf, render_perf, replace_block

MACHINE = {"cpu_model": "Test CPU 3000", "cores": 2, "memory_gb": 23.4}
PHASE = {
    "notes": 200,
    "wall_s": 7.31,
    "notes_per_s": 27.36,
    "p50_ms": 673,
    "p95_ms": 4754,
    "refused_429": 114,
    "max_waiting": 16,
    "bound": 16,
    "bound_honoured": True,
    "lost": 0,
    "duplicated": 0,
    "mismatched": 0,
    "load_avg_before": 0.6,
}
SERVE_LOAD = {
    "command": "python benchmarks/perf/serve_load.py",
    "commit": "0123456789abcdef+dirty",
    "machine": MACHINE,
    "clients": 50,
    "per_client": 4,
    "words_per_note": 412,
    "queue_bound": 16,
    "batch": 8,
    "phases": [{**PHASE, "phase": "code"}, {**PHASE, "phase": "jobs", "notes_per_s": 23.7, "p95_ms": 8421}],
}


def write_tree(root: Path, serve_load: object) -> Path:
    """A README holding the summary block and a docs page holding the table block; the results file as given."""
    (root / "results" / "perf").mkdir(parents=True)
    (root / "results" / "perf" / "serve_load.json").write_text(json.dumps(serve_load), encoding="utf-8")
    (root / "README.md").write_text(
        "# x\n<!-- perf:serve_load:start -->\nold\n<!-- perf:serve_load:end -->\nafter\n", encoding="utf-8"
    )
    (root / "docs").mkdir()
    (root / "docs" / "serve.md").write_text(
        "## Load\n<!-- perf:serve_load_table:start -->\n<!-- perf:serve_load_table:end -->\n", encoding="utf-8"
    )
    return root


def test_render_writes_the_blocks_from_the_results_file(tmp_path):
    root = write_tree(tmp_path, SERVE_LOAD)
    holders = render_perf("serve_load", root=root, targets=[Path("README.md"), Path("docs/serve.md")])
    assert holders == [root / "README.md", root / "docs" / "serve.md"]
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "old" not in readme and readme.endswith("<!-- perf:serve_load:end -->\nafter\n")
    assert (
        "`POST /v1/code` 27.4 notes/s, p50/p95 673/4,754 ms; `POST /v1/jobs` 23.7 notes/s, p50/p95 673/8,421" in readme
    )
    assert "queue bound 16 honoured, 0 lost, 0 duplicated. `python benchmarks/perf/serve_load.py`" in readme
    assert "50 clients × 4 notes of 412 words, 2 cores, load average up to 0.6 before:" in readme
    table = (root / "docs" / "serve.md").read_text(encoding="utf-8")
    assert (
        "| `POST /v1/jobs` (50 jobs of 4) | 200 | 7.3 | 23.7 | 673 | 8,421 | 114 | 16 / 16 | 0 | 0 | 0 | 0.6 | - |"
        in table
    )
    assert "2 cores (Test CPU 3000, 23.4 GB RAM)" in table
    assert "Printed by `python benchmarks/perf/serve_load.py` (commit `0123456789ab with uncommitted changes`)" in table
    render_perf("serve_load", root=root, targets=[Path("README.md"), Path("docs/serve.md")])
    assert (root / "README.md").read_text(encoding="utf-8") == readme  # rendering twice changes nothing


def test_an_exceeded_bound_or_a_lost_note_shows(tmp_path):
    broken = {
        **SERVE_LOAD,
        "phases": [{**PHASE, "phase": "code", "max_waiting": 17, "bound_honoured": False, "lost": 2}],
    }
    root = write_tree(tmp_path, broken)
    render_perf("serve_load", root=root, targets=[Path("README.md"), Path("docs/serve.md")])
    assert "queue bound 16 EXCEEDED, 2 lost" in (root / "README.md").read_text(encoding="utf-8")


def test_the_archive_scale_blocks(tmp_path):
    run = {
        "notes_per_s": 4.0,
        "startup_s": 4.8,
        "hours_330k": 23.0,
        "steady_cpu_s_per_note": 0.231,
        "other_cpu_share": 0.02,
    }
    runs = [
        {
            **run,
            "engine": "predict jsonl --workers 1",
            "workers": 1,
            "peak_rss_mb_per_worker": 852.1,
            "load_avg_before": 0.7,
        },
        {
            **run,
            "engine": "predict jsonl --workers 2",
            "workers": 2,
            "notes_per_s": 7.5,
            "peak_rss_mb_per_worker": 1023.9,
            "load_avg_before": 0.9,
        },
        {
            **run,
            "engine": "predict ray",
            "workers": 2,
            "notes_per_s": 6.9,
            "peak_rss_mb_per_worker": None,
            "load_avg_before": 1.4,
            "other_cpu_share": 0.125,
        },
    ]
    record = {
        "command": "python benchmarks/perf/archive_scale.py --notes 200",
        "machine": MACHINE,
        "archive": {"notes": 200, "median_words": 2204, "words": 464641, "bytes": 3_000_000},
        "chunk": 4,
        "shard_notes": 8,
        "output_bytes": 6_900_000,
        "identical_outputs": True,
        "speedup_workers": 1.875,
        "ray_vs_workers": 0.92,
        "runs": runs,
    }
    (tmp_path / "results" / "perf").mkdir(parents=True)
    (tmp_path / "results" / "perf" / "archive_scale.json").write_text(json.dumps(record), encoding="utf-8")
    page = tmp_path / "scale.md"
    page.write_text(
        "<!-- perf:archive_scale:start --><!-- perf:archive_scale:end -->\n"
        "<!-- perf:archive_scale_table:start --><!-- perf:archive_scale_table:end -->\n",
        encoding="utf-8",
    )
    render_perf("archive_scale", root=tmp_path, targets=[Path("scale.md")])
    text = page.read_text(encoding="utf-8")
    assert (
        "2 cores, other work took up to 12% of the CPU: `--workers 2` 7.50 notes/s, 1.88× one worker; Ray (2 actors) 0.92× `--workers 2`"
        in text
    )
    assert "peak RAM 852-1,024 MB per worker; outputs byte-identical" in text
    assert "| `predict ray` (2 actors) | 6.90 | 1.73× | 4.8 | - | 0.231 | 23.0 | 1.4 | 12% |" in text
    assert "15.0 KB of JSONL a note; the records written are 2.3× the notes' size)" in text
    assert "`--chunk 4`, Ray shards of 8 notes, on 2 cores (Test CPU 3000, 23.4 GB RAM)" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"serve_load\.json:1: not a perf results file"),
        (
            json.dumps({**SERVE_LOAD, "phases": [{**PHASE, "phase": "code", "p95_ms": None}]}),
            r"field 'phases\.0\.p95_ms'",
        ),
        (json.dumps({key: value for key, value in SERVE_LOAD.items() if key != "machine"}), r"field 'machine'"),
        (json.dumps([1, 2]), r"serve_load\.json: field '\(top level\)'"),
    ],
)
def test_a_malformed_results_file_is_one_line_naming_it(tmp_path, content, message):
    root = write_tree(tmp_path, {})
    (root / "results" / "perf" / "serve_load.json").write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message) as raised:
        render_perf("serve_load", root=root, targets=[Path("README.md")])
    assert "\n" not in str(raised.value)
    assert "old" in (root / "README.md").read_text(encoding="utf-8")  # nothing written


def test_a_missing_marker_or_end_marker_is_named(tmp_path):
    root = write_tree(tmp_path, SERVE_LOAD)
    with pytest.raises(InputError, match="no '<!-- perf:serve_load_table:start -->' marker in .*README.md"):
        render_perf("serve_load", root=root, targets=[Path("README.md")])
    assert "old" in (root / "README.md").read_text(encoding="utf-8")  # a missing block: nothing written
    with pytest.raises(InputError, match=r"page\.md: marker '<!-- x:start -->' without '<!-- x:end -->'"):
        replace_block("a <!-- x:start --> b", "x", "body", path="page.md")


def test_publish_writes_the_result_and_renders_only_what_the_docs_show(tmp_path, capsys):
    root = write_tree(tmp_path / "repo", {})
    (root / "docs" / "scale.md").write_text("", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    publish_perf("serve_load", SERVE_LOAD, elsewhere, root)
    assert json.loads((elsewhere / "serve_load.json").read_text(encoding="utf-8")) == SERVE_LOAD
    assert "old" in (root / "README.md").read_text(encoding="utf-8")  # the docs show results/perf, left alone
    assert "docs not rendered" in capsys.readouterr().err
    publish_perf("serve_load", SERVE_LOAD, root / "results" / "perf", root)
    assert "old" not in (root / "README.md").read_text(encoding="utf-8")
