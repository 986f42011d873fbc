"""The workstation on a real PostgreSQL server: the shipped migrations (down and up again), the database's own
append-only audit, the review API with its audit rows and exports, a job cut short and resumed, and the refusals of
what PostgreSQL cannot store.

The server comes from ``ICDCODER_TEST_POSTGRES_URL``, a SQLAlchemy URL whose role may create databases
(``eval "$(.ci/postgres start)"`` starts a throwaway server on localhost and sets it); without it the module is
skipped, saying so. Each test gets a database of its own, dropped afterwards, whose time zone is Europe/Madrid: times
come back from it in another zone than UTC, as they do from many a hospital's server.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from test_serve_support import BEFORE_CANDIDATES, HEAD, SAMPLE_NOTE, ControlledCoder, default_coder, migrate, wait_for

from icdcoder.errors import InputError
from icdcoder.serve.app import ServeSettings, create_app

POSTGRES_URL = os.environ.get("ICDCODER_TEST_POSTGRES_URL", "")

pytestmark = pytest.mark.skipif(
    not POSTGRES_URL,
    reason='needs a PostgreSQL server: set ICDCODER_TEST_POSTGRES_URL (eval "$(.ci/postgres start)" starts one)',
)


@pytest.fixture
def database() -> Iterator[str]:
    """The URL of a new, empty database on the test server (time zone Europe/Madrid), dropped after the test."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"icdcoder_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
        connection.execute(text(f"ALTER DATABASE \"{name}\" SET timezone TO 'Europe/Madrid'"))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _tables(engine) -> set[str]:
    from sqlalchemy import inspect

    return set(inspect(engine).get_table_names())


def test_the_migrations_build_the_models_schema_and_go_down_and_up_again(database):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from icdcoder.serve.db import Base, open_database, upgrade

    engine, _ = open_database(database)
    try:
        assert engine.dialect.name == "postgresql"
        assert upgrade(engine) == HEAD
        with engine.connect() as connection:  # the migrations build exactly the schema the models describe
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        assert {"jobs", "notes", "codes", "audit"} <= _tables(engine)
        migrate(engine, "downgrade", "base")
        assert _tables(engine) == {"alembic_version"}
        assert upgrade(engine) == HEAD
        assert {"jobs", "notes", "codes", "audit"} <= _tables(engine)
    finally:
        engine.dispose()


def _coded_note(client: TestClient, text: str = SAMPLE_NOTE) -> dict:
    response = client.post("/v1/notes", json={"text": text, "id": "sample"}, headers={"X-User": "ana"})
    assert response.status_code == 201, response.text
    return response.json()


