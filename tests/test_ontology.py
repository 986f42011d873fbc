"""The ICD ontology: counts, code spelling, hierarchy, notes, GEMs, search, cache and the ``codes`` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icdcoder.errors import InputError
from icdcoder.ontology import CodeInfo, normalize_code
from icdcoder.ontology.cli import app as codes_app

# ------------------------------------------------------------------ counts


@pytest.mark.parametrize(
    ("system", "minimum_leaves"),
    [("icd10cm", 74_000), ("icd10pcs", 78_000), ("icd9cm", 14_500), ("icd9pcs", 3_800)],
)
def test_each_system_has_its_full_set_of_leaf_codes(ontology, system, minimum_leaves):
    leaves = ontology.codes(system, leaves_only=True)
    assert len(leaves) >= minimum_leaves
    assert len(set(leaves)) == len(leaves)
    assert len(ontology.codes(system)) > len(leaves)  # inner nodes are codes too


def test_icd10cm_leaves_are_exactly_the_billable_codes(ontology):
    assert ontology.get("N44.8", "icd10cm").billable
    assert not ontology.get("N44", "icd10cm").billable
    assert not ontology.get("N40-N53", "icd10cm").billable  # a block, not a code


# ------------------------------------------------------------------ spelling and resolve


@pytest.mark.parametrize(
    ("raw", "system", "canonical"),
    [
        ("n44.8", "icd10cm", "N44.8"),
        ("N448", "icd10cm", "N44.8"),
        (" z20.818 ", "icd10cm", "Z20.818"),
        ("s52.521a", "icd10cm", "S52.521A"),
        ("A00", "icd10cm", "A00"),
        ("bw03zzz", "icd10pcs", "BW03ZZZ"),
        ("BW0.3", "icd10pcs", "BW03"),
        ("25000", "icd9cm", "250.00"),
        ("V01.0", "icd9cm", "V01.0"),
        ("E0000", "icd9cm", "E000.0"),
        ("3893", "icd9pcs", "38.93"),
        ("38 .93", "icd9pcs", "38.93"),
        ("n40-n53", "icd10cm", "N40-N53"),
    ],
)
def test_normalize_code_spells_codes_canonically(raw, system, canonical):
    assert normalize_code(raw, system) == canonical


def test_normalize_code_rejects_an_unknown_system():
    with pytest.raises(InputError, match="unknown code system 'icd11'"):
        normalize_code("A00", "icd11")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("n448", ("N44.8", "icd10cm")),
        ("  N44.8\n", ("N44.8", "icd10cm")),
        ("bw03zzz", ("BW03ZZZ", "icd10pcs")),
        ("bw03", ("BW03", "icd10pcs")),
        ("s02.0xx", ("S02.0XX", "icd10cm")),
        ("E000.0", ("E000.0", "icd9cm")),
        ("nonsense", None),
        ("", None),
    ],
)
def test_resolve_finds_the_system_and_canonical_code(ontology, raw, expected):
    assert ontology.resolve(raw) == expected


def test_resolve_follows_the_requested_systems_in_order(ontology):
    assert ontology.resolve("250.00") == ("250.00", "icd9cm")
    assert ontology.resolve("250.00", systems="icd10cm") is None
    assert ontology.resolve("3893", systems=["icd9cm", "icd9pcs"]) == ("38.93", "icd9pcs")
    with pytest.raises(InputError, match="unknown code system"):
        ontology.resolve("A00", systems=["icd10"])


def test_groupings_are_nodes_but_not_codes(ontology):
    assert ontology.resolve("N40-N53") is None
    assert not ontology.is_valid("N00-N99", "icd10cm")
    chapter = ontology.get("N00-N99", "icd10cm")
    assert chapter.kind == "chapter" and "genitourinary" in chapter.description
    assert ontology.get("B10-B10", "icd10cm").kind == "block"  # a one-category block keeps a distinct key
    assert ontology.get("B10", "icd10cm").kind == "category"
    assert "N40-N53" not in ontology.codes("icd10cm")


def test_describe_and_unknown_codes(ontology):
    assert ontology.describe("a00.0", "icd10cm") == "Cholera due to Vibrio cholerae 01, biovar cholerae"
    assert ontology.is_valid("N44.8", "icd10cm") and not ontology.is_valid("N44.8", "icd9cm")
    assert ontology.get("Q99.99", "icd10cm") is None
    with pytest.raises(InputError, match="unknown code 'Q99.99'"):
        ontology.describe("Q99.99", "icd10cm")
    assert ontology.describe("Q99.99", "icd10cm", default="") == ""


# ------------------------------------------------------------------ hierarchy


def test_icd10cm_parent_chain_runs_up_to_the_chapter(ontology):
    assert ontology.parent("N44.8", "icd10cm") == "N44"
    assert ontology.ancestors("N44.8", "icd10cm") == ["N44", "N40-N53", "N00-N99"]
    assert ontology.children("N44", "icd10cm") == ["N44.0", "N44.1", "N44.2", "N44.8"]
    assert ontology.siblings("N44.8", "icd10cm") == ["N44.0", "N44.1", "N44.2"]
    assert ontology.parent("N00-N99", "icd10cm") is None
    info = ontology.get("n448", "icd10cm")
    assert isinstance(info, CodeInfo)
    assert (info.code, info.parent, info.is_leaf, info.kind) == ("N44.8", "N44", True, "code")


def test_seventh_character_codes_hang_under_their_placeholder_stems(ontology):
    torus = ontology.get("S52.521A", "icd10cm")
    assert torus.parent == "S52.521" and torus.is_leaf
    assert "initial encounter" in torus.description
    assert ontology.ancestors("S02.0XXA", "icd10cm")[:3] == ["S02.0XX", "S02.0X", "S02.0"]
    stem = ontology.get("S02.0XX", "icd10cm")
    assert not stem.billable and "S02.0XXA" in stem.children


@pytest.mark.parametrize(
    ("code", "specific"),
    [
        ("G43", "G43.909"),  # "unspecified" at each level, then "without status migrainosus"
        ("E11", "E11.9"),  # "without complications", not "with unspecified complications"
        ("I25.1", "I25.10"),  # "without angina pectoris"
        ("I50", "I50.9"),  # of two "unspecified" children, the one adding the fewest words
        ("N00", "N00.9"),
        ("K62.8", "K62.81"),  # no child marked as the default: the first
        ("T75.1", "T75.1XX"),  # a placeholder stem: its children differ only in the encounter
        ("E11.9", "E11.9"),  # specific codes, other systems and unknown codes come back as they are
        ("0DT", "0DT"),
        ("Q99.99", "Q99.99"),
    ],
)
def test_default_specific_code_descends_to_the_default_form(ontology, code, specific):
    system = "icd10pcs" if code == "0DT" else "icd10cm"
    assert ontology.default_specific_code(code, system) == specific


def test_pcs_prefixes_are_inner_nodes_with_titles(ontology):
    assert ontology.resolve("BW03") == ("BW03", "icd10pcs")
    assert ontology.ancestors("BW03ZZZ", "icd10pcs") == ["BW03ZZ", "BW03Z", "BW03", "BW0", "BW", "B"]
    assert ontology.describe("B", "icd10pcs") == "Imaging"
    assert ontology.describe("BW03", "icd10pcs").startswith("Plain Radiography")
    resection = ontology.describe("0DT", "icd10pcs")
    assert resection == "Resection"
    assert all(child.startswith("0DT") for child in ontology.children("0DT", "icd10pcs"))


def test_icd9_codes_group_under_categories(ontology):
    assert ontology.ancestors("250.00", "icd9cm") == ["250.0", "250"]
    assert ontology.describe("001", "icd9cm") == "Cholera"  # shared leading words of its codes
    assert ontology.parent("E000.0", "icd9cm") == "E000"
    assert ontology.ancestors("38.93", "icd9pcs") == ["38.9", "38"]


# ------------------------------------------------------------------ notes, GEMs, search


def test_inclusion_terms_and_excludes_come_from_the_tabular_list(ontology):
    asthma = ontology.get("J45", "icd10cm")
    assert "allergic bronchitis NOS" in asthma.inclusion_terms
    assert any("J69.8" in note for note in asthma.excludes1)
    assert any("J44.89" in note for note in asthma.excludes2)
    assert ontology.get("A00.0", "icd10cm").inclusion_terms == ("Classical cholera",)


def test_gem_maps_known_pairs_both_ways(ontology):
    assert "E11.9" in ontology.gem_9_to_10("25000")
    assert "250.00" in ontology.gem_10_to_9("e11.9")
    assert ontology.gem_10_to_9("N44.8") == ["608.89"]
    assert ontology.gem_9_to_10("999.99") == []


def test_search_finds_cholera_codes_first(ontology):
    hits = ontology.search("cholera")
    assert len(hits) == 20
    assert {"A00", "A00.0", "A00.9", "001.9"} <= {hit.code for hit in hits}
    assert all("cholera" in hit.description.lower() for hit in hits[:5])
    icd10 = ontology.search("Cholera", system="icd10cm", limit=3)
    assert len(icd10) == 3 and all(hit.system == "icd10cm" for hit in icd10)


def test_search_ranks_more_matched_words_higher_and_uses_inclusion_terms(ontology):
    hits = ontology.search("acute myocardial infarction", system="icd10cm", limit=5)
    assert hits[0].code == "I21.9"
    assert hits[0].score >= hits[-1].score
    assert "A00.0" in {hit.code for hit in ontology.search("classical cholera", system="icd10cm", limit=3)}
    assert ontology.search("zzzqqq") == []
    assert ontology.search("cholera", limit=0) == []


# ------------------------------------------------------------------ cache


def test_cache_key_follows_the_source_files_and_bad_caches_are_ignored(tmp_path, monkeypatch):
    from icdcoder.io import load_cached
    from icdcoder.ontology import ontology as module
    from icdcoder.ontology.build import Tables

    monkeypatch.setenv("ICDCODER_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "codes.txt"
    source.write_text("A00 Cholera\n")
    first = module._cache_path({"cm": source})
    assert first.parent == tmp_path / "cache"
    source.write_text("A00 Cholera\nA01 Typhoid\n")
    assert module._cache_path({"cm": source}) != first
    first.parent.mkdir(parents=True)
    first.write_bytes(b"not a pickle")
    assert load_cached(first, Tables) is None
    assert load_cached(tmp_path / "missing.pkl", Tables) is None


def test_derived_tables_are_kept_on_disk_by_terms_and_rules(tmp_path, monkeypatch):
    """A second process (here: a second ontology object, so the in-process memo is empty) loads the table; new terms or
    new rules compute it again and leave one file per table; an ontology without a fingerprint is never cached."""
    from icdcoder.ontology.ontology import derived_table

    monkeypatch.setenv("ICDCODER_CACHE", str(tmp_path / "cache"))
    rules = tmp_path / "rules.py"
    rules.write_text("v1")
    computed = []

    class Terms:
        def __init__(self, titles: str):
            self.titles = titles

        def fingerprint(self, system: str) -> str:
            return f"{system}:{self.titles}"

    def table(ontology, key="forms"):
        def compute():
            computed.append(key)
            return (key, len(computed))

        return derived_table(ontology, key, compute, ("icd10cm",), (rules,))

    assert table(Terms("cholera")) == ("forms", 1)
    assert table(Terms("cholera")) == ("forms", 1) and len(computed) == 1
    assert table(Terms("cholera"), "values") == ("values", 2)  # another table, its own file
    assert len(list((tmp_path / "cache").glob("derived-*.pkl"))) == 2
    assert table(Terms("cholera, typhoid")) == ("forms", 3)
    rules.write_text("v2")
    assert table(Terms("cholera, typhoid")) == ("forms", 4)
    assert len(list((tmp_path / "cache").glob("derived-*.pkl"))) == 2  # the latest of each table

    class StandIn:
        """Terms without a fingerprint, as the tests' fake ontologies."""

    stand_in = StandIn()
    assert derived_table(stand_in, "forms", lambda: "fresh", ("icd10cm",), (rules,)) == "fresh"
    assert len(list((tmp_path / "cache").glob("derived-*.pkl"))) == 2


