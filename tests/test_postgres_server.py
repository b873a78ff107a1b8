"""The throwaway PostgreSQL server of tests/postgres_server.py: real, on 127.0.0.1, isolated."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from postgres_server import (  # the *_fixture imports register the fixtures in this module
    HOST,
    PostgresServer,
    PostgresUnavailableError,
    find_bin_dir,
    find_wal2json,
    fresh_postgres_url_fixture,  # noqa: F401
    logical_postgres_server_fixture,  # noqa: F401
    postgres_server_fixture,  # noqa: F401
    postgres_url_fixture,  # noqa: F401
)


def test_session_database_takes_a_table(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS probe (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute("DELETE FROM probe")
        conn.execute("INSERT INTO probe VALUES (1, 'one'), (2, 'two')")
        rows = conn.execute("SELECT id, name FROM probe ORDER BY id").fetchall()
        conn.execute("DROP TABLE probe")
    assert rows == [(1, "one"), (2, "two")]


def test_url_names_loopback_and_the_server_listens_there_only(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    parts = urlsplit(postgres_url)
    assert parts.scheme == "postgresql"
    assert parts.hostname == HOST == "127.0.0.1"
    assert parts.port == postgres_server.port
    assert parts.username == postgres_server.user
    with psycopg.connect(postgres_url) as conn:
        listen = conn.execute("SHOW listen_addresses").fetchone()
        server_addr = conn.execute("SELECT host(inet_server_addr())").fetchone()
        superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        is_super = superuser.fetchone()
    assert listen == ("127.0.0.1",)
    assert server_addr == ("127.0.0.1",)  # a TCP connection, not the unix socket
    assert is_super == (True,)
    # Bound to 127.0.0.1 only: the same port on another loopback address refuses.
    with (
        pytest.raises(OSError),
        socket.create_connection(("127.0.0.2", postgres_server.port), timeout=2),
    ):
        pass


def test_fresh_database_is_empty_and_writable(fresh_postgres_url: str) -> None:
    with psycopg.connect(fresh_postgres_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("INSERT INTO t VALUES ('x')")
        assert conn.execute("SELECT v FROM t").fetchall() == [("x",)]
    assert tables == (0,)
    assert urlsplit(fresh_postgres_url).path.startswith("/test_")


@pytest.fixture
def other_fresh_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = "test_other_isolation"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


def test_fresh_databases_are_isolated(
    fresh_postgres_url: str, other_fresh_postgres_url: str, postgres_url: str
) -> None:
    assert len({fresh_postgres_url, other_fresh_postgres_url, postgres_url}) == 3
    with psycopg.connect(fresh_postgres_url) as first:
        first.execute("CREATE TABLE ledger (k text PRIMARY KEY)")
        first.execute("INSERT INTO ledger VALUES ('only-in-first')")
    with psycopg.connect(other_fresh_postgres_url) as second:
        found = second.execute("SELECT to_regclass('public.ledger')").fetchone()
    assert found == (None,)


def test_fresh_database_is_dropped_after_the_test(postgres_server: PostgresServer) -> None:
    # Drive the fixture's own steps: create, use, drop; the database is gone after.
    name = "test_dropped_probe"
    url = postgres_server.create_database(name)
    held = psycopg.connect(url)  # a connection left open must not block the drop
    try:
        postgres_server.drop_database(name)
    finally:
        held.close()
    with psycopg.connect(postgres_server.admin_url) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert row is None


def test_missing_installation_fails_with_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("POSTGRES_BIN_DIR", str(tmp_path))
    with pytest.raises(PostgresUnavailableError, match="make postgres-server"):
        find_bin_dir()


@pytest.mark.slow  # runs a stand-in pg_config
def test_missing_wal2json_fails_with_install_hint(tmp_path: Path) -> None:
    # A server installation whose library directory holds no wal2json.so.
    pg_config = tmp_path / "pg_config"
    pg_config.write_text(f"#!/bin/sh\necho {tmp_path}\n", encoding="utf-8")
    pg_config.chmod(0o755)
    with pytest.raises(PostgresUnavailableError, match="make postgres-wal2json"):
        find_wal2json(tmp_path)


def test_logical_server_is_its_own_server_with_wal_level_logical(
    logical_postgres_server: PostgresServer, postgres_server: PostgresServer
) -> None:
    assert logical_postgres_server.port != postgres_server.port
    with psycopg.connect(logical_postgres_server.url()) as conn:
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
    with psycopg.connect(postgres_server.url()) as conn:  # the ledger tests' server: unchanged
        assert conn.execute("SHOW wal_level").fetchone() == ("replica",)


def test_logical_server_decodes_changes_with_wal2json(
    logical_postgres_server: PostgresServer,
) -> None:
    """What tap-postgres LOG_BASED reads: wal2json format 2; a delete carries the key only."""
    name = "test_wal2json_probe"
    url = logical_postgres_server.create_database(name)
    slot = "probe_slot"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE people (id int PRIMARY KEY, email text NOT NULL)")
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (slot,))
            conn.execute("INSERT INTO people VALUES (1, 'ann@example.com')")
            conn.execute("DELETE FROM people WHERE id = 1")
            rows = conn.execute(
                "SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL, "
                "'format-version', '2', 'include-transaction', 'false')",
                (slot,),
            ).fetchall()
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    finally:
        logical_postgres_server.drop_database(name)
    changes = [json.loads(data) for (data,) in rows]
    assert [c["action"] for c in changes] == ["I", "D"]
    insert, delete = changes
    assert {c["name"]: c["value"] for c in insert["columns"]} == {
        "id": 1,
        "email": "ann@example.com",
    }
    assert [c["name"] for c in delete["identity"]] == ["id"]  # REPLICA IDENTITY DEFAULT
    assert "columns" not in delete