def _raw(database: str, statement: str, *parameters) -> list[tuple]:
    """``statement`` run by psycopg itself on ``database`` (no ORM, no SQLAlchemy), its rows."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(database)
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database
    ) as connection:
        cursor = connection.execute(statement, parameters)
        return cursor.fetchall() if cursor.description else []


def test_review_decisions_audit_and_exports_on_postgres(database):
    import psycopg
    from fhir.resources.R4B.bundle import Bundle

    user = {"X-User": "ana"}
    with TestClient(create_app(ServeSettings(db=database), default_coder())) as client:
        note = _coded_note(client)
        codes = {code["code"]: code for code in note["codes"]}
        assert all(code["validity"]["billable"] for code in note["codes"])
        decide = f"/v1/notes/{note['id']}/codes"
        assert (
            client.post(f"{decide}/{codes['B99.9']['id']}", json={"action": "reject"}, headers=user).status_code == 200
        )
        changed = client.post(
            f"{decide}/{codes['I21.3']['id']}", json={"action": "change", "code": "I21"}, headers=user
        )
        assert (changed.json()["code"], changed.json()["validity"]["problem"]) == ("I21", "category")
        start = SAMPLE_NOTE.index("segmento ST")
        added = client.post(decide, json={"code": "R94.31", "start": start, "end": start + 11}, headers=user).json()
        assert added["id"] > max(code["id"] for code in note["codes"])  # the sequence numbers the rows
        assert client.post(f"/v1/notes/{note['id']}/review", json={"reviewed": True}, headers=user).status_code == 200
        audit = client.get(f"/v1/notes/{note['id']}/audit").json()
        bundle = client.get("/v1/export/fhir").json()
        d_rows = client.get("/v1/export/codiesp/D.tsv").text.splitlines()
        listed = client.get("/v1/notes").json()
    assert [row["action"] for row in audit] == ["code", "reject", "change", "add", "reviewed"]
    assert [row["user"] for row in audit] == ["icdcoder", "ana", "ana", "ana", "ana"]
    assert audit[2]["before"]["code"] == "I21.3" and audit[2]["after"] == {
        "code": "I21",
        "system": "icd10cm",
        "origin": "coded",
        "decision": "accepted",
        "original_code": "I21.3",
        "evidence": audit[2]["before"]["evidence"],
    }
    assert [row["id"] for row in audit] == sorted(row["id"] for row in audit)
    assert all(row["model_version"] == default_coder().model_version for row in audit)
    # the database answers in Madrid time; the API in UTC
    assert _raw(database, "select extract(timezone from at) from audit limit 1")[0][0] != 0
    assert all(row["at"].endswith("+00:00") for row in audit) and listed["notes"][0]["created_at"].endswith("+00:00")
    assert listed["counts"] == {"reviewed": 1}
    Bundle.model_validate(bundle)
    assert "sample\ti21" in d_rows and "sample\tb99.9" not in d_rows
    # append-only in the database itself, whoever connects
    for statement in ("update audit set \"user\" = 'mallory'", "delete from audit", "truncate audit"):
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            _raw(database, statement)
    # and the data is there for the next start
    with TestClient(create_app(ServeSettings(db=database), default_coder())) as client:
        again = client.get(f"/v1/notes/{note['id']}").json()
    assert again["status"] == "reviewed" and [c["code"] for c in again["codes"]][-1] == "R94.31"


def test_candidates_are_kept_and_an_older_database_gets_them_from_its_records_on_postgres(database):
    from sqlalchemy import inspect

    from icdcoder.serve.db import open_database

    with TestClient(create_app(ServeSettings(db=database), default_coder())) as client:
        note = _coded_note(client)
        top = note["candidates"][0]
        added = client.post(
            f"/v1/notes/{note['id']}/codes",
            json={"code": top["code"], "system": top["system"]},
            headers={"X-User": "ana"},
        )
        assert added.status_code == 201 and added.json()["evidence"] == []
    engine, _ = open_database(database)
    try:
        migrate(engine, "downgrade", BEFORE_CANDIDATES)
        assert "candidates" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    with TestClient(create_app(ServeSettings(db=database), default_coder())) as client:  # upgraded at start
        again = client.get(f"/v1/notes/{note['id']}").json()
    assert again["candidates"] == note["candidates"][1:] and again["codes"][-1]["code"] == top["code"]
    assert _raw(database, "select count(*) from candidates") == [(len(note["candidates"]),)]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the crash, on purpose
def test_a_job_cut_short_resumes_after_a_restart_on_postgres(database):
    settings = ServeSettings(db=database, batch=2)
    notes = [{"text": SAMPLE_NOTE, "id": f"n{i}"} for i in range(5)]
    crashing = ControlledCoder(crash_after=1)  # one batch of two, then the worker dies mid-job
    with TestClient(create_app(settings, crashing)) as client:
        job_id = client.post("/v1/jobs", json={"notes": notes}).json()["id"]
        wait_for(lambda: crashing.calls == 2)
        assert (client.get(f"/v1/jobs/{job_id}").json()["done"]) == 2
    resumed = ControlledCoder()
    with TestClient(create_app(settings, resumed)) as client:
        job = wait_for(lambda: (j := client.get(f"/v1/jobs/{job_id}").json())["status"] == "done" and j)
    assert [record["id"] for record in job["records"]] == [note["id"] for note in notes]
    assert crashing.notes == ["n0", "n1"] and resumed.notes == ["n2", "n3", "n4"]
    assert _raw(database, "select count(*), count(distinct position) from notes where job_id = %s", job_id) == [(5, 5)]
    coded = "select count(*), count(distinct note_id) from audit where action = 'code'"
    assert _raw(database, coded) == [(5, 5)]


def test_what_postgresql_cannot_store_is_refused_with_the_field_named(database, tmp_path):
    from icdcoder.serve.cli import load_notes

    app = create_app(ServeSettings(db=database), default_coder())
    with TestClient(app) as client:
        nul = client.post("/v1/notes", json={"text": "Fiebre\x00 alta.", "id": "x"})
        assert nul.status_code == 400 and "field 'text'" in nul.json()["detail"]
        note = _coded_note(client)
        long_user = client.post(
            f"/v1/notes/{note['id']}/codes/{note['codes'][0]['id']}",
            json={"action": "accept"},
            headers={"X-User": "u" * 201},
        )
        assert long_user.status_code == 400 and "X-User" in long_user.json()["detail"]
        assert client.get("/v1/notes").json()["counts"] == {"coded": 1}
    notes = tmp_path / "notes.jsonl"
    notes.write_text(json.dumps({"id": "n" * 201, "text": SAMPLE_NOTE}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="notes.jsonl:1: field 'id'"):
        load_notes(app.state.station, notes, "es", "clinical")
