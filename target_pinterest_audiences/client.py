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

import datetime
import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
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

# Never slow below one request per minute, and regain the configured rate gradually:
# about 35 successes undo one halving.
_MAX_PACING_INTERVAL = 60.0
_MIN_CUT_SPACING = 1.0
_RECOVERY_FACTOR = 0.98

_encode = msgspec.json.Encoder().encode
_JSON_CONTENT = {"Content-Type": "application/json"}

# An epoch timestamp is larger than any sensible delay in seconds; this tells the two
# forms of X-RateLimit-Reset apart.
_EPOCH_THRESHOLD = 1_000_000_000.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try before giving up on one request.

    Rate limiting (429) is bounded only by ``max_total_wait_seconds``: waiting is the
    right answer to it, and a large first sync may meet it for a long time. Errors
    (5xx, network) are also bounded by ``max_attempts``.
    """

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
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``burst`` requests may go at once after a quiet spell (a per-minute quota
        allows it); beyond that they are spaced at the rate."""
        self._burst = max(1, burst)
        self._base_interval = 1.0 / requests_per_second if requests_per_second else 0.0
        self._interval = self._base_interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._last_cut = float("-inf")

    @property
    def requests_per_second(self) -> float | None:
        """The rate currently allowed (lower than configured after rate limiting)."""
        return 1.0 / self._interval if self._interval else None

    def acquire(self) -> None:
        """Block until this thread may send one request."""
        with self._lock:
            now = self._clock()
            # Idle time earns up to burst - 1 slots in the past.
            earliest = now - (self._burst - 1) * self._interval
            start = max(earliest, self._next_slot, self._paused_until)
            self._next_slot = start + self._interval
        delay = start - now
        if delay > 0:
            self._sleep(delay)

    def pause(self, seconds: float) -> None:
        """Hold every thread for ``seconds`` and halve the rate (Pinterest said slow down).

        Halving on every 429 and creeping back up on every success (AIMD, as TCP does)
        settles just under whatever rate Pinterest actually grants, instead of bouncing
        off the limit at the configured rate.
        """
        with self._lock:
            now = self._clock()
            self._paused_until = max(self._paused_until, now + seconds)
            # Many threads hit the same limit at once: one cut per window, not one each.
            if self._base_interval and now - self._last_cut >= max(_MIN_CUT_SPACING, seconds):
                self._interval = min(self._interval * 2, _MAX_PACING_INTERVAL)
                self._last_cut = now

    def succeeded(self) -> None:
        """Recover a little of the configured rate after a request went through."""
        if self._interval > self._base_interval:
            with self._lock:
                self._interval = max(self._base_interval, self._interval * _RECOVERY_FACTOR)


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Connection behaviour; defaults suit Pinterest's API."""

    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 120.0
    retry: RetryPolicy = RetryPolicy()


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

    def _session(self) -> requests.Session:
        """One keep-alive session per thread: requests.Session is not thread-safe."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.headers["User-Agent"] = "target-pinterest-audiences"
            # Read proxy and CA-bundle settings from the environment once, not per request:
            # requests otherwise scans os.environ on every call (a third of its CPU here).
            environment = session.merge_environment_settings(self.api_url, {}, None, None, None)
            session.proxies.update(environment.get("proxies") or {})
            session.verify = environment.get("verify", True)
            if environment.get("cert"):
                session.cert = environment["cert"]
            session.trust_env = False
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
        pacer = self._read_pacer if method == "GET" else self._write_pacer
        policy = self._settings.retry
        waited = 0.0
        errors = 0
        throttled = 0
        may_refresh = self._tokens.can_refresh
        while True:
            pacer.acquire()
            token = self._tokens.current()
            outcome = self._attempt(method, path, params, body, token, idempotent=idempotent)
            if isinstance(outcome, dict):
                pacer.succeeded()
                return outcome
            if outcome.unauthorized:
                if not may_refresh:
                    raise AuthenticationError(_auth_advice(method, path, outcome.failure))
                self._tokens.refresh(token)
                may_refresh = False  # a second 401 means the new token is refused too
                continue
            if outcome.throttled:
                throttled += 1
            else:
                errors += 1
            delay = outcome.server_delay
            if delay is None:
                delay = policy.backoff(errors + throttled - 1)
            if errors >= policy.max_attempts or waited + delay > policy.max_total_wait_seconds:
                msg = (
                    f"{method} {path} still failing after {errors + throttled} attempts "
                    f"and {waited:.0f}s of waiting ({outcome.failure}); raise "
                    "max_retry_wait_seconds, or lower max_requests_per_second if Pinterest "
                    "keeps rate limiting"
                )
                raise RetriesExhaustedError(msg)
            logger.warning(
                "%s %s: %s; retrying in %.1fs (%d errors, %d rate limited so far)",
                method,
                path,
                outcome.failure,
                delay,
                errors,
                throttled,
            )
            waited += delay
            if outcome.throttled:
                pacer.pause(delay)  # every thread waits; the next acquire() sleeps it out
            else:
                self._sleep(delay)

    def _attempt(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: Mapping[str, Any] | None,
        token: str,
        *,
        idempotent: bool,
    ) -> dict[str, Any] | _Retry:
        """Send once: the answer, a reason to retry, or an exception for a final failure."""
        settings = self._settings
        try:
            response = self._session().request(
                method,
                f"{self.api_url}{path}",
                params=params,
                # msgspec encodes a 1,900-record body several times faster than json.
                data=None if body is None else _encode(body),
                headers={
                    "Authorization": f"Bearer {token}",
                    **({} if body is None else _JSON_CONTENT),
                },
                timeout=(settings.connect_timeout_seconds, settings.read_timeout_seconds),
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            failure = f"{type(exc).__name__} talking to Pinterest"
            if not idempotent:
                msg = f"{method} {path}: {failure}; the request may have been applied"
                raise AmbiguousOutcomeError(msg) from exc
            return _Retry(failure)
        status = response.status_code
        if 200 <= status < 300:
            return _json_object(response, method, path)
        code, api_message = _error_body(response)
        failure = f"HTTP {status}" + (
            f", Pinterest code {code}: {api_message}" if code is not None else ""
        )
        details: dict[str, Any] = {"status": status, "code": code, "api_message": api_message}
        if status == 401:
            return _Retry(failure, unauthorized=True)
        if status == 403:
            raise PermissionDeniedError(_permission_advice(method, path, failure), **details)
        if status == 429:
            return _Retry(failure, throttled=True, server_delay=_server_delay(response.headers))
        if status < 500:
            raise PinterestAPIError(f"{method} {path} failed: {failure}", **details)
        if not idempotent:
            msg = f"{method} {path}: {failure}; the request may have been applied"
            raise AmbiguousOutcomeError(msg, **details)
        return _Retry(failure, server_delay=_server_delay(response.headers))


@dataclass(frozen=True, slots=True)
class _Retry:
    """Why an attempt should be repeated."""

    failure: str
    throttled: bool = False
    unauthorized: bool = False
    server_delay: float | None = None


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
            try:
                parsed = email.utils.parsedate_to_datetime(retry_after)
            except (TypeError, ValueError):  # unparseable: fall back to our own backoff
                return None
            if parsed.tzinfo is None:  # HTTP dates are GMT
                parsed = parsed.replace(tzinfo=datetime.UTC)
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
