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
import math
import random
import threading
import time
from collections import deque
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
    UnreachableError,
)
from target_pinterest_audiences.rate_limits import UNIVERSAL_CEILING_PER_SECOND
from target_pinterest_audiences.tokens import TokenProvider

logger = logging.getLogger(__name__)

RATE_LIMIT_CODE = 8
"""Pinterest's error code for rate limiting (error body ``{code: 8, ...}``)."""

# A burst (after a quiet spell) runs at most this many times the ceiling's average rate, and
# never faster than Pinterest's universal 100 requests per second, which counts reads and
# writes together: every request also passes one pacer for that, 10% under it
# (PinterestClient).
BURST_SPEEDUP = 4.0
# After 429s the spacing between requests doubles, once per pause, up to this many times
# the ceiling's average interval (half its rate), and each success takes back a fifth of
# it: a storm slows requests down for seconds, not for the rest of the run.
_MAX_SLOWDOWN = 2.0
_RECOVERY_FACTOR = 0.8
_MIN_CUT_SPACING = 1.0
_WINDOW_SECONDS = 60.0

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


class PacingBudgetExceeded(Exception):
    """Waiting for a slot would take longer than the caller may still wait."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"{seconds:.1f}s")
        self.seconds = seconds


class Pacer:
    """A per-minute request ceiling shared by all request threads, plus a common pause
    after a 429.

    Pinterest counts requests per minute, so the ceiling is a sliding window: at most
    ``per_minute`` requests leave in any 60 seconds (a ceiling under 1 per minute, such as
    Trial access's 300 per day, becomes one request per ``60 / per_minute`` seconds).
    Within the window, requests are spaced at least a quarter of the average interval
    apart, so a burst never runs faster than ``BURST_SPEEDUP`` times the average rate.

    A 429 pauses every thread until Pinterest's ``Retry-After`` and doubles that spacing
    (AIMD, as TCP does, but bounded: never below half the ceiling's rate); each success
    takes a fifth of the slowdown back. The ceiling itself never moves.
    """

    def __init__(
        self,
        per_minute: float | None,
        *,
        burst_speedup: float = BURST_SPEEDUP,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``per_minute=None`` paces nothing (only pauses after a 429 apply).

        ``burst_speedup``: how many times faster than the average rate requests may leave
        while the window has room (1: evenly spaced, as a per-second limit needs).
        """
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._count = 0
        self._window = 0.0
        self._base_spacing = 0.0
        self._max_spacing = 0.0
        if per_minute:
            self._count = max(1, math.floor(per_minute))
            self._window = _WINDOW_SECONDS * max(1.0, 1.0 / per_minute)
            average_interval = self._window / self._count
            self._base_spacing = average_interval / burst_speedup
            self._max_spacing = average_interval * _MAX_SLOWDOWN
        self._spacing = self._base_spacing
        self._sent: deque[float] = deque()  # send times in the window, oldest first
        self._last_start = float("-inf")
        self._paused_until = float("-inf")
        self._last_cut = float("-inf")

    @property
    def slowdown(self) -> float:
        """How many times the spacing between requests is stretched after 429s (1 = none)."""
        return self._spacing / self._base_spacing if self._base_spacing else 1.0

    def acquire(self, budget: float = math.inf) -> float:
        """Block until this thread may send one request; return the seconds of that wait
        caused by rate limiting (pauses and slowdown, not the ceiling itself).

        Raises :class:`PacingBudgetExceeded`, without taking a slot, when the rate-limited
        part of the wait would exceed ``budget``.
        """
        with self._lock:
            now = self._clock()
            unthrottled = now
            start = max(now, self._paused_until)
            if self._count:
                sent = self._sent
                while sent and sent[0] <= now - self._window:
                    sent.popleft()
                window_slot = sent[0] + self._window if len(sent) >= self._count else now
                unthrottled = max(now, window_slot, self._last_start + self._base_spacing)
                start = max(start, unthrottled, self._last_start + self._spacing)
            throttled = start - unthrottled
            if throttled > budget:
                raise PacingBudgetExceeded(throttled)
            if self._count:
                self._sent.append(start)
                if len(self._sent) > self._count:
                    self._sent.popleft()
                self._last_start = start
        delay = start - now
        if delay > 0:
            self._sleep(delay)
        return max(0.0, throttled)

    def pause(self, seconds: float) -> None:
        """Hold every thread for ``seconds`` and slow down (Pinterest said slow down)."""
        with self._lock:
            now = self._clock()
            self._paused_until = max(self._paused_until, now + seconds)
            # Many threads hit the same limit at once: one cut per pause, not one each.
            if self._count and now - self._last_cut >= max(_MIN_CUT_SPACING, seconds):
                self._spacing = min(self._spacing * 2, self._max_spacing)
                self._last_cut = now

    def succeeded(self) -> None:
        """Take back part of the slowdown after a request went through."""
        if self._spacing > self._base_spacing:
            with self._lock:
                self._spacing = max(self._base_spacing, self._spacing * _RECOVERY_FACTOR)


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
        universal_pacer: Pacer | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """The write and read pacers hold each category's per-minute ceiling; every request
        also passes ``universal_pacer``, by default 90 per second for reads and writes
        together, evenly spaced: 10% under Pinterest's universal limit of 100 per second, as
        the category defaults are under theirs (the category pacers allow bursts, and a
        raised ceiling would otherwise burst past it)."""
        self.api_url = api_url.rstrip("/")
        self._tokens = tokens
        self._settings = settings or ClientSettings()
        self._write_pacer = write_pacer or Pacer(None)
        self._read_pacer = read_pacer or Pacer(None)
        self._universal_pacer = universal_pacer or Pacer(
            UNIVERSAL_CEILING_PER_SECOND * 60, burst_speedup=1.0, sleep=sleep
        )
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

    def status_without_credentials(self, path: str) -> int:
        """The HTTP status of one GET sent without a token (no retries).

        Tells whether ``api_url`` answers at all while spending no token: a check that may
        not refresh one still learns whether the network, DNS and TLS work.
        """
        settings = self._settings
        try:
            response = self._session().get(
                f"{self.api_url}{path}",
                timeout=(settings.connect_timeout_seconds, settings.read_timeout_seconds),
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            _, failure = _network_failure(exc)
            msg = (
                f"GET {path}: could not reach Pinterest at {self.api_url} ({failure}): check "
                "api_url and the network (DNS, proxy, firewall, TLS certificates)"
            )
            raise UnreachableError(msg) from exc
        response.close()
        return response.status_code

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
        """Send one API request with retries; return the decoded JSON object.

        Every wait caused by a failure counts toward ``max_total_wait_seconds``: the
        back-off after an error, the pause after a 429, and the slower pace after 429s
        (waiting for a turn under the configured ceiling does not). So a request either
        goes through or fails with a message within that budget.
        """
        pacer = self._read_pacer if method == "GET" else self._write_pacer
        policy = self._settings.retry
        waited = 0.0
        errors = 0
        throttled = 0
        may_refresh = self._tokens.can_refresh
        last: _Retry | None = None
        while True:
            try:
                waited += pacer.acquire(policy.max_total_wait_seconds - waited)
                self._universal_pacer.acquire()  # its waits are the limit itself, never a 429's
            except PacingBudgetExceeded as exc:
                attempts = errors + throttled
                raise RetriesExhaustedError(
                    self._exhausted_message(method, path, last, attempts, waited, exc.seconds)
                ) from None
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
            last = outcome
            if outcome.throttled:
                throttled += 1
            else:
                errors += 1
            delay = outcome.server_delay
            if delay is None:
                delay = policy.backoff(errors + throttled - 1)
            if errors >= policy.max_attempts or waited + delay > policy.max_total_wait_seconds:
                raise RetriesExhaustedError(
                    self._exhausted_message(method, path, outcome, errors + throttled, waited)
                )
            logger.warning(
                "%s %s: %s; retrying in %.1fs (%d errors, %d rate limited so far)",
                method,
                path,
                outcome.failure,
                delay,
                errors,
                throttled,
            )
            if outcome.throttled:
                pacer.pause(delay)  # every thread waits; the next acquire() sleeps it out
            else:
                waited += delay
                self._sleep(delay)

    def _exhausted_message(
        self,
        method: str,
        path: str,
        last: _Retry | None,
        attempts: int,
        waited: float,
        pacing_wait: float | None = None,
    ) -> str:
        """Why the request was given up, and what the user can do about it."""
        failure = last.failure if last is not None else "rate limited"
        done = (
            f"{method} {path} still failing after {attempts} attempts and {waited:.0f}s of "
            f"waiting ({failure})"
        )
        if pacing_wait is not None:
            done += f"; the next attempt would have to wait {pacing_wait:.0f}s more"
        if last is None or last.kind == "throttled":
            return (
                f"{done}. Pinterest keeps rate limiting: raise max_retry_wait_seconds, or "
                "lower max_write_requests_per_minute / max_read_requests_per_minute (another "
                "process using the same token shares Pinterest's limits)"
            )
        if last.kind == "connection":
            return (
                f"{done}. Could not reach Pinterest at {self.api_url}: check api_url and the "
                "network (DNS, proxy, firewall, TLS certificates)"
            )
        if last.kind == "timeout":
            return (
                f"{done}. Pinterest at {self.api_url} did not answer in time: check the "
                "network, or raise request_timeout_seconds"
            )
        return (
            f"{done}. The failure is on Pinterest's side: re-run later (re-running the same "
            "input is safe), or raise max_retry_wait_seconds"
        )

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
            kind, failure = _network_failure(exc)
            if not idempotent:
                msg = f"{method} {path}: {failure}; the request may have been applied"
                raise AmbiguousOutcomeError(msg) from exc
            return _Retry(failure, kind=kind)
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
            return _Retry(failure, kind="throttled", server_delay=_server_delay(response.headers))
        if status < 500:
            raise PinterestAPIError(f"{method} {path} failed: {failure}", **details)
        if not idempotent:
            msg = f"{method} {path}: {failure}; the request may have been applied"
            raise AmbiguousOutcomeError(msg, **details)
        return _Retry(failure, server_delay=_server_delay(response.headers))


@dataclass(frozen=True, slots=True)
class _Retry:
    """Why an attempt should be repeated.

    ``kind`` tells the advice apart when retries run out: ``throttled`` (429),
    ``connection`` (refused, DNS, TLS, dropped), ``timeout`` or ``server`` (5xx).
    """

    failure: str
    kind: str = "server"
    unauthorized: bool = False
    server_delay: float | None = None

    @property
    def throttled(self) -> bool:
        """Pinterest said slow down (429)."""
        return self.kind == "throttled"


def _network_failure(exc: requests.RequestException) -> tuple[str, str]:
    """(kind, description) of a request that got no HTTP answer, never quoting the URL."""
    if isinstance(exc, requests.exceptions.SSLError):
        return "connection", "TLS error (check the certificate and any TLS-intercepting proxy)"
    if isinstance(exc, requests.exceptions.ProxyError):
        return "connection", "the proxy refused or failed the connection"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection", "connecting timed out"
    if isinstance(exc, requests.Timeout):
        return "timeout", "no answer within request_timeout_seconds"
    chain = _exception_chain(exc)
    names = {type(error).__name__ for error in chain}
    text = " ".join(str(error) for error in chain)
    if "NameResolutionError" in names or "gaierror" in names or "resolve" in text.lower():
        return "connection", "the host name could not be resolved (DNS)"
    if "ConnectionRefusedError" in names or "Connection refused" in text:
        return "connection", "connection refused"
    if names & {"RemoteDisconnected", "ConnectionResetError", "ProtocolError"}:
        return "connection", "the connection was closed without an answer"
    return "connection", f"{type(exc).__name__} talking to Pinterest"


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and the errors urllib3 wraps in ``reason`` / ``args``."""
    seen: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(seen) < 20:
        error = pending.pop()
        if any(error is known for known in seen):
            continue
        seen.append(error)
        linked = [error.__cause__, error.__context__, getattr(error, "reason", None)]
        linked += [arg for arg in error.args if isinstance(arg, BaseException)]
        pending.extend(item for item in linked if isinstance(item, BaseException))
    return seen


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
