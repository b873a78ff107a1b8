"""The only module that speaks HTTP to Pinterest: auth, timeouts, retries and pacing.

Retry policy: 429, 5xx, connection errors and timeouts are retried with exponential backoff
and full jitter, honouring ``Retry-After`` and ``X-RateLimit-Reset``, within a bounded
number of attempts and total wait. Nothing else is retried: a 4xx other than 429 will not
get better by asking again. A 401 triggers one token refresh (when refresh credentials are
configured); a second 401, or a 403, stops the run with a message that says what to fix.

Non-idempotent requests (creating a list or an audience) are not blindly retried after a
lost connection or a 5xx, because Pinterest may have applied them: the caller gets an
:class:`AmbiguousOutcomeError` and looks before trying again.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from target_pinterest_audiences.errors import (
    AmbiguousOutcomeError,
    AuthenticationError,
    PermissionDeniedError,
    PinterestAPIError,
    RetriesExhaustedError,
)
from target_pinterest_audiences.tokens import TokenProvider

logger = logging.getLogger(__name__)

RATE_LIMIT_CODE = 8
"""Pinterest's error code for rate limiting (error body ``{code: 8, ...}``)."""

# An epoch timestamp is larger than any sensible delay in seconds; this tells the two
# forms of X-RateLimit-Reset apart.
_EPOCH_THRESHOLD = 1_000_000_000.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try before giving up on one request."""

    max_attempts: int = 8
    max_total_wait_seconds: float = 600.0
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff: spreads retries of many threads apart."""
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2**attempt)
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography


