"""Change data capture from PostgreSQL, as a user runs it: real tap-postgres, real Meltano.

A PostgreSQL server with ``wal_level = logical`` and the wal2json plugin is started by the
suite on 127.0.0.1 (``logical_postgres_server`` in tests/postgres_server.py; ``make test``
installs wal2json). MeltanoLabs tap-postgres, pinned in tests/cdc_project/meltano.yml, reads
it through a replication slot the test creates as a user would. ``meltano install`` runs once
for the module; each test gets its own database, slot and emulator.

First the world the loader must handle: what tap-postgres emits in LOG_BASED mode, in
particular that a DELETE under the default replica identity arrives as the row's key only,
plus ``_sdc_deleted_at``, which no identifier-based sync can act on.

Then the README's two recipes, run as written (their YAML is read from README.md and added
to the project under their own plugin names, inheriting the tap's connection settings):
log-based replication and incremental replication with soft deletes, each with the loader
in ``sync_mode: upsert``. The expected membership is computed by the test from the table's
rows (normalized and hashed with hashlib), and the emulator's request log proves that each
run sent exactly the identifiers whose presence in a list changed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from postgres_server import PostgresServer

from target_pinterest_audiences.emulator import Emulator

from support import TOKEN, assert_contract_kept, lists_by_name, members_by_name, sha

# Real Meltano and tap-postgres against the logical-replication server.
pytestmark = pytest.mark.meltano

REPO = Path(__file__).resolve().parents[1]
MELTANO = REPO / ".venv-meltano" / "bin" / "meltano"
PROJECT_TEMPLATE = Path(__file__).resolve().parent / "cdc_project" / "meltano.yml"
README = REPO / "README.md"
TAP = "tap-postgres"
LOADER = "target-pinterest-audiences"
LOG_BASED_RECIPE = "Recipe: log-based replication (CDC) with tap-postgres"
INCREMENTAL_RECIPE = "Recipe: incremental replication with soft deletes"
# Each recipe's plugins join the project under these names (inheriting the tap's connection
# settings and the loader's definition), so the recipes keep their own state and config.
RECIPE_PLUGINS = {LOG_BASED_RECIPE: "cdc", INCREMENTAL_RECIPE: "incremental"}
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


def readme_section(title: str) -> str:
    """The text of one README section, from its heading to the next one."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def readme_blocks(title: str, language: str) -> list[str]:
    """The section's fenced code blocks in ``language``, dedented (list items indent them)."""
    fence = re.compile(rf"^( *)```{language}\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(m.group(2)) for m in fence.finditer(readme_section(title))]


def recipe(title: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tap-postgres entry and the loader entry of the recipe's (first) YAML block."""
    document = yaml.safe_load(readme_blocks(title, "yaml")[0])
    (extractor,) = document["plugins"]["extractors"]
    (loader,) = document["plugins"]["loaders"]
    assert extractor["name"] == TAP
    assert loader["name"] == LOADER
    return extractor, loader


def recipe_plugins(title: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The recipe's two entries as they join the test project: renamed, inheriting."""
    extractor, loader = recipe(title)
    suffix = RECIPE_PLUGINS[title]
    return (
        {**extractor, "name": f"{TAP}-{suffix}", "inherit_from": TAP},
        {**loader, "name": f"{LOADER}-{suffix}", "inherit_from": LOADER},
    )


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
    document = yaml.safe_load(PROJECT_TEMPLATE.read_text(encoding="utf-8"))
    (loader,) = document["plugins"]["loaders"]
    loader.update(repository_loader())
    for title in RECIPE_PLUGINS:
        extractor, recipe_loader = recipe_plugins(title)
        document["plugins"]["extractors"].append(extractor)
        document["plugins"]["loaders"].append(recipe_loader)
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


def test_a_stream_map_must_read_columns_with_record_get_on_log_based_streams(
    project: CdcProject, source: Source
) -> None:
    """The log-based recipe's advice, checked: a map naming a column fails on a key-only
    delete; the recipe's ``record.get(...)`` gives null there and the run succeeds."""
    source.execute("CREATE TABLE users (id int PRIMARY KEY, email text, segment text)")
    source.create_slot()
    source.execute("INSERT INTO users VALUES (1, 'ann@example.com', 'vip')")
    source.execute("DELETE FROM users WHERE id = 1")
    recipe_maps = recipe(LOG_BASED_RECIPE)[0]["config"]["stream_maps"]["public-users"]
    assert recipe_maps["audience_key"] == "record.get('segment')"

    def invoke(audience_key: str) -> subprocess.CompletedProcess[str]:
        maps = {"public-users": {"audience_key": audience_key, "segment": "__NULL__"}}
        env = {**source.meltano_env(), "TAP_POSTGRES_WAL_STREAM_MAPS": json.dumps(maps)}
        return project.meltano("invoke", "tap-postgres-wal", env=env)

    naming_the_column = invoke("segment")
    assert naming_the_column.returncode != 0
    assert "MapExpressionError" in naming_the_column.stdout + naming_the_column.stderr

    with_record_get = invoke(recipe_maps["audience_key"])
    assert with_record_get.returncode == 0, with_record_get.stderr
    records = records_of(singer_messages(with_record_get.stdout), "public-users")
    assert [(r["id"], r.get("email"), r["audience_key"]) for r in records] == [
        (1, "ann@example.com", "vip"),
        (1, None, None),
    ]
    assert records[-1]["_sdc_deleted_at"] is not None


# --- the README's recipes, end to end ---------------------------------------------------

Membership = dict[str, frozenset[str]]


def normalized_hash(email: str) -> str:
    """How the target must hash an email (trim, lowercase, SHA-256), computed here."""
    return sha(email.strip().lower())


def model(rows: list[tuple[str | None, str | None]]) -> Membership:
    """Each audience's members from (email, audience) pairs of live rows: the union."""
    members: dict[str, set[str]] = {}
    for email, audience in rows:
        if email is not None and audience is not None:
            members.setdefault(audience, set()).add(normalized_hash(email))
    return {audience: frozenset(hashes) for audience, hashes in members.items()}


def sent_since(emulator: Emulator, seq: int) -> Counter[tuple[str, str]]:
    """Identifiers each acknowledged write after request ``seq`` carried, by (list, ADD or
    REMOVE); creates count as ADD. From the emulator's own request log."""
    names = {item["id"]: name for name, item in lists_by_name(emulator).items()}
    sent: Counter[tuple[str, str]] = Counter()
    for entry in emulator.requests():
        if entry["seq"] <= seq or entry["operation_type"] is None:
            continue
        if entry["status"] is None or entry["status"] >= 300:
            continue
        if entry["operation_type"] == "CREATE":
            sent[("(created)", "ADD")] += entry["record_count"]
            continue
        list_id = entry["path"].rstrip("/").rsplit("/", 1)[1]
        sent[(names[list_id], entry["operation_type"])] += entry["record_count"]
    return sent


def writes_since(emulator: Emulator, seq: int) -> int:
    """Acknowledged write requests (creates and updates) after request ``seq``."""
    return sum(
        1
        for entry in emulator.requests()
        if entry["seq"] > seq
        and entry["operation_type"] is not None
        and entry["status"] is not None
        and entry["status"] < 300
    )


def last_seq(emulator: Emulator) -> int:
    entries = emulator.requests()
    return entries[-1]["seq"] if entries else 0


def changes_between(before: Membership, after: Membership) -> Counter[tuple[str, str]]:
    """What a run may send: per list, only the identifiers whose presence changed."""
    expected: Counter[tuple[str, str]] = Counter()
    for audience in before.keys() | after.keys():
        old, new = before.get(audience, frozenset()), after.get(audience, frozenset())
        if new - old:
            expected[(audience, "ADD")] = len(new - old)
        if old - new:
            expected[(audience, "REMOVE")] = len(old - new)
    return expected


def assert_membership(emulator: Emulator, expected: Membership) -> None:
    """Every list holds exactly the model's members (a list emptied by deletes: nobody)."""
    actual = members_by_name(emulator)
    assert set(expected) <= set(actual), "a list with members is missing"
    assert {name: actual[name] for name in actual} == {
        name: expected.get(name, frozenset()) for name in actual
    }
    assert_contract_kept(emulator)


@dataclass
class Pipeline:
    """``meltano run`` of one recipe's tap and loader against one database and emulator."""

    project: CdcProject
    source: Source
    emulator: Emulator
    suffix: str
    report_path: Path

    @property
    def extractor(self) -> str:
        return f"{TAP}-{self.suffix}"

    @property
    def loader(self) -> str:
        return f"{LOADER}-{self.suffix}"

    @property
    def state_id(self) -> str:
        """Meltano's state id for ``meltano run EXTRACTOR LOADER`` in the test environment."""
        return f"test:{self.extractor}-to-{self.loader}"

    def env(self) -> dict[str, str]:
        return {
            **self.source.meltano_env(),
            "PINTEREST_API_URL": self.emulator.url,
            "TARGET_PINTEREST_AUDIENCES_ACCESS_TOKEN": TOKEN,
            "TARGET_PINTEREST_AUDIENCES_REPORT_PATH": str(self.report_path),
        }

    def run(self) -> subprocess.CompletedProcess[str]:
        return self.project.meltano("run", self.extractor, self.loader, env=self.env(), timeout=600)

    def ok(self) -> str:
        completed = self.run()
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, f"meltano run failed:\n{output}"
        return output

    def state(self) -> dict[str, Any]:
        """The state Meltano stored for this pipeline (the tap's log position)."""
        state: dict[str, Any] = json.loads(self.project.ok("state", "get", self.state_id))
        return state

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.report_path.read_text(encoding="utf-8"))
        return report


@pytest.fixture
def pipeline_for(project: CdcProject, source: Source, emulator: Emulator, tmp_path: Path) -> Any:
    """A recipe's pipeline, starting afresh: each test has its own database, slot and
    emulator, so a previous test's Meltano state (a log position in another database) and
    ledger (lists of another emulator) are removed first."""

    def make(title: str) -> Pipeline:
        pipeline = Pipeline(
            project, source, emulator, RECIPE_PLUGINS[title], tmp_path / "report.json"
        )
        project.ok("state", "clear", "--force", pipeline.state_id)
        ledger = recipe(title)[1]["config"]["ledger_path"]
        ledger_path = Path(ledger.replace("$MELTANO_PROJECT_ROOT", str(project.root)))
        for leftover in ledger_path.parent.glob(ledger_path.name + "*"):
            leftover.unlink()
        return pipeline

    return make


LOG_BASED_TABLES = (
    "CREATE TABLE users (id int PRIMARY KEY, email text, segment text, name text)",
    "CREATE TABLE email_preferences (id int PRIMARY KEY, email text, vip boolean, lapsed boolean)",
    # Its deletes carry the whole old row, flags and email included: still a delete.
    "ALTER TABLE email_preferences REPLICA IDENTITY FULL",
)


def log_based_model(source: Source) -> Membership:
    """The membership the tables' rows say, read back from PostgreSQL: ``users.segment``
    names a row's audience; each true flag of ``email_preferences`` is one."""
    rows = source.query("SELECT email, segment FROM users")
    for email, vip, lapsed in source.query("SELECT email, vip, lapsed FROM email_preferences"):
        rows += [(email, "vip")] if vip else []
        rows += [(email, "lapsed")] if lapsed else []
    return model(rows)


def log_based_live_rows(source: Source) -> Counter[str]:
    """How many rows put someone in each audience (a row with two true flags: in both)."""
    live: Counter[str] = Counter()
    for (segment,) in source.query("SELECT segment FROM users WHERE email IS NOT NULL"):
        live[segment] += 1
    for vip, lapsed in source.query("SELECT vip, lapsed FROM email_preferences"):
        live["vip"] += bool(vip)
        live["lapsed"] += bool(lapsed)
    return live


def test_log_based_recipe_deletes_updates_and_moves_reach_pinterest(
    pipeline_for: Any, source: Source, emulator: Emulator
) -> None:
    """The issue's CDC pipeline: wal2json, tap-postgres LOG_BASED, the loader upserting."""
    source.execute(
        *LOG_BASED_TABLES,
        "INSERT INTO users VALUES (1, 'ann@example.com', 'vip', 'Ann'), "
        "(2, 'bob@example.com', 'vip', 'Bob'), (3, 'dup@example.com', 'vip', 'Dup'), "
        "(4, ' DUP@example.com', 'vip', 'Dup too'), (5, 'eve@example.com', 'newsletter', 'Eve'), "
        "(6, 'gus@example.com', 'lapsed', 'Gus')",
        "INSERT INTO email_preferences VALUES (10, 'gus@example.com', false, true), "
        "(11, 'hal@example.com', true, null), (13, 'jon@example.com', true, false)",
    )
    (create_slot,) = readme_blocks(LOG_BASED_RECIPE, "sql")
    source.execute(create_slot)
    pipeline = pipeline_for(LOG_BASED_RECIPE)

    # Run 1: the first run reads every current row (auto_bootstrap_log_based).
    before = log_based_model(source)
    assert before == model(
        [
            ("ann@example.com", "vip"),
            ("bob@example.com", "vip"),
            ("dup@example.com", "vip"),
            ("hal@example.com", "vip"),
            ("jon@example.com", "vip"),
            ("eve@example.com", "newsletter"),
            ("gus@example.com", "lapsed"),
        ]
    )
    pipeline.ok()
    assert_membership(emulator, before)
    assert sum(sent_since(emulator, 0).values()) == sum(map(len, before.values()))

    # The application changes rows; each statement is its own transaction.
    for statement in [
        "UPDATE users SET email = 'Ann.New@Example.com' WHERE id = 1",  # email changes
        "UPDATE users SET segment = 'newsletter' WHERE id = 2",  # moves to another audience
        "DELETE FROM users WHERE id = 3",  # key-only delete; row 4 still has the email
        "UPDATE users SET name = 'Dee' WHERE id = 4",  # no identifier or audience change
        "DELETE FROM users WHERE id = 5",  # eve leaves newsletter
        "DELETE FROM users WHERE id = 6",  # gus stays in lapsed through email_preferences
        "INSERT INTO users VALUES (7, 'fay@example.com', 'newsletter', 'Fay')",
        "INSERT INTO users VALUES (8, 'kit@example.com', 'vip', 'Kit')",
        "DELETE FROM users WHERE id = 8",  # inserted and deleted between two runs
        "UPDATE email_preferences SET vip = false WHERE id = 11",  # hal leaves vip
        "INSERT INTO email_preferences VALUES (12, 'ivy@example.com', true, false)",
        "DELETE FROM email_preferences WHERE id = 13",  # arrives with vip = true: jon leaves
    ]:
        source.execute(statement)
    after = log_based_model(source)
    assert changes_between(before, after) == Counter(
        {
            ("vip", "ADD"): 2,  # ann.new, ivy
            ("vip", "REMOVE"): 4,  # ann, bob, hal, jon
            ("newsletter", "ADD"): 2,  # bob, fay
            ("newsletter", "REMOVE"): 1,  # eve
        }
    )

    # Run 2: exactly the changes, nothing for unchanged rows or for the row 8 round trip.
    seq = last_seq(emulator)
    pipeline.ok()
    assert_membership(emulator, after)
    assert sent_since(emulator, seq) == changes_between(before, after)
    # The run report: every change read once, and per audience what upsert mode knows.
    report = pipeline.report()
    streams = {s["stream"]: s for s in report["streams"]}
    assert (streams["public-users"]["records"], streams["public-users"]["deletes"]) == (9, 4)
    preferences = streams["public-email_preferences"]
    assert (preferences["records"], preferences["deletes"]) == (3, 1)
    audiences = {a["audience"]: a for a in report["audiences"]}
    # Rows deleted: those live in the audience after run 1 (vip: rows 3 and 13; newsletter:
    # 5; lapsed: 6). Row 8 came and went between the runs: never a live row of the target.
    for audience, rows_deleted in {"vip": 2, "newsletter": 1, "lapsed": 1}.items():
        changed = changes_between(before, after)
        assert audiences[audience]["added"] == changed[(audience, "ADD")]
        assert audiences[audience]["removed"] == changed[(audience, "REMOVE")]
        assert audiences[audience]["upsert"] == {
            "live_rows": log_based_live_rows(source)[audience],
            "rows_deleted": rows_deleted,
            "members": len(after[audience]),
        }

    # Run 3, nothing changed: nothing sent.
    seq = last_seq(emulator)
    pipeline.ok()
    assert_membership(emulator, after)
    assert sent_since(emulator, seq) == Counter()


def test_log_based_recipe_converges_after_a_failed_run_without_resending(
    pipeline_for: Any, source: Source, emulator: Emulator
) -> None:
    """A run that fails half-way (Pinterest refuses the second write) leaves the old state
    in Meltano; the next run reads the same changes again and sends only what is missing."""
    source.execute(
        *LOG_BASED_TABLES,
        "INSERT INTO users VALUES (1, 'ann@example.com', 'vip', 'Ann'), "
        "(2, 'bob@example.com', 'newsletter', 'Bob'), (3, 'cy@example.com', 'lapsed', 'Cy')",
    )
    (create_slot,) = readme_blocks(LOG_BASED_RECIPE, "sql")
    source.execute(create_slot)
    pipeline = pipeline_for(LOG_BASED_RECIPE)
    pipeline.ok()
    before = log_based_model(source)
    assert_membership(emulator, before)

    source.execute("DELETE FROM users WHERE id = 1")
    source.execute("UPDATE users SET email = 'bob.new@example.com' WHERE id = 2")
    source.execute("INSERT INTO users VALUES (4, 'dan@example.com', 'lapsed', 'Dan')")
    after = log_based_model(source)
    seq = last_seq(emulator)
    emulator.configure_faults(
        {
            "rules": [
                {
                    "method": "PATCH",
                    "path": r"/customer_lists/\w+$",
                    "after": 1,
                    "action": "error",
                    "status": 403,
                    "message": "Refused by the test",
                }
            ]
        }
    )
    bookmark = pipeline.state()
    failed = pipeline.run()
    assert failed.returncode != 0
    assert writes_since(emulator, seq) == 1  # one write went through before the refusals
    assert pipeline.state() == bookmark  # nothing confirmed: Meltano keeps run 1's position
    emulator.configure_faults({"rules": []})
    pipeline.ok()

    assert_membership(emulator, after)
    # Over both runs, each change was acknowledged once: none sent again after the crash.
    assert sent_since(emulator, seq) == changes_between(before, after)


CUSTOMERS_TABLE = (
    "CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL, segment text NOT NULL, "
    "updated_at timestamptz NOT NULL DEFAULT clock_timestamp(), deleted_at timestamptz)"
)


def incremental_model(source: Source) -> Membership:
    """Live (not soft-deleted) customers, each in the audience its segment names."""
    return model(source.query("SELECT email, segment FROM customers WHERE deleted_at IS NULL"))


def test_incremental_recipe_soft_deletes_and_updates_reach_pinterest(
    pipeline_for: Any, source: Source, emulator: Emulator
) -> None:
    """INCREMENTAL on updated_at, deleted_at mapped to _sdc_deleted_at, as the README says."""
    source.execute(CUSTOMERS_TABLE, *readme_blocks(INCREMENTAL_RECIPE, "sql"))
    source.execute(
        "INSERT INTO customers (id, email, segment) VALUES (1, 'ann@example.com', 'vip'), "
        "(2, 'bob@example.com', 'vip'), (3, 'dup@example.com', 'vip'), "
        "(4, 'Dup@Example.com', 'vip'), (5, 'eve@example.com', 'newsletter'), "
        "(6, 'gus@example.com', 'newsletter')",
        "INSERT INTO customers (id, email, segment, deleted_at) "
        "VALUES (7, 'old@example.com', 'vip', now())",  # deleted before the first run
    )
    pipeline = pipeline_for(INCREMENTAL_RECIPE)

    before = incremental_model(source)
    pipeline.ok()
    assert_membership(emulator, before)
    assert normalized_hash("old@example.com") not in members_by_name(emulator)["vip"]

    for statement in [
        "UPDATE customers SET email = 'ann.new@example.com' WHERE id = 1",
        "UPDATE customers SET segment = 'newsletter' WHERE id = 2",
        "UPDATE customers SET deleted_at = now() WHERE id = 3",  # row 4 still has the email
        "UPDATE customers SET deleted_at = now() WHERE id = 5",  # eve leaves newsletter
        "UPDATE customers SET deleted_at = now() WHERE id = 7",  # deleted again: nothing
        "INSERT INTO customers (id, email, segment) VALUES (8, 'fay@example.com', 'vip')",
    ]:
        source.execute(statement)
    after = incremental_model(source)
    assert changes_between(before, after) == Counter(
        {
            ("vip", "ADD"): 2,  # ann.new, fay
            ("vip", "REMOVE"): 2,  # ann, bob
            ("newsletter", "ADD"): 1,  # bob
            ("newsletter", "REMOVE"): 1,  # eve
        }
    )
    seq = last_seq(emulator)
    pipeline.ok()
    assert_membership(emulator, after)
    assert sent_since(emulator, seq) == changes_between(before, after)

    # The tap reads the rows at its bookmark again (>=): the ledger sends nothing for them.
    seq = last_seq(emulator)
    pipeline.ok()
    (stream,) = pipeline.report()["streams"]
    assert stream["records"] == 1  # row 8, the newest updated_at: read again
    assert sent_since(emulator, seq) == Counter()

    # An undelete brings the row back.
    source.execute("UPDATE customers SET deleted_at = NULL WHERE id = 5")
    undeleted = incremental_model(source)
    assert changes_between(after, undeleted) == Counter({("newsletter", "ADD"): 1})
    seq = last_seq(emulator)
    pipeline.ok()
    assert_membership(emulator, undeleted)
    assert sent_since(emulator, seq) == changes_between(after, undeleted)
