"""The membership ledger: what the target has sent to each customer list, as hashes only.

Pinterest offers no way to read a list's members back, so mirror mode keeps its own record
of them to compute removals. Rows are written around every request:

- before a request is sent, its hashes are marked *uncertain* (the request may or may not
  be applied if the process dies now);
- after Pinterest acknowledged an ADD, they become *confirmed*; after a REMOVE, they are
  deleted.

So after any crash the ledger is still true in this sense: a confirmed row is in the list, a
missing row is not, an uncertain row may be either. The next mirror run adds every
snapshot member that is not confirmed and removes every row that is not in the snapshot,
which converges whatever happened (ADD and REMOVE are idempotent).

Hashes are stored as 32-byte binary digests, never as text of the identifier. Members
are keyed by audience (the list name) with the list id alongside: when the list id
changes (someone deleted the list in Ads Manager), its rows no longer describe anything
and are dropped.

Two backends share the SQL: SQLite (a local file, the default) and PostgreSQL (for
machines that do not outlive the run: containers, CI runners).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

_UPSERT_UNCERTAIN = (
    "INSERT INTO ledger_members (list_key, hash, confirmed) VALUES (?, ?, 0) "
    "ON CONFLICT (list_key, hash) DO UPDATE SET confirmed = 0"
)
_UPSERT_CONFIRMED = (
    "INSERT INTO ledger_members (list_key, hash, confirmed) VALUES (?, ?, 1) "
    "ON CONFLICT (list_key, hash) DO UPDATE SET confirmed = 1"
)
_DELETE = "DELETE FROM ledger_members WHERE list_key = ? AND hash = ?"

# Rows per executemany/fetch: large enough to amortize round trips, small enough to keep
# memory flat for 10M-member audiences.
CHUNK_ROWS = 10_000


class _Connection(Protocol):
    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def close(self) -> None: ...


class Ledger:
    """The ledger of one ad account. Thread-safe: request threads record acknowledgements."""

    _SCHEMA: tuple[str, ...] = ()
    _placeholder = "?"

    def __init__(self, connection: _Connection, ad_account_id: str, *, description: str) -> None:
        self._connection = connection
        self._account = ad_account_id
        self._lock = threading.RLock()
        self.description = description
        with self._lock:
            cursor = connection.cursor()
            for statement in self._SCHEMA:
                cursor.execute(statement)
            connection.commit()
        self._keys: dict[str, int] = {}

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self._placeholder)

    def _execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        cursor = self._connection.cursor()
        cursor.execute(self._sql(statement), params)
        return cursor

    # Lists --------------------------------------------------------------------------

    def _existing_key(self, audience: str) -> int | None:
        """The audience's key if the ledger knows it; reads never create rows."""
        with self._lock:
            key = self._keys.get(audience)
            if key is None:
                row = self._execute(
                    "SELECT list_key FROM ledger_lists WHERE ad_account_id = ? AND audience = ?",
                    (self._account, audience),
                ).fetchone()
                if row is not None:
                    key = self._keys[audience] = int(row[0])
            return key

    def audience_key(self, audience: str) -> int:
        """The ledger's numeric key for an audience (created on first use)."""
        with self._lock:
            key = self._existing_key(audience)
            if key is not None:
                return key
            self._execute(
                "INSERT INTO ledger_lists (ad_account_id, audience) VALUES (?, ?) "
                "ON CONFLICT (ad_account_id, audience) DO NOTHING",
                (self._account, audience),
            )
            row = self._execute(
                "SELECT list_key FROM ledger_lists WHERE ad_account_id = ? AND audience = ?",
                (self._account, audience),
            ).fetchone()
            self._connection.commit()
            self._keys[audience] = int(row[0])
            return self._keys[audience]

    def list_id(self, audience: str) -> str | None:
        """The customer list id the ledger's rows for ``audience`` belong to."""
        with self._lock:
            row = self._execute(
                "SELECT list_id FROM ledger_lists WHERE ad_account_id = ? AND audience = ?",
                (self._account, audience),
            ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def set_list_id(self, audience: str, list_id: str | None) -> None:
        """Record which list the rows describe; a different list means the rows are void."""
        key = self.audience_key(audience)
        with self._lock:
            current = self.list_id(audience)
            if current is not None and current != list_id:
                self._execute("DELETE FROM ledger_members WHERE list_key = ?", (key,))
            self._execute("UPDATE ledger_lists SET list_id = ? WHERE list_key = ?", (list_id, key))
            self._connection.commit()

    def forget(self, audience: str) -> None:
        """The audience has no list on Pinterest: drop its rows and its list id."""
        key = self.audience_key(audience)
        with self._lock:
            self._execute("DELETE FROM ledger_members WHERE list_key = ?", (key,))
            self._execute("UPDATE ledger_lists SET list_id = NULL WHERE list_key = ?", (key,))
            self._connection.commit()

    def stream_audiences(self, stream: str) -> set[str]:
        """Audiences a stream has fed in earlier mirror runs (what it covers)."""
        with self._lock:
            rows = self._execute(
                "SELECT audience FROM ledger_streams WHERE ad_account_id = ? AND stream = ?",
                (self._account, stream),
            ).fetchall()
        return {str(row[0]) for row in rows}

    def add_stream_audiences(self, stream: str, audiences: Iterable[str]) -> None:
        """Remember that ``stream`` covers ``audiences`` from now on."""
        with self._lock:
            cursor = self._connection.cursor()
            cursor.executemany(
                self._sql(
                    "INSERT INTO ledger_streams (ad_account_id, stream, audience) VALUES (?, ?, ?) "
                    "ON CONFLICT (ad_account_id, stream, audience) DO NOTHING"
                ),
                [(self._account, stream, audience) for audience in audiences],
            )
            self._connection.commit()

    # Members ------------------------------------------------------------------------

    def counts(self, audience: str) -> tuple[int, int]:
        """(confirmed rows, all rows) for ``audience``."""
        key = self._existing_key(audience)
        if key is None:
            return 0, 0
        with self._lock:
            row = self._execute(
                "SELECT COALESCE(SUM(confirmed), 0), COUNT(*) FROM ledger_members "
                "WHERE list_key = ?",
                (key,),
            ).fetchone()
        return int(row[0]), int(row[1])

    def members(self, audience: str) -> Iterator[tuple[bytes, bool]]:
        """Every row of ``audience`` as (digest, confirmed), in digest order, streamed."""
        key = self._existing_key(audience)
        if key is None:
            return
        last = b""
        while True:
            with self._lock:
                rows = self._execute(
                    "SELECT hash, confirmed FROM ledger_members WHERE list_key = ? AND hash > ? "
                    "ORDER BY hash LIMIT ?",
                    (key, last, CHUNK_ROWS),
                ).fetchall()
            if not rows:
                return
            for digest, confirmed in rows:
                yield bytes(digest), bool(confirmed)
            last = bytes(rows[-1][0])

    def mark_uncertain(self, audience: str, hashes: Sequence[str]) -> None:
        """Before a request: these rows' membership is unknown until it is acknowledged."""
        self._write_rows(audience, _UPSERT_UNCERTAIN, hashes)

    def confirm_added(self, audience: str, list_id: str, hashes: Sequence[str]) -> None:
        """After an acknowledged ADD (or list creation): these are members of ``list_id``."""
        with self._lock:
            if self.list_id(audience) != list_id:
                # A list created this run: its uncertain rows (marked before the create
                # request) belong to it, so the id is set without voiding them.
                self._execute(
                    "UPDATE ledger_lists SET list_id = ? WHERE list_key = ?",
                    (list_id, self.audience_key(audience)),
                )
            self._write_rows(audience, _UPSERT_CONFIRMED, hashes)

    def confirm_removed(self, audience: str, hashes: Sequence[str]) -> None:
        """After an acknowledged REMOVE: these are no longer members."""
        self._write_rows(audience, _DELETE, hashes)

    def _write_rows(self, audience: str, statement: str, hashes: Sequence[str]) -> None:
        key = self.audience_key(audience)
        with self._lock:
            cursor = self._connection.cursor()
            cursor.executemany(
                self._sql(statement), [(key, bytes.fromhex(value)) for value in hashes]
            )
            self._connection.commit()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._connection.close()


class SQLiteLedger(Ledger):
    """The ledger in a local SQLite file (the default)."""

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS ledger_lists ("
        " list_key INTEGER PRIMARY KEY AUTOINCREMENT,"
        " ad_account_id TEXT NOT NULL, audience TEXT NOT NULL,"
        " list_id TEXT, UNIQUE (ad_account_id, audience))",
        "CREATE TABLE IF NOT EXISTS ledger_streams ("
        " ad_account_id TEXT NOT NULL, stream TEXT NOT NULL, audience TEXT NOT NULL,"
        " PRIMARY KEY (ad_account_id, stream, audience))",
        "CREATE TABLE IF NOT EXISTS ledger_members ("
        " list_key INTEGER NOT NULL, hash BLOB NOT NULL, confirmed INTEGER NOT NULL,"
        " PRIMARY KEY (list_key, hash)) WITHOUT ROWID",
    )

    def __init__(self, path: Path, ad_account_id: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
        # WAL: readers (the diff) and the writer (acknowledgements) do not block each other;
        # synchronous=NORMAL is durable at every checkpoint, which is what a crash test needs.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        super().__init__(connection, ad_account_id, description=f"SQLite ledger {path}")


class PostgresLedger(Ledger):
    """The ledger in PostgreSQL, for runs on machines that do not keep local files."""

    _placeholder = "%s"
    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS ledger_lists ("
        " list_key BIGSERIAL PRIMARY KEY,"
        " ad_account_id TEXT NOT NULL, audience TEXT NOT NULL,"
        " list_id TEXT, UNIQUE (ad_account_id, audience))",
        "CREATE TABLE IF NOT EXISTS ledger_streams ("
        " ad_account_id TEXT NOT NULL, stream TEXT NOT NULL, audience TEXT NOT NULL,"
        " PRIMARY KEY (ad_account_id, stream, audience))",
        "CREATE TABLE IF NOT EXISTS ledger_members ("
        " list_key BIGINT NOT NULL, hash BYTEA NOT NULL, confirmed SMALLINT NOT NULL,"
        " PRIMARY KEY (list_key, hash))",
    )

    def __init__(self, url: str, ad_account_id: str) -> None:
        import psycopg

        connection = psycopg.connect(url)
        host = connection.info.host
        super().__init__(
            connection,
            ad_account_id,
            description=f"PostgreSQL ledger on {host}/{connection.info.dbname}",
        )


def open_ledger(*, path: Path, url: str | None, ad_account_id: str) -> Ledger:
    """The configured ledger: PostgreSQL when ``url`` is set, else the SQLite file."""
    if url:
        return PostgresLedger(url, ad_account_id)
    return SQLiteLedger(path, ad_account_id)