class Pacer:
    """A token bucket shared by all request threads, plus a common pause after a 429.

    Pacing keeps us under Pinterest's published limits in the first place; the pause makes
    every thread back off together when Pinterest says slow down, so throughput degrades
    to what Pinterest allows instead of hammering it.
    """

    def __init__(
        self,
        requests_per_second: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._paused_until = 0.0

    def acquire(self) -> None:
        """Block until this thread may send one request."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next_slot, self._paused_until)
            self._next_slot = start + self._interval
        delay = start - now
        if delay > 0:
            self._sleep(delay)

    def pause(self, seconds: float) -> None:
        """Hold every thread for ``seconds`` (Pinterest asked us to slow down)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Connection behaviour; defaults suit Pinterest's API."""

    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 120.0
    retry: RetryPolicy = RetryPolicy()
    pool_size: int = 16


class PinterestClient:
    """Sends JSON requests to the Pinterest API v5 (or the emulator) and decodes answers."""

    def __init__(
        self,
        api_url: str,
        tokens: TokenProvider,
        *,
        settings: ClientSettings | None = None,
        write_pacer: Pacer | None = None,
        read_pacer: Pacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self._tokens = tokens
        self._settings = settings or ClientSettings()
        self._write_pacer = write_pacer or Pacer(None)
        self._read_pacer = read_pacer or Pacer(None)
        self._sleep = sleep
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self.requests_sent = 0

    def _session(self) -> requests.Session:
        """One keep-alive session per thread: requests.Session is not thread-safe."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(
                pool_connections=1, pool_maxsize=self._settings.pool_size, max_retries=0
            )
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.headers["User-Agent"] = "target-pinterest-audiences"
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close every pooled connection."""
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET a resource (reads are idempotent and always retried)."""
        return self.request("GET", path, params=params)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        idempotent: bool = True,
    ) -> dict[str, Any]:
        """Send one API request with retries; return the decoded JSON object."""
        url = f"{self.api_url}{path}"
        pacer = self._read_pacer if method == "GET" else self._write_pacer
        policy = self._settings.retry
        timeout = (self._settings.connect_timeout_seconds, self._settings.read_timeout_seconds)
        waited = 0.0
        refreshed = False
        attempt = 0
        while True:
            pacer.acquire()
            token = self._tokens.current()
            failure: str
            delay: float
            try:
                response = self._session().request(
                    method,
                    url,
                    params=params,
                    json=body,
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=timeout,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                self.requests_sent += 1
                failure = f"{type(exc).__name__} talking to Pinterest"
                if not idempotent:
                    msg = f"{method} {path}: {failure}; the request may have been applied"
                    raise AmbiguousOutcomeError(msg) from exc
                delay = policy.backoff(attempt)
            else:
                self.requests_sent += 1
                status = response.status_code
                if 200 <= status < 300:
                    return _json_object(response, method, path)
                code, api_message = _error_body(response)
                failure = f"HTTP {status}" + (
                    f", Pinterest code {code}: {api_message}" if code is not None else ""
                )
                if status == 401:
                    if self._tokens.can_refresh and not refreshed:
                        self._tokens.refresh(token)
                        refreshed = True
                        continue
                    raise AuthenticationError(
                        _auth_advice(method, path, failure),
                        status=status,
                        code=code,
                        api_message=api_message,
                    )
                if status == 403:
                    raise PermissionDeniedError(
                        _permission_advice(method, path, failure),
                        status=status,
                        code=code,
                        api_message=api_message,
                    )
                if status != 429 and status < 500:
                    raise PinterestAPIError(
                        f"{method} {path} failed: {failure}",
                        status=status,
                        code=code,
                        api_message=api_message,
                    )
                if status >= 500 and not idempotent:
                    msg = f"{method} {path}: {failure}; the request may have been applied"
                    raise AmbiguousOutcomeError(
                        msg, status=status, code=code, api_message=api_message
                    )
                hinted = _server_delay(response.headers)
                delay = hinted if hinted is not None else policy.backoff(attempt)
                if status == 429:
                    pacer.pause(delay)
            attempt += 1
            if attempt >= policy.max_attempts or waited + delay > policy.max_total_wait_seconds:
                msg = (
                    f"{method} {path} still failing after {attempt} attempts and "
                    f"{waited:.0f}s of waiting ({failure}); raise max_retry_wait_seconds or "
                    "lower max_requests_per_second if Pinterest keeps rate limiting"
                )
                raise RetriesExhaustedError(msg)
            logger.warning(
                "%s %s: %s; retrying in %.1fs (attempt %d of %d)",
                method,
                path,
                failure,
                delay,
                attempt + 1,
                policy.max_attempts,
            )
            self._sleep(delay)
            waited += delay


def _json_object(response: requests.Response, method: str, path: str) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        msg = f"{method} {path}: Pinterest answered HTTP {response.status_code} with non-JSON body"
        raise PinterestAPIError(msg, status=response.status_code) from exc
    if not isinstance(data, dict):
        msg = f"{method} {path}: expected a JSON object from Pinterest"
        raise PinterestAPIError(msg, status=response.status_code)
    return data


def _error_body(response: requests.Response) -> tuple[int | None, str | None]:
    """Read Pinterest's ``{code, message}`` error body, tolerating anything else."""
    try:
        data = response.json()
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    code = data.get("code")
    message = data.get("message")
    return (code if isinstance(code, int) else None, str(message) if message is not None else None)


def _server_delay(headers: Mapping[str, str]) -> float | None:
    """How long the server asked us to wait, from Retry-After or X-RateLimit-Reset."""
    retry_after = headers.get("Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(retry_after)
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            value = float(reset)
        except ValueError:
            return None
        return max(0.0, value - time.time()) if value > _EPOCH_THRESHOLD else max(0.0, value)
    return None


def _auth_advice(method: str, path: str, failure: str) -> str:
    return (
        f"{method} {path}: Pinterest rejected the credentials ({failure}). The access token "
        "is invalid or expired: generate a new one, or configure refresh_token, client_id "
        "and client_secret so the target refreshes it itself."
    )


def _permission_advice(method: str, path: str, failure: str) -> str:
    return (
        f"{method} {path}: Pinterest denied access ({failure}). The token's user needs the "
        "owner, admin or audience manager role on the ad account, and the token needs the "
        "scopes ads:read and ads:write. Also check ad_account_id."
    )
