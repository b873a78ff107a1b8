"""A real, throwaway PostgreSQL server for the test session, on 127.0.0.1 only.

The server comes from the machine's PostgreSQL installation (``make postgres-server``
installs Debian's ``postgresql`` package when it is missing); this module never installs
anything. It runs ``initdb`` into a fresh temporary directory (trust authentication, a known
superuser), starts ``postgres`` listening on 127.0.0.1 on a free port with its unix socket in
that directory, and on teardown stops it with a fast shutdown and deletes the directory.

PostgreSQL refuses to run as root: as root, the directory is handed to the ``postgres`` OS
user (which Debian's package creates) and ``initdb``/``postgres`` run as that user through
``setpriv``.

Fixtures (register them with ``pytest_plugins = ["postgres_server"]`` in tests/conftest.py,
or import them into a test module):

- ``postgres_server``: the session's :class:`PostgresServer`.
- ``postgres_url``: ``postgresql://<user>@127.0.0.1:<port>/<db>`` of a database made for the
  session.
- ``fresh_postgres_url``: the URL of a new, empty database made for one test and dropped after.
- ``logical_postgres_server``: a second session server set up for logical replication
  (``wal_level = logical``) with the wal2json output plugin checked, for change-data-capture
  tests (tap-postgres LOG_BASED). ``make postgres-wal2json`` installs Debian's
  ``postgresql-<major>-wal2json``. It is separate so the ledger tests' server stays as it was.

If no PostgreSQL server installation is found, the fixtures FAIL (never skip) and say how to
install one. ``POSTGRES_BIN_DIR`` may name the directory holding ``initdb`` and ``postgres``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType

import pytest

SUPERUSER = "pgtest"
SESSION_DATABASE = "pytest"
HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
DEBIAN_LIB_DIR = Path("/usr/lib/postgresql")
INSTALL_HINT = (
    "Install it with `make postgres-server` (on Debian/Ubuntu: apt-get install postgresql), "
    "or set POSTGRES_BIN_DIR to the directory holding initdb and postgres."
)
# What logical decoding needs (the defaults of max_replication_slots and max_wal_senders are
# 10 already; stated so that a packager's different default cannot break the CDC tests).
# Logical decoding reads only WAL that is flushed: with asynchronous commit a committed change
# would reach a reader up to three wal_writer_delay later, so a test could miss it.
LOGICAL_REPLICATION_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "synchronous_commit": "on",
}
WAL2JSON = "wal2json"


class PostgresUnavailableError(RuntimeError):
    """No usable PostgreSQL server installation, or the server would not start."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.name)) or (-1,)


