"""The membership ledger: what the target has sent to each customer list, as hashes only.

Pinterest offers no way to read a list's members back, so the ledger modes (mirror, upsert)
keep their own record of them to compute removals. Rows are written around every request:

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

This module owns the database: the connection, the table definitions of every ledger
table (mirror's members here, upsert's rows and live members in :mod:`row_ledger`), and
the schema version. A ledger written by an older release is migrated when it is opened; one
written by a newer release is refused rather than misread.

Two backends share the SQL: SQLite (a local file, the default) and PostgreSQL (for
machines that do not outlive the run: containers, CI runners).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any, Protocol

from target_pinterest_audiences.errors import TargetError

SCHEMA_VERSION = 2
"""1: mirror mode's members (the first release, which wrote no version). 2: adds upsert
mode's row states and live-member counts."""

_UPSERT_UNCERTAIN = (
    "INSERT INTO ledger_members (list_key, hash, confirmed) VALUES (?, ?, 0) "
    "ON CONFLICT (list_key, hash) DO UPDATE SET confirmed = 0"
)
_UPSERT_CONFIRMED = (
    "INSERT INTO ledger_members (list_key, hash, confirmed) VALUES (?, ?, 1) "
    "ON CONFLICT (list_key, hash) DO UPDATE SET confirmed = 1"
)
_DELETE = "DELETE FROM ledger_members WHERE list_key = ? AND hash = ?"

# Rows per executemany, and per hand-over to the uploader (mirror, upsert): large enough to
# amortize round trips, small enough to keep memory flat for 10M-member audiences.
CHUNK_ROWS = 10_000
CACHE_KIB = 16 * 1024
"""SQLite page cache of the ledger's connection. Measured at 1M and 10M
(bench/README.md): 16 MiB against 64 MiB kept mirror's peak RSS at 10M within 15% of 1M
instead of 57% above it, and upsert's 10M initial load and CDC batch were no slower; a
merge walks its keys in order, so the B-tree is walked in order either way."""
PAGE_BYTES = 65_536
"""Page size of a new SQLite ledger, SQLite's largest (its default is 4 KiB). Upsert mode
reads and writes rows at random keys (row ids and digests are hashes) all over tables far
larger than the page cache. Measured (bench/README.md): with 64 KiB pages its initial load
took 20.5 s instead of 23.5 s at 1M rows and 399 s instead of 526 s at 10M, mirror mode was
no slower, and peak RSS was the same (the cache is sized in bytes). SQLite fixes a file's
page size when it creates it, so a ledger created with 4 KiB pages keeps them and works as
before."""
SETTLE_SECONDS = 2.0
"""At most this long between writing an acknowledgement and committing it (see
Ledger.settling). Upsert mode holds its acknowledgements until its next merge pass or
checkpoint before it writes them (RowLedger.write_acknowledged)."""

