"""Change data capture from PostgreSQL, as a user runs it: real tap-postgres, real Meltano.

A PostgreSQL server with ``wal_level = logical`` and the wal2json plugin is started by the
suite on 127.0.0.1 (``logical_postgres_server`` in tests/postgres_server.py; ``make test``
installs wal2json). MeltanoLabs tap-postgres, pinned in tests/cdc_project/meltano.yml, reads
it through a replication slot the test creates as a user would. ``meltano install`` runs once
for the module; each test gets its own database, slot and emulator.

First the world the loader must handle: what tap-postgres emits in LOG_BASED mode, in
particular that a DELETE under the default replica identity arrives as the row's key only,
plus ``_sdc_deleted_at``, which no identifier-based sync can act on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from postgres_server import PostgresServer

# Real Meltano and tap-postgres against the logical-replication server.
pytestmark = pytest.mark.meltano

REPO = Path(__file__).resolve().parents[1]
MELTANO = REPO / ".venv-meltano" / "bin" / "meltano"
PROJECT_TEMPLATE = Path(__file__).resolve().parent / "cdc_project" / "meltano.yml"
LOADER = "target-pinterest-audiences"
# tap-postgres refuses to start without a password; the test server trusts 127.0.0.1.
PASSWORD = "not-checked-by-the-test-server"
# Variables that would steer Meltano or a plugin from the caller's environment.
STEERING_PREFIXES = (
    "MELTANO_",
    "TAP_POSTGRES",
    "TARGET_PINTEREST_AUDIENCES",
    "PINTEREST_",
    "CDC_",
    "PG",
)


def clean_environment() -> dict[str, str]:
    """The caller's environment without anything that would steer Meltano or a plugin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STEERING_PREFIXES)}
    env.pop("VIRTUAL_ENV", None)  # the dev venv must not leak into the plugins' venvs
    env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    return env


def repository_loader() -> dict[str, Any]:
    """The loader's definition in the repository's meltano.yml, installed from this checkout."""
    project = yaml.safe_load((REPO / "meltano.yml").read_text(encoding="utf-8"))
    (loader,) = [p for p in project["plugins"]["loaders"] if p["name"] == LOADER]
    definition = {k: v for k, v in loader.items() if k != "config"}
    definition["pip_url"] = f"-e {REPO}"
    return definition


@dataclass
class Source:
    """One test's database on the logical-replication server, and its replication slot."""

    server: PostgresServer
    database: str
    slot: str

    @property
    def url(self) -> str:
        return self.server.url(self.database)

    def execute(self, *statements: str) -> None:
        """Run the statements in one transaction, as an application would."""
        with psycopg.connect(self.url) as conn:
            for statement in statements:
                conn.execute(statement)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql).fetchall()

    def create_slot(self) -> None:
        """What tap-postgres' README asks of the user: a wal2json slot for the tap."""
        self.execute(f"SELECT pg_create_logical_replication_slot('{self.slot}', 'wal2json')")

    def meltano_env(self) -> dict[str, str]:
        """The variables tests/cdc_project/meltano.yml reads to reach this database."""
        return {
            "CDC_POSTGRES_PORT": str(self.server.port),
            "CDC_POSTGRES_USER": self.server.user,
            "CDC_POSTGRES_PASSWORD": PASSWORD,
            "CDC_POSTGRES_DATABASE": self.database,
            "CDC_REPLICATION_SLOT": self.slot,
        }


@pytest.fixture
def source(logical_postgres_server: PostgresServer) -> Iterator[Source]:
    """A fresh database; its replication slots are dropped before the database."""
    name = f"cdc_{uuid.uuid4().hex[:12]}"
    logical_postgres_server.create_database(name)
    try:
        yield Source(logical_postgres_server, name, slot=f"{name}_slot")
    finally:
        with psycopg.connect(logical_postgres_server.admin_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE database = %s",
                (name,),
            )
        logical_postgres_server.drop_database(name)


