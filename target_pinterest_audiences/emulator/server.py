"""HTTP plumbing and the :class:`Emulator` facade.

``http.server.ThreadingHTTPServer`` with HTTP/1.1 keep-alive: one thread per
connection, so concurrent requests overlap (``latency_ms`` and ``delay``
faults sleep in their own thread). Every response carries an exact
``Content-Length``; request bodies are read completely (``Content-Length`` or
chunked) before answering so a connection stays in sync for the next request.
A "drop" closes the connection without writing a byte, which clients see as
a connection error (``RemoteDisconnected``/``ConnectionResetError``).

``stop()`` also shuts down idle keep-alive connections, so a test's session
cannot keep talking to a stopped emulator.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .admin import ADMIN_PREFIX, AdminApi
from .api import PinterestApi
from .config import EmulatorConfig
from .dispatch import API_PREFIX, ApiDispatcher, Outcome
from .faults import FaultInjector
from .ratelimit import RateLimits
from .requestlog import RequestLog
from .spec import ApiSpec
from .state import EmulatorState
from .tokens import TokenStore

_MAX_BODY_BYTES = 64 * 1024 * 1024  # far above Pinterest's limits; guards memory


class _BadRequest(Exception):
    """The HTTP framing itself is broken (e.g. a non-numeric Content-Length)."""


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: Emulator, verbose: bool) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.emulator = emulator
        self.verbose = verbose
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)) and not self.verbose:
            return  # the client went away; nothing to report
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pinterest-api-emulator"
    sys_version = ""
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY Nagle's
        # algorithm holds the body until the client's delayed ACK (~40 ms per request).
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        try:
            body = self._read_body()
        except _BadRequest as exc:
            self.close_connection = True
            self._send(Outcome.json(400, {"code": 1, "message": str(exc)}))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        outcome = self.server.emulator.handle_http(self.command, self.path, headers, body)
        if outcome.drop:
            self.close_connection = True
            return
        self._send(outcome)

    def _send(self, outcome: Outcome) -> None:
        self.send_response(outcome.status)
        for name, value in outcome.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(outcome.body)))
        self.end_headers()
        self.wfile.write(outcome.body)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise _BadRequest("Invalid Content-Length header.") from None
        if length < 0 or length > _MAX_BODY_BYTES:
            raise _BadRequest("Invalid Content-Length header.")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest("Invalid chunked encoding.") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # skip trailers
                return b"".join(chunks)
            total += size
            if total > _MAX_BODY_BYTES:
                raise _BadRequest("Request body too large.")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)  # CRLF after the chunk

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)  # to stderr


class Emulator:
    """A local Pinterest v5 API emulator on a background thread.

    ``Emulator(config).start()`` binds (port 0 picks a free port) and serves
    until ``stop()``; it is also a context manager. Besides the HTTP admin API,
    tests can use the in-process accessors: ``state`` (``state.members(id)``,
    ``state.customer_lists()``), ``counters()``, ``requests()``, ``snapshot()``,
    ``configure_faults()``, ``reset()`` and ``expire_tokens()``.
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config = config or EmulatorConfig()
        self.spec = ApiSpec.load()
        self.state = EmulatorState(
            config.ad_account_ids,
            processing_seconds=config.processing_seconds,
            match_rate=config.match_rate,
            clock=config.clock,
        )
        self.tokens = TokenStore(
            access_tokens=config.access_tokens,
            client_id=config.client_id,
            client_secret=config.client_secret,
            refresh_token=config.refresh_token,
            rotate_refresh_tokens=config.rotate_refresh_tokens,
            access_token_ttl_seconds=config.access_token_ttl_seconds,
            refresh_token_ttl_seconds=config.refresh_token_ttl_seconds,
            clock=config.clock,
        )
        self.faults = FaultInjector(config.fault_config())
        self.request_log = RequestLog(config.request_log_limit)
        self._limits = RateLimits(config.rate_limits(), window=config.rate_limit_window_seconds)
        api = PinterestApi(self.state, self.tokens, self.faults, created_time=int(config.clock()))
        self._api = ApiDispatcher(
            spec=self.spec,
            api=api,
            state=self.state,
            tokens=self.tokens,
            faults=self.faults,
            log=self.request_log,
            limits=self._limits,
            latency_ms=config.latency_ms,
            validate_responses=config.validate_responses,
            clock=config.clock,
        )
        self._admin = AdminApi(self)
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind and serve on a daemon thread; returns ``self`` for chaining."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        server = _HttpServer((self.config.host, self.config.port), self, self.config.verbose)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="pinterest-api-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and release the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Emulator:
        return self.start() if self._server is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- addresses ----------------------------------------------------------------

    @property
    def host(self) -> str:
        """The bound host (as configured)."""
        return self.config.host

    @property
    def port(self) -> int:
        """The bound port (the real one when configured as 0)."""
        if self._server is None:
            raise RuntimeError("emulator is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` without a path."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The API base URL a client uses, ending in ``/v5``."""
        return self.base_url + API_PREFIX

    @property
    def admin_url(self) -> str:
        """The admin API base URL, ending in ``/_emulator``."""
        return self.base_url + ADMIN_PREFIX

    # --- requests -----------------------------------------------------------------

    def handle_http(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> Outcome:
        """Answer one HTTP request (called from the handler threads)."""
        if target == ADMIN_PREFIX or target.startswith(ADMIN_PREFIX + "/"):
            return self._admin.dispatch(method, target, body)
        return self._api.dispatch(method, target, headers, body)

    # --- controls and inspection ----------------------------------------------------

    def members(self, list_id: str) -> frozenset[str]:
        """Current members of a customer list; KeyError if unknown."""
        return self.state.members(list_id)

    def requests(self) -> list[dict[str, Any]]:
        """The request log, oldest first."""
        return self.request_log.entries()

    def counters(self) -> dict[str, Any]:
        """Request counters plus the state's ``non_sha256_records``."""
        return {**self.request_log.counters(), "non_sha256_records": self.state.non_sha256_records}

    def fault_config(self) -> dict[str, Any]:
        """The current fault configuration with per-rule counters."""
        return self.faults.describe()

    def configure_faults(self, config: Any) -> None:
        """Replace the fault configuration (same JSON shape as the admin API)."""
        self.faults.configure(config)

    def expire_tokens(self) -> int:
        """Invalidate every current access token; returns how many there were."""
        return self.tokens.revoke_all_access_tokens()

    def reset(self) -> None:
        """Back to the start-up state: no lists or audiences, empty log, configured
        tokens only, the start-up fault configuration, empty rate-limit windows."""
        self.state.reset()
        self.request_log.reset()
        self.tokens.reset()
        self.faults.configure(self.config.fault_config())
        self._limits.reset()

    def snapshot(self) -> dict[str, Any]:
        """The ``GET /_emulator/state`` document."""
        config = self.config
        return {
            "ad_accounts": self.state.snapshot(),
            "counters": self.counters(),
            "faults": self.fault_config(),
            "settings": {
                "latency_ms": config.latency_ms,
                "write_rate_limit_per_minute": config.write_rate_limit_per_minute,
                "read_rate_limit_per_minute": config.read_rate_limit_per_minute,
                "rate_limit_window_seconds": config.rate_limit_window_seconds,
                "processing_seconds": config.processing_seconds,
                "match_rate": config.match_rate,
                "rotate_refresh_tokens": config.rotate_refresh_tokens,
                "access_token_ttl_seconds": config.access_token_ttl_seconds,
            },
            "vendored_from": dict(self.spec.vendored_from),
            "time": config.clock(),
        }