def find_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``postgres``: POSTGRES_BIN_DIR, else the newest
    /usr/lib/postgresql/<version>/bin, else wherever ``initdb`` is on PATH."""
    override = os.environ.get("POSTGRES_BIN_DIR")
    candidates: list[Path] = []
    if override:
        candidates.append(Path(override))
    else:
        versions = sorted(
            (p for p in DEBIAN_LIB_DIR.glob("*") if (p / "bin" / "initdb").is_file()),
            key=_version_key,
            reverse=True,
        )
        candidates.extend(v / "bin" for v in versions)
        on_path = shutil.which("initdb")
        if on_path:
            candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "postgres")):
            return directory
    where = f"POSTGRES_BIN_DIR={override}" if override else f"{DEBIAN_LIB_DIR}/*/bin or PATH"
    raise PostgresUnavailableError(
        f"No PostgreSQL server (initdb and postgres) found in {where}. {INSTALL_HINT}"
    )


def find_wal2json(bin_dir: Path) -> Path:
    """The wal2json output plugin (``wal2json.so``) of the server installation in ``bin_dir``.

    Looked up in that server's own library directory (``pg_config --pkglibdir``): a plugin
    built for another major version would not load.
    """
    pg_config = bin_dir / "pg_config"
    hint = (
        "Install it with `make postgres-wal2json` (on Debian/Ubuntu: apt-get install "
        "postgresql-<major>-wal2json, for the server's major version)."
    )
    if not os.access(pg_config, os.X_OK):
        raise PostgresUnavailableError(
            f"No pg_config in {bin_dir} to find the server's library directory and wal2json "
            f"in it. {hint}"
        )
    done = subprocess.run(
        [str(pg_config), "--pkglibdir"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    plugin = Path(done.stdout.strip()) / f"{WAL2JSON}.so"
    if done.returncode != 0 or not plugin.is_file():
        raise PostgresUnavailableError(
            f"The wal2json logical decoding plugin is not installed for the PostgreSQL server "
            f"in {bin_dir} (no {plugin}). {hint}"
        )
    return plugin


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _world_traversable(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresServer:
    """One throwaway PostgreSQL server; a context manager (``start``/``stop``)."""

    def __init__(
        self,
        bin_dir: Path | None = None,
        user: str = SUPERUSER,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.user = user
        self.settings = dict(settings or {})  # extra `-c name=value` server settings
        self.host = HOST
        self.port = 0
        self.base_dir: Path | None = None
        self.start_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._as_root = os.geteuid() == 0
        self._setpriv = shutil.which("setpriv")

    # -- URLs --------------------------------------------------------------------------------

    def url(self, dbname: str = SESSION_DATABASE) -> str:
        """``postgresql://user@127.0.0.1:port/dbname`` (trust auth: no password)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    @property
    def admin_url(self) -> str:
        """The URL of the ``postgres`` maintenance database."""
        return self.url("postgres")

    @property
    def log_path(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "postgres.log"

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """initdb a fresh directory, start postgres, wait until it takes connections."""
        began = time.monotonic()
        try:
            self._make_base_dir()
            self._initdb()
            for attempt in range(3):  # a port taken between choosing and binding: pick again
                self.port = _free_port()
                outcome = self._launch_and_wait()
                if outcome == "ready":
                    break
                if outcome == "exited" and "could not bind" in self._log_tail(lines=5):
                    outcome = "port taken"
                if attempt == 2 or outcome != "port taken":
                    raise PostgresUnavailableError(
                        f"postgres did not start on {HOST}:{self.port} ({outcome}, exit "
                        f"{self._exit_code()}); log:\n{self._log_tail()}"
                    )
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL; delete the dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                try:
                    proc.wait(timeout=STOP_TIMEOUT_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    # -- SQL helpers -------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name``; returns its URL."""
        self._admin_sql(f"CREATE DATABASE {_quote_ident(name)}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE ``name``, closing any connections still open to it."""
        self._admin_sql(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def _admin_sql(self, sql: str) -> None:
        psycopg = _import_psycopg()
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    # -- internals ---------------------------------------------------------------------------

    def _as_server_user(self, argv: list[str]) -> list[str]:
        """Run as ``postgres`` when we are root; die with our process when it dies."""
        if self._as_root:
            if not self._setpriv:
                raise PostgresUnavailableError(
                    "Running as root, PostgreSQL must run as another user, but `setpriv` "
                    "(util-linux) is missing."
                )
            return [
                self._setpriv,
                "--reuid=postgres",
                "--regid=postgres",
                "--clear-groups",
                "--pdeathsig=INT",
                "--",
                *argv,
            ]
        if self._setpriv:
            return [self._setpriv, "--pdeathsig=INT", "--", *argv]
        return argv

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        assert self.base_dir is not None
        env.update(HOME=str(self.base_dir), LC_ALL="C", LANG="C")
        return env

    def _make_base_dir(self) -> None:
        if not self._as_root:
            self.base_dir = Path(tempfile.mkdtemp(prefix="pytest-postgres-"))
            return
        import pwd

        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailableError(
                "Running as root, PostgreSQL must run as the `postgres` OS user, which does "
                f"not exist. {INSTALL_HINT}"
            ) from None
        # the postgres user must be able to reach the directory
        parent = None if _world_traversable(Path(tempfile.gettempdir())) else "/tmp"
        self.base_dir = Path(tempfile.mkdtemp(prefix="pytest-postgres-", dir=parent))
        os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        assert self.base_dir is not None
        argv = [
            str(self.bin_dir / "initdb"),
            f"--pgdata={self.base_dir / 'data'}",
            f"--username={self.user}",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ]
        done = subprocess.run(
            self._as_server_user(argv),
            cwd=self.base_dir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise PostgresUnavailableError(
                f"initdb failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
            )

    def _launch_and_wait(self) -> str:
        """Start postgres on self.port and wait: "ready", "exited" or "port taken"."""
        assert self.base_dir is not None
        argv = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.base_dir / "data"),
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            f"unix_socket_directories={self.base_dir}",
            "-c",
            "unix_socket_permissions=0700",
            # a throwaway server: durability buys nothing here
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self._as_server_user(argv),
                cwd=self.base_dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is pytest's to handle
            )
        psycopg = _import_psycopg()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return "exited"
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
                    row = conn.execute("SHOW data_directory").fetchone()
            except psycopg.OperationalError as exc:
                last_error = exc
                time.sleep(0.05)
                continue
            if row is not None and Path(row[0]) == self.base_dir / "data":
                return "ready"
            # another server answered on this port (ours could not bind it)
            self._proc.send_signal(signal.SIGQUIT)
            self._proc.wait(timeout=STOP_TIMEOUT_SECONDS)
            return "port taken"
        raise PostgresUnavailableError(
            f"postgres did not accept connections on {HOST}:{self.port} within "
            f"{START_TIMEOUT_SECONDS:.0f} s ({last_error}); log:\n{self._log_tail()}"
        )

    def _exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def _log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _import_psycopg() -> ModuleType:
    try:
        import psycopg
    except ImportError:
        pytest.fail(
            "psycopg is not installed in this environment: pip install -e '.[dev]' "
            "(it needs psycopg[binary]>=3.2).",
            pytrace=False,
        )
    return psycopg


# -- one server per process, shared by every registration of these fixtures -----------------
# The fixtures may be registered twice (conftest's pytest_plugins and a test module importing
# them); pytest then sets up the session fixture once per registration. Both share one server.


class _SharedServer:
    """One server of one kind per process, started by its first user, stopped by its last."""

    def __init__(self, make: Callable[[], PostgresServer]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._server: PostgresServer | None = None
        self._users = 0

    def acquire(self) -> PostgresServer:
        with self._lock:
            if self._server is None:
                server = self._make()
                server.start()
                server.create_database(SESSION_DATABASE)
                self._server = server
            self._users += 1
            return self._server

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._server is not None:
                self._server.stop()
                self._server = None


def _logical_replication_server() -> PostgresServer:
    bin_dir = find_bin_dir()
    find_wal2json(bin_dir)  # fail before initdb, with the install hint
    return PostgresServer(bin_dir, settings=LOGICAL_REPLICATION_SETTINGS)


_plain = _SharedServer(PostgresServer)
_logical = _SharedServer(_logical_replication_server)


def _session_server(shared: _SharedServer) -> Iterator[PostgresServer]:
    problem = ""
    try:
        server = shared.acquire()
    except PostgresUnavailableError as exc:
        problem = str(exc)
    if problem:  # failed outside the except block: one message, not a chained traceback
        pytest.fail(f"Cannot start a PostgreSQL server for the tests: {problem}", pytrace=False)
    try:
        yield server
    finally:
        shared.release()


# The functions carry a _fixture suffix and name their fixture explicitly, so a test module can
# import them (`from postgres_server import postgres_url_fixture`, marked unused for the linter)
# without its test arguments shadowing the imported names.


@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture() -> Iterator[PostgresServer]:
    """The session's throwaway PostgreSQL server on 127.0.0.1 (fails if none is installed)."""
    yield from _session_server(_plain)


@pytest.fixture(scope="session", name="postgres_url")
def postgres_url_fixture(postgres_server: PostgresServer) -> str:
    """URL of a database made for the whole session: postgresql://user@127.0.0.1:port/pytest."""
    return postgres_server.url(SESSION_DATABASE)


@pytest.fixture(name="fresh_postgres_url")
def fresh_postgres_url_fixture(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a new, empty database for one test, dropped after it."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session", name="logical_postgres_server")
def logical_postgres_server_fixture() -> Iterator[PostgresServer]:
    """A throwaway server on 127.0.0.1 with ``wal_level = logical`` and wal2json installed.

    Its own server, not the ledger tests' one, so replication slots (which hold WAL back) and
    the logical WAL level touch no other test. Fails, never skips, when wal2json is missing.
    Trust authentication: a client that insists on a password (tap-postgres) may send any.
    """
    yield from _session_server(_logical)
