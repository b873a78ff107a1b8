"""The request pipeline for the emulated Pinterest API (everything under ``/v5``).

Independent of HTTP plumbing: takes method, target, headers and body bytes and
returns an :class:`Outcome` (status, headers, JSON body, or "drop the
connection"). Steps, in the order Pinterest plausibly applies them:

1. ``latency_ms`` sleep (every API request, in its own handler thread);
2. routing: a path outside the description is a 404, a method the path does
   not have is a 405 (both count as invalid requests);
3. authentication: Bearer token for ads operations, HTTP Basic client
   credentials for ``/oauth/token``; failures are 401 code 2;
4. contract validation of parameters, content type and body: 400 code 1
   (undeclared query parameters are ignored, as Pinterest does, and logged);
5. ad-account access: an id that is not configured is a 403 code 29;
6. fault injection (see ``faults.py``);
7. rate limiting by ``x-ratelimit-category`` and access token (see ``ratelimit.py``);
8. the operation itself (``api.py``);
9. response self-check against the description: a mismatch is counted in
   ``response_validation_errors`` and printed to stderr, and the response is
   still sent (tests assert the counter stays 0).

Unexpected exceptions become a 500 Error body (and a traceback on stderr),
so a bug in the emulator shows up as a failing request, not a hung client.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from .api import PinterestApi
from .errors import (
    CODE_METHOD_NOT_ALLOWED,
    CODE_NOT_PERMITTED,
    CODE_RATE_LIMITED,
    RATE_LIMITED,
    ApiError,
    ContractViolation,
    authentication_failed,
)
from .faults import FaultAction, FaultInjector
from .ratelimit import RateLimits
from .requestlog import LogEntry, RequestLog
from .spec import ApiSpec, MethodNotAllowed, Operation, RequestInvalid, UnknownPath, first_problem
from .state import EmulatorState
from .tokens import TokenStore

API_PREFIX = "/v5"
JSON_CONTENT_TYPE = "application/json"


def encode_json(payload: Any) -> bytes:
    """Compact UTF-8 JSON, as sent on the wire."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass
