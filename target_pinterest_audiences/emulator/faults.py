"""Fault injection: rules that make chosen requests fail, vanish or slow down.

A fault configuration has the same JSON shape at start-up (``--faults-json``,
``EmulatorConfig.faults``) and at run time (``POST /_emulator/faults``)::

    {
      "rules": [
        {"method": "PATCH", "path": "/customer_lists/\\\\d+$", "after": 2, "times": 1,
         "action": "error", "status": 503, "code": 0, "message": "Service unavailable",
         "headers": {"Retry-After": "1"}}
      ],
      "max_records_per_request": null,
      "rejected_records": []
    }

(``--faults-json`` also accepts a bare list of rules.) Rule fields:

* ``method``: HTTP method or ``"*"`` (default ``"*"``), case-insensitive;
* ``path``: regular expression searched (``re.search``, so anchor it if you
  need to) in the path after ``/v5``, without the query string (default: any);
* ``after``: let the first N matching requests through (default 0);
* ``times``: then apply to the next N matching requests; omitted or ``null``
  means every one after that;
* ``action``: ``error`` (needs ``status``; ``code`` defaults to 8 for 429 and to
  the status otherwise; optional ``message`` and ``headers``), ``drop``,
  ``drop_after_apply``, ``delay`` (needs ``seconds``) or ``expire_token``.

Faults are only considered for requests that already passed routing,
authentication, contract validation and the ad-account access check: an
invalid request is a 400 whatever the rules say. Every rule counts every
request it matches, even one another rule handled, and the first rule (in
list order) that is due is the one applied; so ``[{times: 1, error},
{after: 1, times: 1, drop}]`` fails the first matching request and drops
the second. A new configuration replaces the old one and its counters.

``max_records_per_request`` answers 413 to a customer-list create/PATCH with
more records; ``rejected_records`` answers 400 (naming how many records are
invalid, not which) to one containing any of them. Nothing is applied then.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft7Validator  # type: ignore[import-untyped,unused-ignore]

from .errors import CODE_PAYLOAD_TOO_LARGE, CODE_RATE_LIMITED, ApiError, invalid
from .spec import first_problem

ACTIONS = ("error", "drop", "drop_after_apply", "delay", "expire_token")

_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "method": {"type": "string", "pattern": r"^(\*|[A-Za-z]+)$"},
        "path": {"type": "string"},
        "after": {"type": "integer", "minimum": 0},
        "times": {"type": ["integer", "null"], "minimum": 0},
        "action": {"enum": list(ACTIONS)},
        "status": {"type": "integer", "minimum": 100, "maximum": 599},
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "headers": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
        "seconds": {"type": "number", "minimum": 0},
    },
    "required": ["action"],
    "additionalProperties": False,
    "allOf": [
        {
            "if": {"properties": {"action": {"const": "error"}}},
            "then": {"required": ["status"]},
        },
        {
            "if": {"properties": {"action": {"const": "delay"}}},
            "then": {"required": ["seconds"]},
        },
    ],
}

FAULTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rules": {"type": "array", "items": _RULE_SCHEMA},
        "max_records_per_request": {"type": ["integer", "null"], "minimum": 1},
        "rejected_records": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": False,
}
_FAULTS_VALIDATOR = Draft7Validator(FAULTS_SCHEMA)


class FaultConfigError(ValueError):
    """A fault configuration that does not have the documented shape."""


@dataclass(frozen=True)
class FaultAction:
    """The fault chosen for one request."""

    action: str
    status: int = 500
    code: int = 500
    message: str = "Emulator-injected error."
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def error(self) -> ApiError:
        """The answer for an ``error`` action."""
        return ApiError(self.status, self.code, self.message, self.headers)


@dataclass
class FaultRule:
    """One rule and how many requests it has matched and affected."""

    method: str
    path: re.Pattern[str]
    after: int
    times: int | None
    fault: FaultAction
    matched: int = 0
    applied: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultRule:
        """Build from the documented (already schema-checked) JSON shape."""
        try:
            path = re.compile(data.get("path", ""))
        except re.error as exc:
            raise FaultConfigError(f"invalid path regex {data.get('path')!r}: {exc}") from None
        status = int(data.get("status", 500))
        default_code = CODE_RATE_LIMITED if status == 429 else status
        fault = FaultAction(
            action=data["action"],
            status=status,
            code=int(data.get("code", default_code)),
            message=str(data.get("message", "Emulator-injected error.")),
            headers={str(k): str(v) for k, v in data.get("headers", {}).items()},
            seconds=float(data.get("seconds", 0.0)),
        )
        return cls(
            method=str(data.get("method", "*")).upper(),
            path=path,
            after=int(data.get("after", 0)),
            times=data.get("times"),
            fault=fault,
        )

    def to_json(self) -> dict[str, Any]:
        """The rule as configured, plus its ``matched``/``applied`` counters."""
        data: dict[str, Any] = {
            "method": self.method,
            "path": self.path.pattern,
            "after": self.after,
            "times": self.times,
            "action": self.fault.action,
            "matched": self.matched,
            "applied": self.applied,
        }
        if self.fault.action == "error":
            data.update(
                status=self.fault.status,
                code=self.fault.code,
                message=self.fault.message,
                headers=dict(self.fault.headers),
            )
        if self.fault.action == "delay":
            data["seconds"] = self.fault.seconds
        return data

    def matches(self, method: str, path: str) -> bool:
        """Whether the request is one this rule looks at."""
        return self.method in ("*", method) and self.path.search(path) is not None

    def due(self) -> bool:
        """Whether the request just counted in ``matched`` should get the fault."""
        if self.matched <= self.after:
            return False
        return self.times is None or self.applied < self.times


def parse_faults_json(text: str) -> dict[str, Any]:
    """Parse ``--faults-json``: a faults object or just a list of rules."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FaultConfigError(f"faults JSON does not parse: {exc}") from None
    if isinstance(data, list):
        return {"rules": data}
    if not isinstance(data, dict):
        raise FaultConfigError("faults JSON must be an object or a list of rules")
    return data