@dataclass
class CdcProject:
    """The Meltano project in a temporary directory, plugins installed."""

    root: Path
    env: dict[str, str]

    def meltano(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MELTANO), *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
        """Run meltano, require success, return its stdout."""
        completed = self.meltano(*args, env=env, timeout=timeout)
        assert completed.returncode == 0, (
            f"meltano {' '.join(args)} failed:\n{completed.stdout}\n{completed.stderr}"
        )
        return completed.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> CdcProject:
    if not MELTANO.exists():
        pytest.fail(
            f"{MELTANO} is missing: run `make meltano-venv` (make test does) to install "
            "Meltano in its own venv; these tests must not be skipped"
        )
    root = tmp_path_factory.mktemp("cdc-meltano-project")
    shutil.copy(PROJECT_TEMPLATE, root / "meltano.yml")
    document = yaml.safe_load(PROJECT_TEMPLATE.read_text(encoding="utf-8"))
    (loader,) = document["plugins"]["loaders"]
    loader.update(repository_loader())
    (root / "meltano.yml").write_text(yaml.safe_dump(document, sort_keys=False), "utf-8")
    env = clean_environment()
    # Referenced by the project (strict_env_var_mode); each test sets its own values.
    env.update(
        {
            "PINTEREST_API_URL": "http://127.0.0.1:9/v5",
            "CDC_POSTGRES_PORT": "9",
            "CDC_POSTGRES_USER": "nobody",
            "CDC_POSTGRES_PASSWORD": PASSWORD,
            "CDC_POSTGRES_DATABASE": "none",
            "CDC_REPLICATION_SLOT": "none",
        }
    )
    cdc_project = CdcProject(root, env)
    cdc_project.ok("install", timeout=900)
    return cdc_project


def singer_messages(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def records_of(messages: list[dict[str, Any]], stream: str) -> list[dict[str, Any]]:
    return [m["record"] for m in messages if m["type"] == "RECORD" and m["stream"] == stream]


def test_log_based_tap_emits_a_delete_as_the_key_plus_sdc_deleted_at(
    project: CdcProject, source: Source
) -> None:
    """What tap-postgres LOG_BASED sends a loader, per the issue: inserts and updates as the
    whole new row, a DELETE as the key only (REPLICA IDENTITY DEFAULT) or the whole old row
    (REPLICA IDENTITY FULL), each delete with ``_sdc_deleted_at`` set."""
    source.execute(
        "CREATE TABLE users (id int PRIMARY KEY, email text, segment text)",
        "CREATE TABLE users_full (id int PRIMARY KEY, email text, segment text)",
        "ALTER TABLE users_full REPLICA IDENTITY FULL",
    )
    source.create_slot()
    for table in ("users", "users_full"):
        source.execute(
            f"INSERT INTO {table} VALUES (1, 'ann@example.com', 'vip'), "
            "(2, 'bob@example.com', 'vip')",
        )
        source.execute(f"UPDATE {table} SET email = 'ann.new@example.com' WHERE id = 1")
        source.execute(f"DELETE FROM {table} WHERE id = 2")

    stdout = project.ok("invoke", "tap-postgres-wal", env=source.meltano_env())
    messages = singer_messages(stdout)

    schemas = {m["stream"]: m for m in messages if m["type"] == "SCHEMA"}
    assert set(schemas) == {"public-users", "public-users_full"}
    for schema in schemas.values():
        assert schema["key_properties"] == ["id"]  # the primary key: upsert mode's row key
        assert {"_sdc_deleted_at", "_sdc_lsn"} <= set(schema["schema"]["properties"])
    for stream, deleted in [
        ("public-users", {"id": 2}),  # the replica identity: the key, nothing else
        ("public-users_full", {"id": 2, "email": "bob@example.com", "segment": "vip"}),
    ]:
        records = records_of(messages, stream)
        assert [
            {k: v for k, v in r.items() if k not in ("_sdc_deleted_at", "_sdc_lsn")}
            for r in records
        ] == [
            {"id": 1, "email": "ann@example.com", "segment": "vip"},
            {"id": 2, "email": "bob@example.com", "segment": "vip"},
            {"id": 1, "email": "ann.new@example.com", "segment": "vip"},  # the whole new row
            deleted,
        ]
        assert [r["_sdc_deleted_at"] is not None for r in records] == [False] * 3 + [True]
        assert isinstance(records[-1]["_sdc_lsn"], int)
    state = [m for m in messages if m["type"] == "STATE"][-1]["value"]
    assert state["bookmarks"]["public-users"]["replication_key"] == "_sdc_lsn"