class Outcome:
    """What the HTTP layer should do with a request."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False

    @classmethod
    def json(cls, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Outcome:
        """A JSON response."""
        return cls(
            status, encode_json(payload), {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})}
        )


class _Dropped(Exception):
    """Internal signal: answer nothing and close the connection."""


@dataclass
class _Context:
    """Per-request facts the pipeline steps share."""

    entry: LogEntry
    headers: dict[str, str] = field(default_factory=dict)
    operation: Operation | None = None
    token: str | None = None
    drop_after_apply: bool = False


class ApiDispatcher:
    """Runs the pipeline for one API request at a time (thread-safe)."""

    def __init__(
        self,
        *,
        spec: ApiSpec,
        api: PinterestApi,
        state: EmulatorState,
        tokens: TokenStore,
        faults: FaultInjector,
        log: RequestLog,
        limits: RateLimits,
        latency_ms: float = 0.0,
        validate_responses: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._spec = spec
        self._api = api
        self._state = state
        self._tokens = tokens
        self._faults = faults
        self._log = log
        self._limits = limits
        self._latency = latency_ms / 1000.0
        self._validate_responses = validate_responses
        self._clock = clock

    def dispatch(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> Outcome:
        """Answer one request; ``headers`` must have lower-case names."""
        started = time.perf_counter()
        path, _, query = target.partition("?")
        entry = LogEntry(
            seq=self._log.next_seq(), time=self._clock(), method=method, path=path, query=query
        )
        ctx = _Context(entry)
        if self._latency > 0:
            time.sleep(self._latency)
        outcome: Outcome | None = None
        try:
            status, payload = self._run(ctx, method, path, query, headers, body)
        except _Dropped:
            outcome = Outcome(0, drop=True)
        except ApiError as err:
            entry.error = err.message
            entry.valid = entry.valid and not isinstance(err, ContractViolation)
            ctx.headers.update(err.headers)
            status, payload = err.status, err.body()
        except Exception as exc:  # a bug in the emulator: fail this request loudly
            traceback.print_exc(file=sys.stderr)
            entry.error = f"emulator internal error: {exc!r}"
            status, payload = 500, {"code": 500, "message": entry.error}

        if outcome is None:
            self._self_check(ctx, status, payload)
            if ctx.drop_after_apply:
                outcome = Outcome(0, drop=True)
            else:
                entry.status = status
                outcome = Outcome.json(status, payload, ctx.headers)
        entry.duration_ms = round((time.perf_counter() - started) * 1000.0, 3)
        self._log.add(entry)
        return outcome

    def _run(
        self,
        ctx: _Context,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> tuple[int, Any]:
        entry = ctx.entry
        api_path = path[len(API_PREFIX) :] if path.startswith(API_PREFIX + "/") else None
        try:
            if api_path is None:
                raise UnknownPath(path)
            match = self._spec.route(method, api_path)
        except UnknownPath:
            entry.valid = False
            raise ApiError(404, 404, f"Path {path} not found.") from None
        except MethodNotAllowed as exc:
            entry.valid = False
            raise ApiError(
                405,
                CODE_METHOD_NOT_ALLOWED,
                "Method not allowed",
                {"Allow": ", ".join(exc.allowed)},
            ) from None
        operation = ctx.operation = match.operation
        entry.route, entry.operation = operation.route_key, operation.operation_id

        ctx.token = self._authenticate(operation, headers)
        try:
            query_values = parse_qs(query, keep_blank_values=True)
            entry.ignored_query_parameters = operation.undeclared_query(query_values)
            params = operation.parse_parameters(match.path_values, query_values, headers)
            value = operation.parse_body(headers.get("content-type"), body)
        except RequestInvalid as exc:
            raise ContractViolation(str(exc)) from None

        account_id = params.get("ad_account_id")
        if account_id is not None and account_id not in self._state.ad_account_ids:
            raise ApiError(
                403,
                CODE_NOT_PERMITTED,
                f"You are not permitted to access ad account {account_id}: the caller "
                "has no access to this ad account.",
            )

        fault = self._faults.pick(method, api_path)
        if fault is not None:
            entry.fault = fault.action
            self._apply_fault(ctx, fault)

        self._rate_limit(ctx, operation)
        result = self._api.handle(operation.operation_id, params, value, entry)
        return result.status, result.body

    def _authenticate(self, operation: Operation, headers: Mapping[str, str]) -> str | None:
        if not operation.auth_schemes:
            return None
        scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
        credentials = credentials.strip()
        if "bearer" in operation.auth_schemes and scheme.lower() == "bearer":
            if self._tokens.is_valid_access_token(credentials):
                return credentials
        elif "basic" in operation.auth_schemes and scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            client_id, sep, secret = decoded.partition(":")
            if sep and self._tokens.check_client(client_id, secret):
                return None
        raise authentication_failed()

    def _apply_fault(self, ctx: _Context, fault: FaultAction) -> None:
        if fault.action == "error":
            raise fault.error()
        if fault.action == "drop":
            raise _Dropped
        if fault.action == "drop_after_apply":
            ctx.drop_after_apply = True
        elif fault.action == "delay":
            time.sleep(fault.seconds)
        elif fault.action == "expire_token":
            if ctx.token is not None:
                self._tokens.revoke_access_token(ctx.token)
            raise authentication_failed()

    def _rate_limit(self, ctx: _Context, operation: Operation) -> None:
        decision = self._limits.acquire(operation.rate_limit_category, ctx.token)
        if decision is None:
            return
        ctx.headers.update(decision.headers())
        if not decision.allowed:
            raise ApiError(429, CODE_RATE_LIMITED, RATE_LIMITED)

    def _self_check(self, ctx: _Context, status: int, payload: Any) -> None:
        if not self._validate_responses:
            return
        if ctx.operation is not None:
            problem = ctx.operation.response_problem(status, payload)
        else:
            problem = first_problem(self._spec.error_validator, payload)
        if problem is not None:
            ctx.entry.response_problem = problem
            print(
                f"pinterest-api-emulator: RESPONSE VALIDATION ERROR for {ctx.entry.method} "
                f"{ctx.entry.path} -> {status}: {problem}",
                file=sys.stderr,
                flush=True,
            )