class FaultInjector:
    """The current fault configuration; thread-safe."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._max_records: int | None = None
        self._rejected: frozenset[str] = frozenset()
        self.configure(config or {})

    def configure(self, config: Mapping[str, Any]) -> None:
        """Replace rules and record limits (raises FaultConfigError if malformed)."""
        problem = first_problem(_FAULTS_VALIDATOR, config)
        if problem is not None:
            raise FaultConfigError(f"invalid fault configuration: {problem}")
        rules = [FaultRule.from_json(rule) for rule in config.get("rules", [])]
        with self._lock:
            self._rules = rules
            self._max_records = config.get("max_records_per_request")
            self._rejected = frozenset(config.get("rejected_records", []))

    def describe(self) -> dict[str, Any]:
        """The configuration in its JSON shape, with per-rule counters."""
        with self._lock:
            return {
                "rules": [rule.to_json() for rule in self._rules],
                "max_records_per_request": self._max_records,
                "rejected_records": sorted(self._rejected),
            }

    def pick(self, method: str, path: str) -> FaultAction | None:
        """Count the request against every matching rule; return the fault to apply."""
        chosen: FaultAction | None = None
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method.upper(), path):
                    continue
                rule.matched += 1
                if chosen is None and rule.due():
                    rule.applied += 1
                    chosen = rule.fault
        return chosen

    def check_records(self, records: Sequence[str]) -> None:
        """Raise the configured 413/400 for a batch of customer-list records."""
        with self._lock:
            max_records, rejected = self._max_records, self._rejected
        if max_records is not None and len(records) > max_records:
            raise ApiError(
                413,
                CODE_PAYLOAD_TOO_LARGE,
                f"Request payload too large: {len(records)} records sent, "
                f"at most {max_records} are accepted per request.",
            )
        if rejected:
            bad = sum(1 for record in records if record in rejected)
            if bad:
                raise invalid(f"Invalid request: {bad} of {len(records)} records are invalid.")
