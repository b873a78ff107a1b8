"""The emulator's own control API under ``/_emulator/`` (no authentication).

Not part of Pinterest's API: it lets tests and CI scripts inspect the final
state and steer faults over HTTP when the emulator runs as a subprocess.

==========================================  =========================================
``GET  /_emulator/state``                   ad accounts (lists, audiences), counters,
                                            fault configuration, settings
``GET  /_emulator/customer_lists/{id}/members``  ``{"members": [sorted records]}``
``GET  /_emulator/requests``                ``{"requests": [log entries]}``
``GET  /_emulator/faults``                  current fault configuration + counters
``POST /_emulator/faults``                  replace fault configuration
``POST /_emulator/reset``                   back to the start-up state
``POST /_emulator/expire_tokens``           invalidate every current access token
==========================================  =========================================

Errors use the Pinterest error shape too (404 unknown route or list, 405,
400 malformed fault configuration).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .dispatch import Outcome
from .faults import FaultConfigError

ADMIN_PREFIX = "/_emulator"
_MEMBERS = re.compile(rf"{ADMIN_PREFIX}/customer_lists/([^/]+)/members")


class AdminTarget(Protocol):
    """What the admin API needs from the emulator."""

    def snapshot(self) -> dict[str, Any]:
        """The ``/_emulator/state`` document."""

    def members(self, list_id: str) -> frozenset[str]:
        """Members of a list; KeyError if unknown."""

    def requests(self) -> list[dict[str, Any]]:
        """The request log."""

    def fault_config(self) -> dict[str, Any]:
        """Current faults with counters."""

    def configure_faults(self, config: Mapping[str, Any]) -> None:
        """Replace the fault configuration."""

    def reset(self) -> None:
        """Back to the start-up state."""

    def expire_tokens(self) -> int:
        """Invalidate all access tokens; return how many."""


def _error(status: int, message: str) -> Outcome:
    return Outcome.json(status, {"code": status, "message": message})


class AdminApi:
    """Routes ``/_emulator/...`` requests to the emulator."""

    def __init__(self, target: AdminTarget) -> None:
        self._target = target

    def dispatch(self, method: str, target: str, body: bytes) -> Outcome:
        """Answer one admin request."""
        path = target.partition("?")[0].rstrip("/")
        gets: dict[str, Callable[[], Any]] = {
            f"{ADMIN_PREFIX}/state": lambda: self._target.snapshot(),
            f"{ADMIN_PREFIX}/requests": lambda: {"requests": self._target.requests()},
            f"{ADMIN_PREFIX}/faults": lambda: self._target.fault_config(),
        }
        posts: dict[str, Callable[[bytes], Outcome]] = {
            f"{ADMIN_PREFIX}/reset": self._reset,
            f"{ADMIN_PREFIX}/faults": self._faults,
            f"{ADMIN_PREFIX}/expire_tokens": self._expire_tokens,
        }
        members = _MEMBERS.fullmatch(path)
        if members is not None:
            if method != "GET":
                return _error(405, "Method not allowed")
            try:
                records = self._target.members(members.group(1))
            except KeyError:
                return _error(404, f"Customer list {members.group(1)} not found.")
            return Outcome.json(200, {"members": sorted(records)})
        if path not in gets and path not in posts:
            return _error(404, f"Path {path} not found.")
        if method == "GET" and path in gets:
            return Outcome.json(200, gets[path]())
        if method == "POST" and path in posts:
            return posts[path](body)
        return _error(405, "Method not allowed")

    def _reset(self, body: bytes) -> Outcome:
        self._target.reset()
        return Outcome.json(200, {"reset": True})

    def _expire_tokens(self, body: bytes) -> Outcome:
        return Outcome.json(200, {"expired": self._target.expire_tokens()})

    def _faults(self, body: bytes) -> Outcome:
        try:
            config = json.loads(body.decode("utf-8") or "{}")
        except (UnicodeDecodeError, ValueError):
            return _error(400, "Fault configuration is not valid JSON.")
        if not isinstance(config, dict):
            return _error(400, "Fault configuration must be a JSON object.")
        try:
            self._target.configure_faults(config)
        except FaultConfigError as exc:
            return _error(400, str(exc))
        return Outcome.json(200, self._target.fault_config())