# Every table, once, for both dialects. {key} is an auto-numbered primary key, {blob} a byte
# string, {no_rowid} SQLite's clustered-table clause (the primary key is the table).
_TABLES = {
    "ledger_meta": "name TEXT PRIMARY KEY, value TEXT NOT NULL",
    "ledger_lists": (
        "list_key {key}, ad_account_id TEXT NOT NULL, audience TEXT NOT NULL, list_id TEXT,"
        " live_rows BIGINT NOT NULL DEFAULT 0, live_members BIGINT NOT NULL DEFAULT 0,"
        " UNIQUE (ad_account_id, audience)"
    ),
    "ledger_streams": (
        "ad_account_id TEXT NOT NULL, stream TEXT NOT NULL, audience TEXT NOT NULL,"
        " PRIMARY KEY (ad_account_id, stream, audience)"
    ),
    # Mirror mode: what Pinterest holds. confirmed: 1 acknowledged, 0 uncertain.
    "ledger_members": (
        "list_key BIGINT NOT NULL, hash {blob} NOT NULL, confirmed SMALLINT NOT NULL,"
        " PRIMARY KEY (list_key, hash)"
    ),
    # Upsert mode: each keyed row's (list, hash) pairs, keyed by a SHA-256 of the ad
    # account, stream and key values (keys are often emails: never stored raw).
    "ledger_rows": "row_id {blob} PRIMARY KEY, pairs {blob} NOT NULL",
    # Upsert mode: per (list, hash), how many live rows hold it, and what is known of
    # Pinterest's copy (sent: 0 absent, 1 a request outstanding, 2 present, 3 contested:
    # flipped again while a request was outstanding, so only a checkpoint settles it).
    "ledger_live_members": (
        "list_key BIGINT NOT NULL, hash {blob} NOT NULL, live_rows BIGINT NOT NULL,"
        " sent SMALLINT NOT NULL DEFAULT 0, PRIMARY KEY (list_key, hash)"
    ),
    # Upsert mode: the pairs each range of a merge pass flipped, until a checkpoint confirmed that
    # Pinterest acknowledged every request sent before it.
    "ledger_pending_batches": (
        "batch_id {key}, ad_account_id TEXT NOT NULL, pairs {blob} NOT NULL"
    ),
}
_CLUSTERED = frozenset({"ledger_members", "ledger_rows", "ledger_live_members"})

_INDEXES = {
    # Contested pairs are rare; a checkpoint finds them without a scan.
    "ledger_live_contested": "ledger_live_members (list_key, hash) WHERE sent = 3",
}

# Columns added to existing tables by each migration (the tables it adds are created from
# _TABLES, which always describes the newest version).
_ADDED_COLUMNS: dict[int, tuple[tuple[str, str, str], ...]] = {
    2: (
        ("ledger_lists", "live_rows", "BIGINT NOT NULL DEFAULT 0"),
        ("ledger_lists", "live_members", "BIGINT NOT NULL DEFAULT 0"),
    ),
}


_FIRST = itemgetter(0)


@dataclass(frozen=True, slots=True)
class MemberRange:
    """One prefix range of an audience's mirror rows (see :meth:`Ledger.members_between`)."""

    rows: set[bytes]
    """Every row's digest: confirmed members and uncertain ones."""
    uncertain: set[bytes]
    """Rows whose request may not have arrived (marked before it, not yet acknowledged)."""


class _Connection(Protocol):
    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


class LedgerVersionError(TargetError):
    """The ledger was written by a newer release: reading it could corrupt it."""


class LedgerError(TargetError):
    """The ledger cannot be used now: its disk is full, an I/O error, no connection."""


_SQLITE_FAILURES = (
    "SQLITE_FULL",
    "SQLITE_IOERR",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_PERM",
)
"""SQLite result codes (and their extended forms) that say the file or its disk failed,
not the statement: those become a :class:`LedgerError`, the rest stay bugs."""


