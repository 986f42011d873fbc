"""The workstation API against the real app, the shipped default coder and a real SQLite file (httpx via FastAPI's
TestClient): coding, the bounded queue, jobs and their resumption, review with audit, exports, tokens, limits, logs."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest
from catalogue import assert_one_line_error, run_main
from fastapi.testclient import TestClient
from test_serve_support import (
    BEFORE_CANDIDATES,
    HEAD,
    SAMPLE_NOTE,
    ControlledCoder,
    default_coder,
    migrate,
    wait_for,
)

from icdcoder.errors import InputError
from icdcoder.serve.app import ServeSettings, create_app

NEGATED = "Niega dolor torácico. Hipertensión arterial en tratamiento."
TOKEN = "s3cret-token-0123456789"


@pytest.fixture
def settings(tmp_path) -> ServeSettings:
    return ServeSettings(db=str(tmp_path / "serve.sqlite"))


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings, default_coder())) as test_client:
        yield test_client


def _job(client: TestClient, job_id: str, timeout: float = 60) -> dict:
    return wait_for(
        lambda: (job := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("done", "failed") and job, timeout
    )


def _coded_note(client: TestClient, text: str = SAMPLE_NOTE, **extra) -> dict:
    response = client.post("/v1/notes", json={"text": text, "id": "sample", **extra}, headers={"X-User": "ana"})
    assert response.status_code == 201, response.text
    return response.json()


# ------------------------------------------------------------------------------------------------ coding


def test_code_answers_the_record_code_json_prints(client, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text(SAMPLE_NOTE, encoding="utf-8")
    result = run_main("code", str(note), "--json")
    assert result.status == 0, result.stderr[-2000:]
    expected = json.loads(result.stdout)
    response = client.post("/v1/code", json={"text": SAMPLE_NOTE})
    assert response.status_code == 200, response.text
    assert response.json() == expected
    assert expected["codes"] and all("traits" in span for code in expected["codes"] for span in code["evidence"])


def test_the_default_profile_is_clinical_and_codiesp_keeps_negated_findings(client):
    clinical = client.post("/v1/code", json={"text": NEGATED, "id": "n1"}).json()
    codiesp = client.post("/v1/code", json={"text": NEGATED, "id": "n1", "profile": "codiesp"}).json()
    assert clinical["id"] == "n1"
    assert "R07.9" in [code["code"] for code in clinical["excluded"]]
    assert "R07.9" not in [code["code"] for code in clinical["codes"]]
    kept = {code["code"]: code for code in codiesp["codes"]}
    assert kept["R07.9"]["assertion"] == "negated"


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"text": ""}, 422, "text"),
        ({"text": "   "}, 400, "the note is empty"),
        ({"text": "Fiebre.", "language": "fr"}, 422, "language"),
        ({"text": "Fiebre.", "profile": "billing"}, 422, "profile"),
        ({"language": "es"}, 422, "text"),
    ],
)
def test_bad_notes_are_refused_with_the_field_named(client, body, status, fragment):
    response = client.post("/v1/code", json=body)
    assert response.status_code == status, response.text
    assert fragment in json.dumps(response.json()["detail"])


def test_bodies_and_notes_over_the_limits_answer_413(tmp_path):
    settings = ServeSettings(db=str(tmp_path / "s.sqlite"), max_body_bytes=2000, max_note_chars=500)
    with TestClient(create_app(settings, default_coder())) as client:
        big = client.post("/v1/code", content=b"{" + b" " * 3000 + b"}", headers={"content-type": "application/json"})
        assert big.status_code == 413 and "2,000 bytes" in big.json()["detail"]
        long_note = client.post("/v1/code", json={"text": "fiebre " * 100})
        assert long_note.status_code == 413 and "limit of 500" in long_note.json()["detail"]


def test_a_full_queue_answers_429_with_retry_after_and_loses_nothing(tmp_path):
    coder = ControlledCoder()
    settings = ServeSettings(db=str(tmp_path / "q.sqlite"), queue_bound=1, batch=1)
    with TestClient(create_app(settings, coder)) as client:
        coder.hold()
        first = client.post("/v1/jobs", json={"notes": [{"text": SAMPLE_NOTE, "id": "a"}]}).json()
        wait_for(coder.entered.is_set)  # the worker holds job a: the queue is empty again
        second = client.post("/v1/jobs", json={"notes": [{"text": SAMPLE_NOTE, "id": "b"}]})
        assert second.status_code == 202
        refused = client.post("/v1/jobs", json={"notes": [{"text": SAMPLE_NOTE, "id": "c"}]})
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert client.post("/v1/code", json={"text": SAMPLE_NOTE}).status_code == 429
        assert client.get("/readyz").json()["queue"] == {"waiting": 1, "bound": 1, "max_waiting": 1}
        coder.release()
        for job_id in (first["id"], second.json()["id"]):
            assert _job(client, job_id)["status"] == "done"
        assert client.get("/v1/notes").json()["counts"] == {"coded": 2}
    assert coder.notes == ["a", "b"]


def test_jobs_code_every_note_once_in_order(client):
    notes = [{"text": SAMPLE_NOTE.replace("58", str(age)), "id": f"n{age}"} for age in range(40, 52)]
    response = client.post("/v1/jobs", json={"notes": notes, "profile": "codiesp"})
    assert response.status_code == 202 and response.headers["Location"].endswith(response.json()["id"])
    job = _job(client, response.json()["id"])
    assert job["status"] == "done" and job["total"] == job["done"] == 12
    assert [record["id"] for record in job["records"]] == [note["id"] for note in notes]
    first = client.get(f"/v1/notes/{job['records'][0]['note_id']}").json()
    assert [c["code"] for c in first["candidates"]] == [c["code"] for c in job["records"][0]["candidates"]] != []
    assert client.get("/v1/jobs/nope").status_code == 404


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the crash, on purpose
def test_a_job_cut_short_resumes_after_a_restart_and_codes_each_note_once(tmp_path):
    settings = ServeSettings(db=str(tmp_path / "r.sqlite"), batch=2)
    notes = [{"text": SAMPLE_NOTE, "id": f"n{i}"} for i in range(7)]
    crashing = ControlledCoder(crash_after=2)  # two batches of two, then the worker dies mid-job
    with TestClient(create_app(settings, crashing)) as client:
        job_id = client.post("/v1/jobs", json={"notes": notes}).json()["id"]
        wait_for(lambda: crashing.calls == 3)
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert (job["status"], job["done"]) == ("running", 4)
    resumed = ControlledCoder()
    with TestClient(create_app(settings, resumed)) as client:
        job = _job(client, job_id)
        assert job["status"] == "done" and [r["id"] for r in job["records"]] == [n["id"] for n in notes]
    assert crashing.notes == ["n0", "n1", "n2", "n3"] and resumed.notes == ["n4", "n5", "n6"]
    with sqlite3.connect(tmp_path / "r.sqlite") as db:
        assert db.execute(
            "select count(*), count(distinct position) from notes where job_id = ?", (job_id,)
        ).fetchone() == (7, 7)


# ------------------------------------------------------------------------------------------------ review and audit


def test_review_decisions_are_audited_append_only(client, settings):
    note = _coded_note(client)
    codes = {code["code"]: code for code in note["codes"]}
    user = {"X-User": "ana"}
    rejected = client.post(
        f"/v1/notes/{note['id']}/codes/{codes['B99.9']['id']}", json={"action": "reject"}, headers=user
    ).json()
    assert rejected["decision"] == "rejected"
    changed = client.post(
        f"/v1/notes/{note['id']}/codes/{codes['I21.3']['id']}",
        json={"action": "change", "code": "i21.19"},
        headers=user,
    )
    assert changed.json()["code"] == "I21.19" and changed.json()["original_code"] == "I21.3"
    start = SAMPLE_NOTE.index("segmento ST")
    added = client.post(
        f"/v1/notes/{note['id']}/codes", json={"code": "R94.31", "start": start, "end": start + 11}, headers=user
    ).json()
    assert added["origin"] == "added" and added["evidence"][0]["quote"] == "segmento ST"
    bad = client.post(f"/v1/notes/{note['id']}/codes", json={"code": "Q99.999", "start": 0, "end": 4}, headers=user)
    assert bad.status_code == 400 and "unknown icd10cm code" in bad.json()["detail"]
    outside = client.post(
        f"/v1/notes/{note['id']}/codes", json={"code": "R94.31", "start": 5, "end": 99999}, headers=user
    )
    assert outside.status_code == 400
    assert client.post(f"/v1/notes/{note['id']}/codes/999999", json={"action": "accept"}).status_code == 404
    assert (
        client.post(f"/v1/notes/{note['id']}/review", json={"reviewed": True}, headers=user).json()["status"]
        == "reviewed"
    )
    audit = client.get(f"/v1/notes/{note['id']}/audit").json()
    assert [row["action"] for row in audit] == ["code", "reject", "change", "add", "reviewed"]
    assert {row["user"] for row in audit[1:]} == {"ana"} and audit[0]["user"] == "icdcoder"
    assert audit[2]["before"]["code"] == "I21.3" and audit[2]["after"]["code"] == "I21.19"
    assert all(row["model_version"] == default_coder().model_version and row["at"].endswith("+00:00") for row in audit)
    with sqlite3.connect(settings.db) as db, pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("update audit set user = 'mallory'")


def test_candidates_are_stored_listed_and_exported_only_once_accepted(client, settings):
    record = client.post("/v1/code", json={"text": SAMPLE_NOTE, "id": "sample"}).json()
    note = _coded_note(client)
    candidates = note["candidates"]
    assert len(candidates) > 3
    assert [(c["code"], c["system"], c["score"]) for c in candidates] == [
        (c["code"], c["system"], c["score"]) for c in record["candidates"]
    ]
    assert [c["score"] for c in candidates] == sorted((c["score"] for c in candidates), reverse=True)
    assert all(c["description"] for c in candidates)
    with sqlite3.connect(settings.db) as db:
        stored = db.execute("select code from candidates where note_id = ? order by rank", (note["id"],)).fetchall()
    assert [code for (code,) in stored] == [c["code"] for c in candidates]

    # accepting a candidate is adding it as a code: without a selection it has no evidence, with one that is its
    # evidence; a lone start or end is refused
    user, codes = {"X-User": "ana"}, f"/v1/notes/{note['id']}/codes"
    top, second, left = candidates[0], candidates[1], candidates[2:]
    accepted = client.post(codes, json={"code": top["code"], "system": top["system"]}, headers=user)
    assert accepted.status_code == 201, accepted.text
    assert (accepted.json()["origin"], accepted.json()["decision"], accepted.json()["evidence"]) == (
        "added",
        "accepted",
        [],
    )
    start = SAMPLE_NOTE.index("dolor torácico")
    half = client.post(codes, json={"code": second["code"], "system": second["system"], "start": start})
    assert half.status_code == 400 and "give both" in half.json()["detail"]
    with_text = client.post(
        codes, json={"code": second["code"], "system": second["system"], "start": start, "end": start + 14}
    ).json()
    assert with_text["evidence"][0]["quote"] == "dolor torácico"
    shown = client.get(f"/v1/notes/{note['id']}").json()
    assert shown["candidates"] == left
    assert [c["code"] for c in shown["codes"][-2:]] == [top["code"], second["code"]]
    audit = client.get(f"/v1/notes/{note['id']}/audit").json()[-2]
    assert (audit["user"], audit["action"], audit["code_id"], audit["before"]) == (
        "ana",
        "add",
        accepted.json()["id"],
        None,
    )
    assert (audit["after"]["code"], audit["after"]["evidence"], audit["model_version"]) == (
        top["code"],
        [],
        default_coder().model_version,
    )

    # the exports hold the accepted candidates as codes and none of the others, not even as refuted
    client.post(f"/v1/notes/{note['id']}/review", json={})
    bundle = client.get("/v1/export/fhir").json()
    fhir_codes = {entry["resource"]["code"]["coding"][0]["code"] for entry in bundle["entry"]}
    tsv_codes = {
        line.split("\t")[1].upper()
        for name in ("D.tsv", "P.tsv")
        for line in client.get(f"/v1/export/codiesp/{name}").text.splitlines()
    }
    (line,) = [json.loads(line) for line in client.get("/v1/export/jsonl").text.splitlines()]
    jsonl_codes = {code["code"] for code in line["codes"]}
    for exported in (fhir_codes, tsv_codes, jsonl_codes):
        assert {top["code"], second["code"]} <= exported
        assert not exported & {c["code"] for c in left}


def test_an_older_database_upgrades_keeping_its_data_and_its_notes_get_their_candidates(tmp_path):
    from sqlalchemy import inspect

    from icdcoder.serve.db import open_database

    url = str(tmp_path / "old.sqlite")
    with TestClient(create_app(ServeSettings(db=url), default_coder())) as client:
        note = _coded_note(client)
        older = _coded_note(client, "Paciente con neumonía adquirida en la comunidad y fiebre.")
        client.post(f"/v1/notes/{note['id']}/codes/{note['codes'][0]['id']}", json={"action": "reject"})
    assert older["candidates"]
    # the schema before candidates had a table; the older note's record was written before records had candidates
    engine, _ = open_database(url)
    migrate(engine, "downgrade", BEFORE_CANDIDATES)
    assert "candidates" not in inspect(engine).get_table_names()
    engine.dispose()
    with sqlite3.connect(url) as db:
        db.execute("update notes set record = json_remove(record, '$.candidates') where id = ?", (older["id"],))
    with TestClient(create_app(ServeSettings(db=url), default_coder())) as client:
        again = client.get(f"/v1/notes/{note['id']}").json()
        again_older = client.get(f"/v1/notes/{older['id']}").json()
        audit = client.get(f"/v1/notes/{note['id']}/audit").json()
    assert again["candidates"] == note["candidates"] and again_older["candidates"] == []
    assert [c["decision"] for c in again["codes"]] == ["rejected"] + [None] * (len(note["codes"]) - 1)
    assert [row["action"] for row in audit] == ["code", "reject"]


def test_codes_carry_their_validity_as_the_review_stands(client):
    note = _coded_note(client)
    assert all(code["validity"]["billable"] and code["validity"]["excludes1"] == [] for code in note["codes"])
    codes = {code["code"]: code for code in note["codes"]}
    decide = f"/v1/notes/{note['id']}/codes"
    changed = client.post(f"{decide}/{codes['I21.3']['id']}", json={"action": "change", "code": "I21"}).json()
    assert changed["validity"] | {"note": ""} == {
        "billable": False,
        "code_set": "ICD-10-CM 2024",
        "problem": "category",
        "replacements": ["I21.9"],
        "note": "",
        "excludes1": [],
        "replacement_system": "icd10cm",
        "replacement_descriptions": ["Acute myocardial infarction, unspecified"],
    }
    start = SAMPLE_NOTE.index("infección urinaria")
    cystitis = client.post(decide, json={"code": "N30.00", "start": start, "end": start + 18}).json()
    assert cystitis["validity"]["excludes1"] == ["N39.0"]
    shown = {code["code"]: code for code in client.get(f"/v1/notes/{note['id']}").json()["codes"]}
    assert shown["N39.0"]["validity"]["excludes1"] == ["N30.00"] and shown["I21"]["validity"]["problem"] == "category"
    client.post(f"{decide}/{cystitis['id']}", json={"action": "reject"})
    shown = {code["code"]: code for code in client.get(f"/v1/notes/{note['id']}").json()["codes"]}
    assert shown["N39.0"]["validity"]["excludes1"] == [] and shown["N30.00"]["validity"]["excludes1"] == []
    fixed = client.post(f"{decide}/{codes['I21.3']['id']}", json={"action": "change", "code": "I21.9"}).json()
    assert fixed["validity"]["billable"] and fixed["original_code"] == "I21.3"


def test_what_a_database_cannot_store_is_refused_with_the_field_named(client):
    nul = client.post("/v1/notes", json={"text": "Fiebre\x00 alta.", "id": "x"})
    assert nul.status_code == 400 and "field 'text': holds a NUL character" in nul.json()["detail"]
    nul_id = client.post("/v1/code", json={"text": "Fiebre.", "id": "x\x00"})
    assert nul_id.status_code == 400 and "field 'id'" in nul_id.json()["detail"]
    note = _coded_note(client)
    accept = f"/v1/notes/{note['id']}/codes/{note['codes'][0]['id']}"
    long_user = client.post(accept, json={"action": "accept"}, headers={"X-User": "u" * 201})
    assert long_user.status_code == 400 and "X-User" in long_user.json()["detail"]
    assert client.post(accept, json={"action": "accept"}, headers={"X-User": "u" * 200}).status_code == 200


def test_exports_follow_the_review(client):
    from fhir.resources.R4B.bundle import Bundle

    note = _coded_note(client, SAMPLE_NOTE + "\nNiega dolor abdominal.")
    codes = {code["code"]: code for code in note["codes"]}
    client.post(f"/v1/notes/{note['id']}/codes/{codes['B99.9']['id']}", json={"action": "reject"})
    client.post(f"/v1/notes/{note['id']}/codes/{codes['I10']['id']}", json={"action": "accept"})
    assert client.get("/v1/export/fhir").json()["entry"] == []  # nothing reviewed yet
    client.post(f"/v1/notes/{note['id']}/review", json={})
    response = client.get("/v1/export/fhir")
    bundle = response.json()
    Bundle.model_validate(bundle)
    resources = {entry["resource"]["code"]["coding"][0]["code"]: entry["resource"] for entry in bundle["entry"]}
    status = {code: r.get("verificationStatus", {}).get("coding", [{}])[0].get("code") for code, r in resources.items()}
    assert status["B99.9"] == "refuted" and status["I10"] == "confirmed"
    assert resources["BW03ZZZ"]["resourceType"] == "Procedure" and resources["BW03ZZZ"]["status"] == "completed"
    assert resources["I10"]["code"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/icd-10-cm"
    assert resources["BW03ZZZ"]["code"]["coding"][0]["system"] == "http://www.cms.gov/Medicare/Coding/ICD10"
    assert [
        r["verificationStatus"]["coding"][0]["code"]
        for r in resources.values()
        if r["resourceType"] == "Condition" and r["code"]["coding"][0]["code"].startswith("R10")
    ] in ([], ["refuted"])
    d_rows = client.get("/v1/export/codiesp/D.tsv").text.splitlines()
    assert "sample\ti10" in d_rows and "sample\tb99.9" not in d_rows
    lines = [json.loads(line) for line in client.get("/v1/export/jsonl").text.splitlines()]
    assert len(lines) == 1 and {c["code"] for c in lines[0]["codes"]} == {
        row.split("\t")[1].upper() for row in d_rows
    } | {row.split("\t")[1].upper() for row in client.get("/v1/export/codiesp/P.tsv").text.splitlines()}


# ------------------------------------------------------------------------------------------------ ontology


def test_code_search_finds_spanish_and_english_words_and_codes(client):
    def codes(query: str) -> list[str]:
        return [hit["code"] for hit in client.get("/v1/codes", params={"q": query}).json()]

    assert any(code.startswith("I21") for code in codes("infart"))  # a Spanish prefix, as typed
    assert any(code.startswith("N39.0") for code in codes("infección urinaria"))
    assert any(code.startswith("I21") for code in codes("myocardial infarction"))
    assert codes("i21")[0] == "I21"
    shown = client.get("/v1/codes/i213").json()
    assert shown["code"] == "I21.3" and "STEMI" in shown["description"]
    assert client.get("/v1/codes/ZZZ999").status_code == 404
    assert client.get("/v1/codes/I10", params={"system": "icd11"}).status_code == 400


# ------------------------------------------------------------------------------------------------ access, status, logs


def test_tokens_are_checked_on_every_request_and_name_the_user(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# token user\n{TOKEN} ana\n", encoding="utf-8")
    settings = ServeSettings(db=str(tmp_path / "t.sqlite"), host="0.0.0.0", token_file=tokens)
    with TestClient(create_app(settings, default_coder())) as client:
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
        for path in ("/readyz", "/v1/notes", "/docs", "/openapi.json"):
            assert client.get(path).status_code == 401, path
        assert client.get("/v1/notes", headers={"Authorization": "Bearer wrong-token-0000000000"}).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}", "X-User": "mallory"}
        note = client.post("/v1/notes", json={"text": SAMPLE_NOTE}, headers=auth).json()
        code_id = note["codes"][0]["id"]
        client.post(f"/v1/notes/{note['id']}/codes/{code_id}", json={"action": "accept"}, headers=auth)
        assert client.get(f"/v1/notes/{note['id']}/audit", headers=auth).json()[-1]["user"] == "ana"


def test_binding_beyond_loopback_needs_tokens_and_bad_token_files_are_one_line(tmp_path):
    from icdcoder.serve.app import check_binding, read_tokens

    with pytest.raises(InputError, match="--token-file"):
        check_binding(ServeSettings(host="0.0.0.0"))
    short = tmp_path / "short.txt"
    short.write_text("abc ana\n", encoding="utf-8")
    with pytest.raises(InputError, match="short.txt:1: a token must have at least 16"):
        read_tokens(short)
    long_user = tmp_path / "long.txt"
    long_user.write_text(f"# tokens\n{TOKEN} {'u' * 201}\n", encoding="utf-8")
    with pytest.raises(InputError, match="long.txt:2: a user name has at most 200 characters"):
        read_tokens(long_user)
    assert_one_line_error(run_main("serve", "--host", "0.0.0.0"), "--token-file")
    assert_one_line_error(
        run_main("serve", "--token-file", str(tmp_path / "missing.txt")), "missing.txt", "file not found"
    )
    assert_one_line_error(run_main("serve", "--db", "nosuchdb://x/y"), "--db", "not a usable database URL")
    assert_one_line_error(
        run_main("serve", "--db", "postgresql+pg8000://u@127.0.0.1:1/x"), "--db", "driver is not installed"
    )
    assert_one_line_error(
        run_main("serve", "--db", str(tmp_path / "no" / "such" / "x.sqlite")), "--db", "cannot open the database"
    )


def test_status_docs_and_access_logs_without_note_text(client, caplog):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] and ready["model_version"].startswith("icdcoder-")
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/code", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/codes", "/v1/codes/{code}"} <= set(paths)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="icdcoder.serve.access"):
        client.post("/v1/code", json={"text": "Paciente Zyxwvutsrq con fiebre.", "id": "secret-note"})
        client.get("/v1/codes", params={"q": "Zyxwvutsrq"})
    lines = [json.loads(record.getMessage()) for record in caplog.records if record.name == "icdcoder.serve.access"]
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("POST", "/v1/code", 200),
        ("GET", "/v1/codes", 200),
    ]
    assert "Zyxwvutsrq" not in caplog.text and "fiebre" not in caplog.text


def test_the_schema_is_migrated_at_start_and_data_survives_a_reopen(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from icdcoder.serve.db import Base, open_database, upgrade

    url = str(tmp_path / "m.sqlite")
    engine, _ = open_database(url)
    assert upgrade(engine) == HEAD
    with engine.connect() as connection:  # the migrations build exactly the schema the models describe
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    with TestClient(create_app(ServeSettings(db=url), default_coder())) as client:
        note_id = _coded_note(client)["id"]
    with TestClient(create_app(ServeSettings(db=url), default_coder())) as client:
        assert client.get(f"/v1/notes/{note_id}").json()["status"] == "coded"


def test_load_queues_a_jsonl_file_once_for_review(tmp_path):
    from icdcoder.serve.cli import load_notes

    notes = tmp_path / "notes.jsonl"
    notes.write_text(
        "".join(json.dumps({"id": f"n{i}", "text": SAMPLE_NOTE}, ensure_ascii=False) + "\n" for i in range(3)),
        encoding="utf-8",
    )
    app = create_app(ServeSettings(db=str(tmp_path / "l.sqlite")), default_coder())
    assert load_notes(app.state.station, notes, "es", "clinical") == 3
    with TestClient(app) as client:
        queue = wait_for(lambda: (q := client.get("/v1/notes?status=coded").json())["counts"].get("coded") == 3 and q)
        assert [note["external_id"] for note in queue["notes"]] == ["n0", "n1", "n2"]
    assert (
        load_notes(
            create_app(ServeSettings(db=str(tmp_path / "l.sqlite")), default_coder()).state.station,
            notes,
            "es",
            "clinical",
        )
        == 0
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "text": ""}\n', encoding="utf-8")
    with pytest.raises(InputError, match="bad.jsonl:1"):
        load_notes(app.state.station, bad, "es", "clinical")
