"""Failure catalogue of the scorers: `icdcoder evaluate jsonl` and `icdcoder evaluate codiesp`.

Each bad input is one case: its files are built in ``tmp_path`` (small made-up notes, no real text), the real entry
point runs in this process, and the answer must be one ``error: PATH:LINE: ...`` line, exit status 2, nothing on
stdout. Then good inputs score (exit 0), and the scores are bit-identical whatever the order of dicts and sets
(shuffled in process, and under two ``PYTHONHASHSEED`` values in fresh processes).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from catalogue import REPO, assert_one_line_error, run_main

# ------------------------------------------------------------------------------------------------ jsonl files

NOTE_1 = "Tos seca y fiebre desde hace tres dias."  # 39 characters, made up
NOTE_2 = "Control rutinario sin hallazgos."  # 32 characters, made up

GOLD = [
    {
        "id": "n1",
        "text": NOTE_1,
        "language": "es",
        "codes": [
            {"code": "R05", "system": "icd10cm", "evidence": [{"pieces": [[0, 8]]}]},
            {"code": "R50.9", "system": "icd10cm", "evidence": [{"pieces": [[11, 17]]}]},
            {"code": "BW03ZZZ", "system": "icd10pcs"},
        ],
    },
    {"id": "n2", "text": NOTE_2, "language": "es", "codes": [{"code": "Z00.00", "system": "icd10cm"}]},
]


def _code(code: str = "R05", system: str = "icd10cm", score: object = 0.9, **extra: object) -> dict:
    return {"code": code, "system": system, "score": score, **extra}


def _line(doc_id: str = "n1", codes: list | None = None, **extra: object) -> str:
    return json.dumps({"id": doc_id, "codes": [_code()] if codes is None else codes, **extra})


GOOD_LINE = _line("n2", [_code("Z00.00", score=0.7)])


def _jsonl_args(tmp_path: Path, spec: dict) -> tuple[list[str], dict[str, str]]:
    gold, pred = tmp_path / "gold.jsonl", tmp_path / "pred.jsonl"
    gold_lines = spec.get("gold", [json.dumps(record) for record in GOLD])
    gold.write_text("".join(line + "\n" for line in gold_lines), encoding="utf-8")
    if "pred" in spec:
        pred.write_text("".join(line + "\n" for line in spec["pred"]), encoding="utf-8")
    return ["evaluate", "jsonl", "--gold", str(gold), "--pred", str(pred)], {"gold": str(gold), "pred": str(pred)}


# ---------------------------------------------------------------------------------------------- CodiEsp files

TEXTS = {"d1": NOTE_1, "d2": NOTE_2}  # written with a final newline: 40 and 33 characters
GOLD_TSV = {
    "devD.tsv": ["d1\tr05", "d1\tr50.9", "d2\tz00.00"],
    "devP.tsv": ["d1\tbw03zzz"],
    "devX.tsv": ["d1\tDIAGNOSTICO\tr05\tTos seca\t0 8", "d1\tDIAGNOSTICO\tr50.9\tfiebre\t11 17"],
}
GOOD_SUBMISSION = {
    "D.tsv": ["d1\tr05", "d1\ti10", "d1\tr50.9", "d2\tz00.00"],
    "P.tsv": ["d1\tbw03zzz"],
    "X.tsv": ["d1\t0 9\tDIAGNOSTICO\tr05", "d1\t10 17\tDIAGNOSTICO\tr50.9"],
}


def _write_rows(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")


def _codiesp_args(tmp_path: Path, spec: dict) -> tuple[list[str], dict[str, str]]:
    data, sub = tmp_path / "codiesp", tmp_path / "sub"
    for doc, text in TEXTS.items():
        _write_rows(data / "dev" / "text_files" / f"{doc}.txt", [text])
    for name, rows in {**GOLD_TSV, **spec.get("gold", {})}.items():
        _write_rows(data / "dev" / name, rows)
    for name, rows in spec.get("sub", GOOD_SUBMISSION).items():
        if isinstance(rows, bytes):
            sub.mkdir(parents=True, exist_ok=True)
            (sub / name).write_bytes(rows)
        else:
            _write_rows(sub / name, rows)
    args = ["evaluate", "codiesp", "--data-dir", str(data), "--split", spec.get("split", "dev"), "--pred-dir", str(sub)]
    paths = {"data": str(data / "dev"), "sub": str(sub)}
    return args + [arg.format(**paths) for arg in spec.get("args", [])], paths


def _x(*rows: str) -> dict:
    """A submission whose X.tsv is ``rows`` (D and P good)."""
    return {"sub": {**GOOD_SUBMISSION, "X.tsv": list(rows)}}


CASES = [
    # evaluate jsonl: the predictions file
    pytest.param(
        "jsonl",
        {"pred": [GOOD_LINE, _line(codes=[_code(score="NaN")])]},
        ("{pred}:2", "score"),
        id="jsonl-nan-score-string",
    ),
    pytest.param(
        "jsonl",
        {"pred": [GOOD_LINE, '{"id": "n1", "codes": [{"code": "R05", "system": "icd10cm", "score": NaN}]}']},
        ("{pred}:2", "score"),
        id="jsonl-nan-score-literal",
    ),
    pytest.param(
        "jsonl",
        {"pred": [GOOD_LINE, '{"id": "n1", "codes": [{"code": "R05", "system": "icd10cm", "score": Infinity}]}']},
        ("{pred}:2", "score"),
        id="jsonl-inf-score-literal",
    ),
    pytest.param(
        "jsonl",
        {"pred": [GOOD_LINE, '{"id": "n1", "codes": [{"code": "R05", "system": "icd10cm", "score": -Infinity}]}']},
        ("{pred}:2", "score"),
        id="jsonl-minus-inf-score",
    ),
    pytest.param(
        "jsonl",
        {"pred": [GOOD_LINE, '{"id": "n1", "codes": [{"code": "R05", "system": "icd10cm", "score": 1e999}]}']},
        ("{pred}:2", "score"),
        id="jsonl-overflowing-score",
    ),
    pytest.param(
        "jsonl",
        {"pred": [GOOD_LINE, _line(codes=[_code(score="high")])]},
        ("{pred}:2", "score"),
        id="jsonl-non-numeric-score",
    ),
    pytest.param(
        "jsonl", {"pred": [GOOD_LINE, _line(codes=[_code(score=None)])]}, ("{pred}:2", "score"), id="jsonl-null-score"
    ),
    pytest.param(
        "jsonl",
        {"pred": [GOOD_LINE, _line(codes=[{"code": "R05", "system": "icd10cm"}])]},
        ("{pred}:2", "score"),
        id="jsonl-missing-score",
    ),
    pytest.param(
        "jsonl",
        {"pred": [GOOD_LINE, _line(codes=[_code(evidence=[{"start": 30, "end": 40}])])]},
        ("{pred}:2", "codes.0.evidence.0", "39 chars"),
        id="jsonl-evidence-past-note",
    ),
    pytest.param(
        "jsonl",
        {"pred": [GOOD_LINE, _line(codes=[_code(), _code("R50.9", evidence=[{"start": 90, "end": 95}])])]},
        ("{pred}:2", "codes.1.evidence.0"),
        id="jsonl-evidence-start-past-note",
    ),
    pytest.param(
        "jsonl",
        {"pred": [_line(codes=[_code(sentence_evidence=[{"start": 0, "end": 400}])])]},
        ("{pred}:1", "codes.0.sentence_evidence.0"),
        id="jsonl-sentence-evidence-past-note",
    ),
    pytest.param(
        "jsonl",
        {"pred": [GOOD_LINE, _line(codes=[_code(evidence=[{"start": 8, "end": 2}])])]},
        ("{pred}:2",),
        id="jsonl-reversed-span",
    ),
    pytest.param(
        "jsonl",
        {"pred": [GOOD_LINE, _line(codes=[_code(evidence=[{"start": -1, "end": 2}])])]},
        ("{pred}:2", "start"),
        id="jsonl-negative-offset",
    ),
    pytest.param(
        "jsonl",
        {"pred": [GOOD_LINE, _line(codes=[_code(evidence=[{"start": "a", "end": 2}])])]},
        ("{pred}:2", "start"),
        id="jsonl-non-integer-offset",
    ),
    pytest.param(
        "jsonl",
        {"pred": [GOOD_LINE, _line(codes=[_code(system="icd10")])]},
        ("{pred}:2", "codes.0.system", "icd10"),
        id="jsonl-unknown-code-system",
    ),
    pytest.param(
        "jsonl",
        {"pred": [_line("elsewhere", codes=[_code(system="ICD10CM")])]},
        ("{pred}:1", "codes.0.system"),
        id="jsonl-unknown-code-system-outside-gold",
    ),
    pytest.param(
        "jsonl", {"pred": [GOOD_LINE, json.dumps({"codes": [_code()]})]}, ("{pred}:2", "id"), id="jsonl-missing-id"
    ),
    pytest.param("jsonl", {"pred": [GOOD_LINE, _line("")]}, ("{pred}:2", "id"), id="jsonl-empty-id"),
    pytest.param(
        "jsonl", {"pred": [GOOD_LINE, _line(codes=[_code(code="")])]}, ("{pred}:2", "code"), id="jsonl-empty-code"
    ),
    pytest.param(
        "jsonl", {"pred": [GOOD_LINE, _line(codes={"R05": 0.9})]}, ("{pred}:2", "codes"), id="jsonl-codes-not-a-list"
    ),
    pytest.param(
        "jsonl", {"pred": [GOOD_LINE, _line(codes=[_code(rank=1)])]}, ("{pred}:2", "rank"), id="jsonl-unknown-field"
    ),
    pytest.param(
        "jsonl", {"pred": [_line(), "", GOOD_LINE, _line()]}, ("{pred}:4", "twice"), id="jsonl-note-predicted-twice"
    ),
    pytest.param(
        "jsonl", {"pred": [GOOD_LINE, '{"id": "n1", "codes": [']}, ("{pred}:2", "JSON"), id="jsonl-malformed-json"
    ),
    pytest.param("jsonl", {"pred": [GOOD_LINE, '["n1"]']}, ("{pred}:2", "JSON object"), id="jsonl-not-an-object"),
    pytest.param("jsonl", {}, ("{pred}", "not found"), id="jsonl-missing-pred-file"),
    # evaluate jsonl: the gold file
    pytest.param(
        "jsonl",
        {"gold": [json.dumps(GOLD[0]), json.dumps(GOLD[1]), json.dumps(GOLD[0])], "pred": [GOOD_LINE]},
        ("{gold}:3", "twice"),
        id="jsonl-gold-note-twice",
    ),
    pytest.param(
        "jsonl",
        {
            "gold": [
                json.dumps(
                    {**GOLD[1], "codes": [{"code": "Z00.00", "system": "icd10cm", "evidence": [{"pieces": [[0, 99]]}]}]}
                )
            ],
            "pred": [GOOD_LINE],
        },
        ("{gold}:1",),
        id="jsonl-gold-evidence-past-note",
    ),
    pytest.param(
        "jsonl",
        {"gold": [json.dumps({**GOLD[1], "codes": [{"code": "Z00.00", "system": "icd10"}]})], "pred": [GOOD_LINE]},
        ("{gold}:1", "system"),
        id="jsonl-gold-unknown-system",
    ),
    pytest.param(
        "jsonl",
        {"gold": [json.dumps({**GOLD[1], "codes": []})], "pred": [GOOD_LINE]},
        ("{gold}", "nothing to score"),
        id="jsonl-gold-without-codes",
    ),
    # evaluate codiesp: X.tsv of the submission
    pytest.param(
        "codiesp",
        _x("d1\t0 9\tDIAGNOSTICO\tr05", "d1\t30 41\tDIAGNOSTICO\tr50.9"),
        ("{sub}/X.tsv:2", "runs past"),
        id="codiesp-x-past-note",
    ),
    pytest.param(
        "codiesp", _x("d2\t40 45\tDIAGNOSTICO\tz00.00"), ("{sub}/X.tsv:1", "runs past"), id="codiesp-x-start-past-note"
    ),
    pytest.param(
        "codiesp",
        _x("d1\t0 9\tDIAGNOSTICO\tr05", "d1\t17 10\tDIAGNOSTICO\tr50.9"),
        ("{sub}/X.tsv:2", "reversed"),
        id="codiesp-x-reversed",
    ),
    pytest.param(
        "codiesp",
        _x("zz\t17 10\tDIAGNOSTICO\tr50.9"),
        ("{sub}/X.tsv:1", "reversed"),
        id="codiesp-x-reversed-outside-split",
    ),
    pytest.param(
        "codiesp", _x("d1\t0-9\tDIAGNOSTICO\tr05"), ("{sub}/X.tsv:1", "bad position"), id="codiesp-x-malformed-position"
    ),
    pytest.param(
        "codiesp", _x("d1\t9\tDIAGNOSTICO\tr05"), ("{sub}/X.tsv:1", "bad position"), id="codiesp-x-one-number"
    ),
    pytest.param(
        "codiesp", _x("d1\t0 9 12\tDIAGNOSTICO\tr05"), ("{sub}/X.tsv:1", "bad position"), id="codiesp-x-three-numbers"
    ),
    pytest.param(
        "codiesp", _x("d1\t-1 9\tDIAGNOSTICO\tr05"), ("{sub}/X.tsv:1", "bad position"), id="codiesp-x-negative"
    ),
    pytest.param(
        "codiesp", _x("d1\t0 9.5\tDIAGNOSTICO\tr05"), ("{sub}/X.tsv:1", "bad position"), id="codiesp-x-not-integer"
    ),
    pytest.param(
        "codiesp",
        _x("d1\t\u00b2 9\tDIAGNOSTICO\tr05"),
        ("{sub}/X.tsv:1", "bad position"),
        id="codiesp-x-superscript-digit",
    ),
    pytest.param(
        "codiesp",
        _x("d1\t0 4;5 9\tDIAGNOSTICO\tr05"),
        ("{sub}/X.tsv:1", "bad position"),
        id="codiesp-x-pieces-in-submission",
    ),
    pytest.param("codiesp", _x("d1\t0 9\tDIAGNOSTICO"), ("{sub}/X.tsv:1", "expected 4"), id="codiesp-x-three-columns"),
    pytest.param(
        "codiesp", _x("d1\t0 9\tDIAGNOSTICO\tr05\tTos"), ("{sub}/X.tsv:1", "expected 4"), id="codiesp-x-five-columns"
    ),
    pytest.param("codiesp", _x("d1\t0 9\tSINTOMA\tr05"), ("{sub}/X.tsv:1", "label"), id="codiesp-x-bad-label"),
    pytest.param("codiesp", _x("d1\t0 9\tDIAGNOSTICO\t"), ("{sub}/X.tsv:1", "empty field"), id="codiesp-x-empty-code"),
    # evaluate codiesp: D.tsv and P.tsv of the submission
    pytest.param(
        "codiesp",
        {"sub": {"D.tsv": ["d1\tr05", "d1\tr50.9\textra"]}},
        ("{sub}/D.tsv:2", "expected 2"),
        id="codiesp-d-three-columns",
    ),
    pytest.param(
        "codiesp", {"sub": {"D.tsv": ["d1 r05"]}}, ("{sub}/D.tsv:1", "expected 2"), id="codiesp-d-space-not-tab"
    ),
    pytest.param(
        "codiesp", {"sub": {"D.tsv": ["d1\tr05", "\tr05"]}}, ("{sub}/D.tsv:2", "empty field"), id="codiesp-d-empty-id"
    ),
    pytest.param(
        "codiesp", {"sub": {"P.tsv": ["d1\tbw03zzz", "d1"]}}, ("{sub}/P.tsv:2", "expected 2"), id="codiesp-p-one-column"
    ),
    pytest.param(
        "codiesp",
        {"sub": {"P.tsv": ["d1\tbw03zzz\t0.5"]}},
        ("{sub}/P.tsv:1", "expected 2"),
        id="codiesp-p-three-columns",
    ),
    pytest.param(
        "codiesp", {"sub": {"D.tsv": b"d1\tr05\nd1\tr\xe9\n"}}, ("{sub}/D.tsv:2", "UTF-8"), id="codiesp-d-not-utf8"
    ),
    # evaluate codiesp: missing files and folders
    pytest.param("codiesp", {"sub": {}}, ("{sub}", "not found"), id="codiesp-missing-pred-dir"),
    pytest.param(
        "codiesp", {"sub": {"notes.txt": ["d1\tr05"]}}, ("{sub}", "none of"), id="codiesp-pred-dir-without-files"
    ),
    pytest.param("codiesp", {"split": "nosuch"}, ("nosuch",), id="codiesp-missing-split"),
    pytest.param(
        "codiesp",
        {"args": ["--valid-codes-d", "{data}/devD.tsv"]},
        ("--valid-codes",),
        id="codiesp-one-valid-code-list",
    ),
    # evaluate codiesp: the gold files are read as strictly
    pytest.param(
        "codiesp",
        {"gold": {"devX.tsv": ["d1\tDIAGNOSTICO\tr05\tTos seca\t0 8", "d2\tDIAGNOSTICO\tz00.00\tx\t20 60"]}},
        ("{data}/devX.tsv:2", "runs past"),
        id="codiesp-gold-x-past-note",
    ),
    pytest.param(
        "codiesp",
        {"gold": {"devX.tsv": ["d1\tDIAGNOSTICO\tr05\tTos seca\t8 0"]}},
        ("{data}/devX.tsv:1", "reversed"),
        id="codiesp-gold-x-reversed",
    ),
    pytest.param(
        "codiesp",
        {"gold": {"devD.tsv": ["d1\tr05\tx"]}},
        ("{data}/devD.tsv:1", "expected 2"),
        id="codiesp-gold-d-three-columns",
    ),
]


@pytest.mark.parametrize(("command", "spec", "fragments"), CASES)
def test_bad_input_is_one_line_naming_file_and_line(
    tmp_path: Path, command: str, spec: dict, fragments: tuple[str, ...]
):
    args, paths = (_jsonl_args if command == "jsonl" else _codiesp_args)(tmp_path, spec)
    result = run_main(*args)
    assert_one_line_error(result, *(fragment.format(**paths) for fragment in fragments))
    assert NOTE_1 not in result.stderr and NOTE_2 not in result.stderr  # never the note's text


# ------------------------------------------------------------------------------------------------ good inputs


def test_good_jsonl_scores_and_counts_codes_of_systems_without_gold(tmp_path: Path):
    pred = [
        _line(
            "n1",
            [
                _code("R05", score=0.9, evidence=[{"start": 0, "end": 39}]),
                _code("250.00", "icd9cm", 0.8),
                _code("BW03ZZZ", "icd10pcs", 0.7, sentence_evidence=[{"start": 0, "end": 39}]),
            ],
        ),
        GOOD_LINE,
        _line(
            "elsewhere", [_code("X99", score=0.1, evidence=[{"start": 5000, "end": 5010}])]
        ),  # not in the gold: not checked
    ]
    args, _ = _jsonl_args(tmp_path, {"pred": pred})
    result = run_main(*args)
    assert result.status == 0, result.stderr
    scored = json.loads(result.stdout)
    assert (scored["documents"], scored["predicted_documents"], scored["predictions_outside_gold"]) == (2, 2, 1)
    assert scored["codes_in_systems_without_gold"] == {"icd9cm": 1}
    assert set(scored["by_system"]) == {"icd10cm", "icd10pcs"}
    assert scored["by_system"]["icd10pcs"]["micro_f1"] == 1.0
    assert scored["by_system"]["icd10cm"]["micro_precision"] == 1.0


def test_good_codiesp_submission_scores(tmp_path: Path):
    args, _ = _codiesp_args(tmp_path, {})
    result = run_main(*args)
    assert result.status == 0, result.stderr
    scored = json.loads(result.stdout)
    assert scored["D"]["micro_recall"] == 1.0 and scored["P"]["micro_f1"] == 1.0
    assert scored["X"]["n_hits"] == 2 and scored["X"]["recall"] == 1.0


# -------------------------------------------------------------------------------------------- determinism

_DOCS = 120


def _ranked_corpus(seed: int = 7) -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """Gold sets and rankings whose per-document scores are awkward fractions (1/3, 2/7, ...)."""
    rng = random.Random(seed)
    labels = [f"c{index}" for index in range(40)]
    gold, ranked = {}, {}
    for index in range(_DOCS):
        gold[f"doc{index}"] = set(rng.sample(labels, rng.randint(1, 9)))
        ranked[f"doc{index}"] = rng.sample(labels, rng.randint(1, 17))
    return gold, ranked


def _shuffled(mapping: dict, rng: random.Random) -> dict:
    keys = list(mapping)
    rng.shuffle(keys)
    return {
        key: (
            set(rng.sample(sorted(mapping[key]), len(mapping[key]))) if isinstance(mapping[key], set) else mapping[key]
        )
        for key in keys
    }


def test_scores_are_bit_identical_in_any_dict_or_set_order():
    from icdcoder.evaluate.metrics import (
        average_precision,
        macro_prf,
        mean_average_precision,
        micro_prf,
        precision_recall_at_k,
        trectools_map,
    )

    gold, ranked = _ranked_corpus()
    rng = random.Random(11)

    def everything(g: dict, r: dict) -> str:
        scores = {doc: {code: 1.0 / (rank + 1) for rank, code in enumerate(codes)} for doc, codes in r.items()}
        from icdcoder.evaluate.metrics import auc_scores

        return repr(
            (
                mean_average_precision(g, r),
                trectools_map(g, r),
                micro_prf(g, r),
                macro_prf(g, r),
                [precision_recall_at_k(g, r, k) for k in (1, 5, 10)],
                auc_scores(g, scores),
            )
        )

    reference = everything(gold, ranked)
    plain_sums = set()
    for _ in range(20):
        g, r = _shuffled(gold, rng), _shuffled(ranked, rng)
        assert everything(g, r) == reference
        plain_sums.add(sum(average_precision(r[doc], g[doc]) for doc in g))
    # the corpus is one where a plain float sum does depend on the order: the check above can fail
    assert len(plain_sums) > 1


def _write_codiesp_corpus(root: Path) -> None:
    gold, ranked = _ranked_corpus()
    rows = {"D": [], "P": [], "X": []}
    for doc, codes in gold.items():
        _write_rows(root / "dev" / "text_files" / f"{doc}.txt", ["x" * 200])
        rows["D"].extend(f"{doc}\t{code}" for code in sorted(codes))
        rows["X"].extend(f"{doc}\tDIAGNOSTICO\t{code}\tx\t{5 * n} {5 * n + 4}" for n, code in enumerate(sorted(codes)))
    rows["P"] = ["doc0\tbw03zzz"]
    for kind, lines in rows.items():
        _write_rows(root / "dev" / f"dev{kind}.tsv", lines)
    _write_rows(root / "sub" / "D.tsv", [f"{doc}\t{code}" for doc, codes in ranked.items() for code in codes])
    _write_rows(
        root / "sub" / "X.tsv",
        [
            f"{doc}\t{5 * n} {5 * n + 6}\tDIAGNOSTICO\t{code}"
            for doc, codes in ranked.items()
            for n, code in enumerate(codes)
        ],
    )


def test_codiesp_scores_do_not_depend_on_the_hash_seed(tmp_path: Path):
    _write_codiesp_corpus(tmp_path)
    outputs = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "icdcoder.cli",
                "evaluate",
                "codiesp",
                "--data-dir",
                str(tmp_path),
                "--split",
                "dev",
                "--pred-dir",
                str(tmp_path / "sub"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] == outputs[2]
    assert 0.0 < json.loads(outputs[0])["D"]["map"] < 1.0