def _sqlite_failure(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return isinstance(exc, sqlite3.DatabaseError) and name.startswith(_SQLITE_FAILURES)


def _sqlite_open_failure(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or _sqlite_failure(exc)  # OSError: making its folder


_SQLITE_ADVICE = {
    "SQLITE_CORRUPT": "It is damaged: restore it from a backup or move it away",
    "SQLITE_NOTADB": "It is not a ledger: check ledger_path, or move the file away",
    "SQLITE_BUSY": "Another process holds it: run one sync per ledger at a time",
    "SQLITE_LOCKED": "Another process holds it: run one sync per ledger at a time",
}
"""Advice for SQLite failures that more disk or permissions would not fix."""


@contextmanager
def _explained(
    description: str, is_failure: Callable[[BaseException], bool], advice: str
) -> Iterator[None]:
    """A failure of the ledger's storage inside becomes a :class:`LedgerError` that says
    which ledger, what failed and what to do, instead of a traceback."""
    try:
        yield
    except LedgerError:
        raise
    except Exception as exc:
        if not is_failure(exc):
            raise
        lines = (getattr(exc, "strerror", None) or str(exc)).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        code = getattr(exc, "sqlite_errorname", None)
        if code:
            reason += f" ({code})"
            advice = next(
                (text for prefix, text in _SQLITE_ADVICE.items() if code.startswith(prefix)),
                advice,
            )
        if "full" in reason.lower() or "no space" in reason.lower():
            advice = "Free space on its disk (or move it to a disk with room)"
        msg = (
            f"The {description} could not be read or written: {reason}. {advice}, then run "
            "again: what the ledger committed stays, and no STATE was emitted past the "
            "changes it did not record."
        )
        raise LedgerError(msg) from exc


class Ledger:
    """The ledger of one ad account. Thread-safe: request threads record acknowledgements.

    ``dry_run``: writes are made but never committed, and rolled back on close, so a dry
    run of upsert mode sees its own changes and leaves the ledger as it found it.
    """

    _placeholder = "?"
    _types: dict[str, str] = {}

    _advice = "Check that it can be reached and written"

    @staticmethod
    def _is_failure(exc: BaseException) -> bool:
        """Whether ``exc`` says the ledger's storage failed (see :func:`_explained`)."""
        return False

    def __init__(
        self,
        connection: _Connection,
        ad_account_id: str,
        *,
        description: str,
        dry_run: bool = False,
    ) -> None:
        self._connection = connection
        self._account = ad_account_id
        self._lock = threading.RLock()
        self._dry_run = dry_run
        self._closed = False
        self._committed_at = time.monotonic()
        self._before_close: list[Callable[[], None]] = []
        self.description = description
        self._keys: dict[str, int] = {}
        with self._using():
            self._open_schema()

    @contextmanager
    def _using(self) -> Iterator[None]:
        """The ledger's lock, with storage failures explained (see :func:`_explained`):
        every read and write of the ledger goes through here."""
        with self._lock, self._explained():
            yield

    def _explained(self) -> Any:
        return _explained(self.description, self._is_failure, self._advice)

    @property
    def account(self) -> str:
        """The ad account whose lists this ledger describes."""
        return self._account

    # Schema ------------------------------------------------------------------------

    def _open_schema(self) -> None:
        """Create, migrate or refuse the tables; always leaves them at SCHEMA_VERSION."""
        if not self._table_exists("ledger_meta") and self._table_exists("ledger_lists"):
            version = 1  # the first release wrote no version
        elif self._table_exists("ledger_meta"):
            row = self._execute(
                "SELECT value FROM ledger_meta WHERE name = 'schema_version'"
            ).fetchone()
            version = int(row[0]) if row is not None else 1
        else:
            version = SCHEMA_VERSION  # a new ledger: created at the newest version
        if version > SCHEMA_VERSION:
            msg = (
                f"The {self.description} was written by a newer release of "
                f"target-pinterest-audiences (ledger schema version {version}; this release "
                f"reads up to {SCHEMA_VERSION}). Upgrade the target; do not point an older "
                "release at it."
            )
            raise LedgerVersionError(msg)
        for table, columns in _TABLES.items():
            ddl = columns.format(**self._types)
            clustered = " WITHOUT ROWID" if table in _CLUSTERED and self._placeholder == "?" else ""
            self._execute(f"CREATE TABLE IF NOT EXISTS {table} ({ddl}){clustered}")
        for migration in range(version + 1, SCHEMA_VERSION + 1):
            for table, column, ddl in _ADDED_COLUMNS.get(migration, ()):
                if column not in self._columns(table):
                    self._execute(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
        for name, definition in _INDEXES.items():
            self._execute(f"CREATE INDEX IF NOT EXISTS {name} ON {definition}")
        self._execute(
            "INSERT INTO ledger_meta (name, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
        self._connection.commit()  # even in a dry run: the schema is not the run's data
        self.migrated_from = version if version < SCHEMA_VERSION else None
        """The version this ledger was migrated from when it was opened, if it was."""

    def _table_exists(self, table: str) -> bool:
        raise NotImplementedError

    def _columns(self, table: str) -> set[str]:
        raise NotImplementedError

    # Statements --------------------------------------------------------------------

    def sql(self, statement: str) -> str:
        """``statement`` with this backend's parameter placeholders."""
        return statement.replace("?", self._placeholder)

    def _execute(self, statement: str, params: Sequence[Any] = ()) -> Any:
        cursor = self._connection.cursor()
        cursor.execute(self.sql(statement), params)
        return cursor

    def _commit(self) -> None:
        if not self._dry_run:
            self._connection.commit()
            self._committed_at = time.monotonic()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor whose statements commit together (or not at all), under the lock."""
        with self._using():
            cursor = self._connection.cursor()
            try:
                yield cursor
            except BaseException:
                if not self._dry_run:
                    self._connection.rollback()
                raise
            self._commit()

    @contextmanager
    def settling(self) -> Iterator[Any]:
        """A cursor for acknowledgements: written now, made durable by a later commit.

        Settling rows (uncertain -> confirmed or gone) is the one write that may be lost
        in a crash: the rows then stay uncertain, and the next run sends them again,
        which is harmless. Committing each request's acknowledgement on its own would
        write every page it touches to the journal once per request (digests are spread
        over the whole table); grouped, each page is written once per group. So these
        writes join the open transaction, which is committed by the next
        :meth:`transaction`, by :meth:`commit`, or here once ``SETTLE_SECONDS`` passed.
        """
        with self._using():
            yield self._connection.cursor()
            if time.monotonic() - self._committed_at >= SETTLE_SECONDS:
                self._commit()

    def before_close(self, write: Callable[[], None]) -> None:
        """Call ``write`` when the ledger closes, before its last commit (held writes)."""
        self._before_close.append(write)

    def commit(self) -> None:
        """Make every settled acknowledgement durable (at checkpoints and the end)."""
        with self._using():
            self._commit()

    # Lists --------------------------------------------------------------------------

    def _existing_key(self, audience: str) -> int | None:
        """The audience's key if the ledger knows it; reads never create rows."""
        with self._using():
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
        key = self._keys.get(audience)  # per record in upsert mode: no lock once known
        if key is not None:
            return key
        with self._using():
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
            self._commit()
            self._keys[audience] = int(row[0])
            return self._keys[audience]

    def list_id(self, audience: str) -> str | None:
        """The customer list id the ledger's rows for ``audience`` belong to."""
        with self._using():
            row = self._execute(
                "SELECT list_id FROM ledger_lists WHERE ad_account_id = ? AND audience = ?",
                (self._account, audience),
            ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def set_list_id(self, audience: str, list_id: str | None) -> None:
        """Record which list the rows describe; a different list means the rows are void."""
        key = self.audience_key(audience)
        with self._using():
            current = self.list_id(audience)
            if current is not None and current != list_id:
                self._execute("DELETE FROM ledger_members WHERE list_key = ?", (key,))
            self._execute("UPDATE ledger_lists SET list_id = ? WHERE list_key = ?", (list_id, key))
            self._commit()

    def record_list_id(self, audience: str, list_id: str) -> None:
        """A list was created (or found) for ``audience``: the ledger's rows describe it."""
        key = self.audience_key(audience)
        with self._using():
            self._execute("UPDATE ledger_lists SET list_id = ? WHERE list_key = ?", (list_id, key))
            self._commit()

    def forget(self, audience: str) -> None:
        """The audience has no list on Pinterest: drop its rows and its list id."""
        key = self.audience_key(audience)
        with self._using():
            self._execute("DELETE FROM ledger_members WHERE list_key = ?", (key,))
            self._execute("UPDATE ledger_lists SET list_id = NULL WHERE list_key = ?", (key,))
            self._commit()

    def stream_audiences(self, stream: str) -> set[str]:
        """Audiences a stream has fed in earlier mirror runs (what it covers)."""
        with self._using():
            rows = self._execute(
                "SELECT audience FROM ledger_streams WHERE ad_account_id = ? AND stream = ?",
                (self._account, stream),
            ).fetchall()
        return {str(row[0]) for row in rows}

    def add_stream_audiences(self, stream: str, audiences: Iterable[str]) -> None:
        """Remember that ``stream`` covers ``audiences`` from now on."""
        with self._using():
            cursor = self._connection.cursor()
            cursor.executemany(
                self.sql(
                    "INSERT INTO ledger_streams (ad_account_id, stream, audience) VALUES (?, ?, ?) "
                    "ON CONFLICT (ad_account_id, stream, audience) DO NOTHING"
                ),
                [(self._account, stream, audience) for audience in audiences],
            )
            self._commit()

    # Members ------------------------------------------------------------------------

    def counts(self, audience: str) -> tuple[int, int]:
        """(confirmed rows, all rows) for ``audience``."""
        key = self._existing_key(audience)
        if key is None:
            return 0, 0
        with self._using():
            row = self._execute(
                "SELECT COALESCE(SUM(confirmed), 0), COUNT(*) FROM ledger_members "
                "WHERE list_key = ?",
                (key,),
            ).fetchone()
        return int(row[0]), int(row[1])

    def members_between(self, audience: str, low: int, high: int) -> MemberRange:
        """The rows of ``audience`` whose digest's first byte is in ``[low, high)``.

        Mirror mode compares one prefix range at a time with set operations (see
        :mod:`snapshot`), so one range query per group replaces a walk in digest order.
        The uncertain rows, rare, come from a second query over the same range (scanned
        again by the database, in C; there is no index on ``confirmed``), not from a loop
        in Python over every row. ``high`` is at most 256.
        """
        key = self._existing_key(audience)
        if key is None:
            return MemberRange(set(), set())
        where = "list_key = ? AND hash >= ?"
        params: tuple[Any, ...] = (key, bytes([low]))
        if high < 256:
            where += " AND hash < ?"
            params += (bytes([high]),)
        select = f"SELECT hash FROM ledger_members WHERE {where}"  # noqa: S608
        with self._using():
            rows = set(map(_FIRST, self._execute(select, params)))
            uncertain = set(map(_FIRST, self._execute(f"{select} AND confirmed = 0", params)))
        if rows and type(next(iter(rows))) is not bytes:  # a driver's memoryview
            return MemberRange({bytes(d) for d in rows}, {bytes(d) for d in uncertain})
        return MemberRange(rows, uncertain)

    def mark_uncertain(self, audience: str, hashes: Sequence[str]) -> None:
        """Before a request: these rows' membership is unknown until it is acknowledged."""
        self._write_rows(audience, _UPSERT_UNCERTAIN, hashes)

    def confirm_added(self, audience: str, list_id: str, hashes: Sequence[str]) -> None:
        """After an acknowledged ADD (or list creation): these are members of ``list_id``."""
        with self._using():
            if self.list_id(audience) != list_id:
                # A list created this run: its uncertain rows (marked before the create
                # request) belong to it, so the id is set without voiding them.
                self.record_list_id(audience, list_id)
            self._write_rows(audience, _UPSERT_CONFIRMED, hashes, settle=True)

    def confirm_removed(self, audience: str, hashes: Sequence[str]) -> None:
        """After an acknowledged REMOVE: these are no longer members."""
        self._write_rows(audience, _DELETE, hashes, settle=True)

    def _write_rows(
        self, audience: str, statement: str, hashes: Sequence[str], *, settle: bool = False
    ) -> None:
        """Write rows in digest order (the pages then follow each other in the table).

        ``settle``: an acknowledgement, durable at the next commit; otherwise (marking
        rows uncertain before a request) committed before returning.
        """
        key = self.audience_key(audience)
        rows = sorted((key, bytes.fromhex(value)) for value in hashes)
        with self.settling() if settle else self.transaction() as cursor:
            cursor.executemany(self.sql(statement), rows)

    def close(self) -> None:
        """Close the connection (a dry run's uncommitted writes are rolled back); idempotent:
        mirror and upsert mode share one ledger and each closes it."""
        failed: Exception | None = None
        if not self._closed:
            # Outside the lock: a hook may wait for a thread that waits for the ledger.
            try:
                for write in self._before_close:
                    write()
            except Exception as exc:  # the connection is closed all the same
                failed = exc
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                with self._explained():
                    if self._dry_run:
                        self._connection.rollback()
                    else:
                        self._connection.commit()  # settled acknowledgements
            finally:
                self._connection.close()
        if failed is not None:
            raise failed


class SQLiteLedger(Ledger):
    """The ledger in a local SQLite file (the default)."""

    _types = {"key": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB"}
    _is_failure = staticmethod(_sqlite_failure)
    _advice = "Check its disk and the permissions of the file and its folder"

    def __init__(self, path: Path, ad_account_id: str, *, dry_run: bool = False) -> None:
        description = f"SQLite ledger {path}"
        with _explained(description, _sqlite_open_failure, self._advice):
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level="DEFERRED")
            # WAL: readers (the diff) and the writer (acknowledgements) do not block each
            # other; synchronous=NORMAL is durable at every checkpoint, which is what a
            # crash test needs. Before WAL: only a new, empty file takes a page size.
            connection.execute(f"PRAGMA page_size={PAGE_BYTES}")
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            # A fixed page cache (CACHE_KIB): memory stays flat whatever the ledger's size.
            connection.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        super().__init__(connection, ad_account_id, description=description, dry_run=dry_run)

    def _table_exists(self, table: str) -> bool:
        row = self._execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        return row is not None

    def _columns(self, table: str) -> set[str]:
        return {str(row[1]) for row in self._execute(f"PRAGMA table_info({table})").fetchall()}


class PostgresLedger(Ledger):
    """The ledger in PostgreSQL, for runs on machines that do not keep local files."""

    _placeholder = "%s"
    _types = {"key": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA"}

    _advice = "Check that the server is up, reachable and has room"

    @staticmethod
    def _is_failure(exc: BaseException) -> bool:
        import psycopg

        if not isinstance(exc, psycopg.OperationalError):
            return False
        state = getattr(exc, "sqlstate", None)
        # No SQLSTATE: the connection failed or was lost. 08 connection exceptions, 53
        # insufficient resources (disk full, out of memory), 57 operator intervention
        # (shutdown; not 57014, a cancelled statement), 58 system errors (I/O).
        return state is None or (state[:2] in {"08", "53", "57", "58"} and state != "57014")

    def __init__(self, url: str, ad_account_id: str, *, dry_run: bool = False) -> None:
        import psycopg

        with _explained("PostgreSQL ledger at ledger_url", self._is_failure, self._advice):
            connection = psycopg.connect(url)
        host = connection.info.host
        super().__init__(
            connection,
            ad_account_id,
            description=f"PostgreSQL ledger on {host}/{connection.info.dbname}",
            dry_run=dry_run,
        )

    def _table_exists(self, table: str) -> bool:
        row = self._execute("SELECT to_regclass(?)", (table,)).fetchone()
        return row is not None and row[0] is not None

    def _columns(self, table: str) -> set[str]:
        rows = self._execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "AND table_schema = current_schema()",
            (table,),
        ).fetchall()
        return {str(row[0]) for row in rows}


def open_ledger(
    *, path: Path, url: str | None, ad_account_id: str, dry_run: bool = False
) -> Ledger:
    """The configured ledger: PostgreSQL when ``url`` is set, else the SQLite file."""
    if url:
        return PostgresLedger(url, ad_account_id, dry_run=dry_run)
    return SQLiteLedger(path, ad_account_id, dry_run=dry_run)