def test_cached_tables_round_trip(tmp_path):
    from icdcoder.io import load_cached, save_cached
    from icdcoder.ontology import Ontology
    from icdcoder.ontology.build import Tables

    tables = Tables()
    root = tables.add("A00", "icd10cm", "Cholera", "category")
    tables.add("A00.9", "icd10cm", "Cholera, unspecified", "code", root)
    save_cached(tmp_path / "t.pkl", tables)
    restored = Ontology(load_cached(tmp_path / "t.pkl", Tables))
    assert restored.children("a00", "icd10cm") == ["A00.9"]
    assert restored.resolve("A009") == ("A00.9", "icd10cm")


# ------------------------------------------------------------------ CLI


def test_cli_show_prints_json_with_hierarchy_and_gem(ontology):
    result = CliRunner().invoke(codes_app, ["show", "n448", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["code"] == "N44.8" and record["system"] == "icd10cm" and record["billable"]
    assert [a["code"] for a in record["ancestors"]] == ["N44", "N40-N53", "N00-N99"]
    assert record["gem"] == {"icd9cm": ["608.89"]}


def test_cli_show_limits_children_and_reads_groupings(ontology):
    result = CliRunner().invoke(codes_app, ["show", "N40-N53", "--system", "icd10cm", "--json", "--children", "2"])
    record = json.loads(result.output)
    assert record["kind"] == "block" and len(record["children"]) == 2 and record["n_children"] > 2


def test_cli_search_json_and_table(ontology):
    result = CliRunner().invoke(codes_app, ["search", "cholera", "--system", "icd10cm", "--limit", "3", "--json"])
    hits = json.loads(result.output)
    assert len(hits) == 3 and all(hit["system"] == "icd10cm" for hit in hits)
    table = CliRunner().invoke(codes_app, ["search", "cholera", "-n", "2"])
    assert table.exit_code == 0 and "cholera" in table.output.lower()


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("infarto", "I21"),
        ("Infarto agudo de miocardio", "I21"),
        ("neumonia", "J18.9"),
        ("NEUMONÍAS", "J18.9"),
        ("hipertensión arterial", "I10"),
        ("dolor torácico", "R07.9"),
    ],
)
def test_search_finds_spanish_words_accent_case_and_plural_insensitive(ontology, words, expected):
    from icdcoder.ontology.search import search_codes

    hits = search_codes(words, system="icd10cm", limit=5)
    assert hits and any(hit.code.startswith(expected) for hit in hits[:3]), [hit.code for hit in hits]
    assert all(hit.score > 0 for hit in hits)
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_search_ranks_the_whole_query_and_the_exact_form_first(ontology):
    from icdcoder.ontology.search import search_codes

    hits = search_codes("hipertensión arterial", system="icd10cm", limit=5)
    assert hits[0].code == "I10" and hits[0].source == "spanish" and hits[0].matched == "hipertensión arterial"
    assert hits[0].score == 1.0 and hits[-1].score < 1.0  # "hipertensión portal" matches half of the query
    english = search_codes("acute myocardial infarction", system="icd10cm", limit=3)
    assert english[0].source == "title" and english[0].code.startswith("I21")
    assert search_codes("de la", limit=5) == [] and search_codes("zzzqqq") == []


