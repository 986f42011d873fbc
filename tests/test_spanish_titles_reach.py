"""``benchmarks/spanish_titles_reach.py``: Spanish titles read on made-up notes, counted against made-up predictions."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark
from test_infer_support import NOTES, write_split

BALANITIS = ("S0009-1", "Varón de 30 años con balanitis aguda e hipertensión esencial.", [("n48.1", "D", "balanitis")])
TITLES = (
    "code,description,level\n"
    "N481,Balanitis,4\n"
    "I10,Hipertensión esencial (primaria),3\n"
    'N39.0,"Infección de vías urinarias, sitio no especificado",4\n'
    "A00-B99,Ciertas enfermedades infecciosas y parasitarias,0\n"
    "Z99.9,Un código que ICD-10-CM no tiene,4\n"
)


@pytest.fixture()
def corpus(tmp_path) -> Path:
    write_split(tmp_path, "train", NOTES)
    write_split(tmp_path, "dev", [BALANITIS])
    (tmp_path / "titles.csv").write_text(TITLES, encoding="utf-8")
    return tmp_path


def predictions(folder: Path, decided: str, ranked: str) -> Path:
    folder.mkdir()
    (folder / "D.tsv").write_text(decided, encoding="utf-8")
    (folder / "D_ranking.tsv").write_text(ranked, encoding="utf-8")
    return folder


def test_titles_are_read_as_a_note_would_word_them():
    bench = load_benchmark("spanish_titles_reach.py")
    assert bench.title_wordings("Infección de vías urinarias, sitio no especificado") == (
        "Infección de vías urinarias",
        "Infección de vías urinarias, sitio",
        "Infección de vías urinarias, sitio no especificado",
    )
    assert "Diabetes mellitus tipo 2" in bench.title_wordings("Diabetes mellitus tipo 2 sin complicaciones")
    assert "Hipertensión esencial" in bench.title_wordings("Hipertensión esencial (primaria)")


def test_reach_counts_the_unseen_codes_the_titles_name_that_the_coder_misses(corpus, tmp_path):
    bench = load_benchmark("spanish_titles_reach.py")
    missed = predictions(tmp_path / "missed", "S0009-1\ti10\n", "S0009-1\ti10\nS0009-1\tr07.9\n")
    counts = bench.reach(corpus, corpus / "titles.csv", missed)
    assert counts["titles"] == 3  # the chapter range and the code ICD-10-CM lacks are left out
    assert counts["unseen"] == 1 and counts["unseen_predicted"] == 0  # N48.1: no training note carries it
    assert counts["unseen_named"] == counts["unseen_not_predicted"] == counts["unseen_not_ranked"] == 1
    # N48.1 named rightly; I10 named wrongly ("hipertensión esencial": training notes write "hipertensión arterial")
    assert counts["right"] == 1 and counts["wrong"] == 1
    found = predictions(tmp_path / "found", "S0009-1\tn48.1\n", "S0009-1\tn48.1\n")
    counts = bench.reach(corpus, corpus / "titles.csv", found)
    assert counts["unseen_named"] == counts["unseen_predicted"] == 1
    assert counts["unseen_not_predicted"] == counts["unseen_not_ranked"] == 0


def test_a_titles_file_without_the_columns_is_refused_naming_it(corpus, tmp_path):
    bench = load_benchmark("spanish_titles_reach.py")
    (tmp_path / "bad.csv").write_text("codigo;texto\nN481;Balanitis\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"bad\.csv: line 2: needs 'code' and 'description' columns"):
        bench.read_titles(tmp_path / "bad.csv", {"N48.1"})
