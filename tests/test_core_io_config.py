"""Shared plumbing: atomic writes, checked reads, YAML configs, the document schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from icdcoder.config import StrictModel, load_config
from icdcoder.data.schema import Document, Evidence, GoldCode, load_documents, save_documents
from icdcoder.errors import InputError
from icdcoder.io import atomic_write, read_jsonl, read_text, readable_json


class Inner(StrictModel):
    rate: float = 0.1
    name: str = "x"


class Settings(StrictModel):
    steps: int = 1
    inner: Inner = Inner()


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_read_text_names_file_and_line_of_bad_utf8(tmp_path: Path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(InputError, match=r"bad.txt:2: not valid UTF-8"):
        read_text(bad)
    with pytest.raises(InputError, match="file not found"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="is a folder, not a file"):
        read_text(tmp_path)


def test_read_jsonl_names_malformed_line(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(InputError, match=r"d.jsonl:2: malformed JSON"):
        list(read_jsonl(path))


def test_config_inherits_from_base_and_rejects_unknown_keys(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("steps: 5\ninner:\n  rate: 0.5\n  name: base\n")
    (tmp_path / "exp.yaml").write_text("base: base.yaml\ninner:\n  name: exp\n")
    settings = load_config(tmp_path / "exp.yaml", Settings)
    assert settings.steps == 5 and settings.inner.rate == 0.5 and settings.inner.name == "exp"
    assert load_config(tmp_path / "exp.yaml", Settings, {"steps": 7}).steps == 7
    (tmp_path / "typo.yaml").write_text("base: base.yaml\ninner:\n  rat: 1\n")
    with pytest.raises(InputError, match=r"typo.yaml: field 'inner.rat'"):
        load_config(tmp_path / "typo.yaml", Settings)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(InputError, match="circular"):
        load_config(tmp_path / "loop.yaml", Settings)


def test_documents_round_trip_and_reject_evidence_outside_text(tmp_path: Path):
    doc = Document(
        id="d1",
        text="fiebre y tos",
        language="es",
        codes=(
            GoldCode(code="R50.9", system="icd10cm", evidence=(Evidence(pieces=((0, 6),)),)),
            GoldCode(code="R05", system="icd10cm", evidence=(Evidence(pieces=((9, 10), (10, 12))),)),
        ),
    )
    save_documents(tmp_path / "docs.jsonl", [doc])
    assert load_documents(tmp_path / "docs.jsonl") == [doc]
    assert doc.codes[1].evidence[0].text_in(doc.text) == "t os"
    bad = doc.model_dump(mode="json")
    bad["codes"][0]["evidence"][0]["pieces"] = [[0, 99]]
    (tmp_path / "bad.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:1: field 'text'"):
        load_documents(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="ends past the text"):
        Document.model_validate(bad)


def test_atomic_write_gives_ordinary_permissions(tmp_path: Path):
    import os

    target = tmp_path / "perm.txt"
    with atomic_write(target) as handle:
        handle.write("x")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_readable_json_keeps_each_flat_row_on_one_line():
    import json

    record = {
        "settings": {"threshold": {"icd10cm": 0.1}, "name": "é"},
        "table": [{"a": 1, "b": "x"}, {"a": 2}],
        "empty": {},
    }
    lines = readable_json(record).splitlines()
    assert json.loads("\n".join(lines)) == record
    assert (
        '    {"a": 1, "b": "x"},' in lines
        and '    "threshold": {"icd10cm": 0.1},' in lines
        and '    "name": "é"' in lines
    )


def test_registry_loads_the_old_coder_name_with_a_notice(caplog):
    from icdcoder.registry import predictor_class

    with caplog.at_level("WARNING", logger="icdcoder.registry"):
        assert predictor_class("llm") is predictor_class("span")
    assert "now called 'span'" in caplog.text
    with pytest.raises(InputError, match="unknown system 'nope'"):
        predictor_class("nope")