def test_cli_search_finds_infarto(ontology):
    result = CliRunner().invoke(codes_app, ["search", "infarto", "--system", "icd10cm", "--json"])
    hits = json.loads(result.output)
    assert hits and all("infarto" in hit["matched"].lower() and hit["source"] == "spanish" for hit in hits)
    assert any(hit["code"].startswith("I21") for hit in hits)
    table = CliRunner().invoke(codes_app, ["search", "infarto", "-n", "3"])
    assert table.exit_code == 0 and "infarto" in table.output


def test_cli_unknown_code_or_system_raise_input_errors(ontology):
    unknown = CliRunner().invoke(codes_app, ["show", "XYZ"])
    assert isinstance(unknown.exception, InputError)
    assert "unknown code 'XYZ' (systems tried: icd10cm, icd10pcs, icd9cm, icd9pcs)" in str(unknown.exception)
    bad_system = CliRunner().invoke(codes_app, ["search", "cholera", "--system", "icd11"])
    assert isinstance(bad_system.exception, InputError)


def test_cli_error_is_one_line_on_stderr(ontology):
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "icdcoder.cli", "codes", "show", "XYZ", "--system", "icd9cm"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: unknown code 'XYZ' (systems tried: icd9cm)"


# ------------------------------------------------------------------ CodiEsp coverage


def _codiesp_codes(path: Path) -> list[str]:
    return [line.split("\t")[1].strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_codiesp_train_codes_resolve(ontology, codiesp_dir):
    total, misses = 0, []
    for name, system in (("trainD.tsv", "icd10cm"), ("trainP.tsv", "icd10pcs")):
        codes = _codiesp_codes(codiesp_dir / "train" / name)
        total += len(codes)
        misses += [code for code in codes if ontology.resolve(code, system) is None]
    print(f"CodiEsp train D+P: {total - len(misses)}/{total} resolve; misses {len(misses)}: {sorted(set(misses))}")
    assert total > 5000
    assert 1 - len(misses) / total >= 0.99
