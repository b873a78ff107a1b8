"""Helpers the end-to-end tests share: run the installed target like a user would."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from target_pinterest_audiences.emulator import Emulator

AD_ACCOUNT = "549755885175"
TOKEN = "emulator-access-token"
CLIENT_ID = "emulator-client-id"
CLIENT_SECRET = "emulator-client-secret"
REFRESH_TOKEN = "emulator-refresh-token"


def sha(text: str) -> str:
    """SHA-256 hex of an already-normalized identifier (computed independently)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def target_command() -> list[str]:
    """The installed console script, as a user would call it."""
    script = Path(sys.executable).parent / "target-pinterest-audiences"
    if script.exists():
        return [str(script)]
    found = shutil.which("target-pinterest-audiences")
    assert found, "target-pinterest-audiences is not installed (pip install -e .)"
    return [found]


def schema(
    stream: str, *properties: str, key_properties: list[str] | None = None
) -> dict[str, Any]:
    """A SCHEMA message whose properties are all strings except the booleans named 'flag:*'."""
    props: dict[str, Any] = {}
    for name in properties:
        if name.startswith("flag:"):
            props[name[5:]] = {"type": ["boolean", "null"]}
        else:
            props[name] = {"type": ["string", "null"]}
    return {
        "type": "SCHEMA",
        "stream": stream,
        "schema": {"type": "object", "properties": props},
        "key_properties": key_properties or [],
    }


def record(stream: str, **fields: Any) -> dict[str, Any]:
    """A RECORD message."""
    return {"type": "RECORD", "stream": stream, "record": fields}


def state(value: dict[str, Any]) -> dict[str, Any]:
    """A STATE message."""
    return {"type": "STATE", "value": value}


@dataclass
class Run:
    """What a user sees after one run of the target."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def state_lines(self) -> list[dict[str, Any]]:
        """Every stdout line parsed as JSON (stdout must carry only STATE)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def output(self) -> str:
        """Everything the process printed."""
        return self.stdout + self.stderr


def emulator_config(emulator: Emulator, **overrides: Any) -> dict[str, Any]:
    """A working config pointing at ``emulator``."""
    config: dict[str, Any] = {
        "ad_account_id": AD_ACCOUNT,
        "access_token": TOKEN,
        "api_url": emulator.url,
        "checkpoint_interval_seconds": 3600,
        # Fast: the shared emulator fixture lifts its rate limits (tests about pacing
        # remove these two to get the defaults).
        "max_write_requests_per_minute": 6000,
        "max_read_requests_per_minute": 6000,
    }
    config.update(overrides)
    return config


def run_target(
    tmp_path: Path,
    config: dict[str, Any],
    messages: Sequence[dict[str, Any] | str],
    *,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    max_file_bytes: int | None = None,
) -> Run:
    """Run the console script with ``config``, feeding ``messages`` on stdin.

    ``max_file_bytes`` limits the size of every file the process writes (``ulimit -f``):
    a write past it fails with ``OSError`` as on a full disk, for any user, without a mount.
    """
    config_path = tmp_path / f"config-{os.getpid()}-{len(list(tmp_path.iterdir()))}.json"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    lines = [m if isinstance(m, str) else json.dumps(m) for m in messages]
    completed = subprocess.run(
        [*target_command(), "--config", str(config_path), *(args or [])],
        input="\n".join(lines) + ("\n" if lines else ""),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
        preexec_fn=None if max_file_bytes is None else lambda: _limit_files(max_file_bytes),
    )
    return Run(completed.returncode, completed.stdout, completed.stderr)


def _limit_files(max_bytes: int) -> None:
    """In the child, before exec: files may not grow past ``max_bytes`` (Python ignores
    SIGXFSZ, so an oversized write raises instead of killing the process)."""
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


def lists_by_name(emulator: Emulator) -> dict[str, dict[str, Any]]:
    """The emulator's customer lists of our ad account, by name (names must be unique)."""
    lists = emulator.snapshot()["ad_accounts"][AD_ACCOUNT]["customer_lists"]
    by_name: dict[str, dict[str, Any]] = {}
    for item in lists:
        assert item["name"] not in by_name, f"two lists named {item['name']}"
        by_name[item["name"]] = item
    return by_name


def members_by_name(emulator: Emulator) -> dict[str, frozenset[str]]:
    """Final membership of every list, by list name."""
    return {name: emulator.members(item["id"]) for name, item in lists_by_name(emulator).items()}


def assert_contract_kept(emulator: Emulator) -> None:
    """Every request validated against Pinterest's spec and carried only SHA-256 hashes."""
    counters = emulator.counters()
    bad = [r for r in emulator.requests() if not r["valid"]]
    assert counters["invalid_requests"] == 0, bad
    assert counters["non_sha256_records"] == 0
    assert counters["response_validation_errors"] == 0
    assert counters["requests_with_ignored_query_parameters"] == 0


class StderrLines:
    """A running target's stderr, read line by line on a thread, to wait for a log line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process,))
        self._thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        for line in process.stderr or []:
            self._lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        """The first line (from here on) matching the regular expression ``pattern``."""
        while True:
            line = self._lines.get(timeout=timeout)
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def all(self, timeout: float = 30) -> str:
        """Everything the process wrote to stderr, once it has closed it (exited)."""
        self._thread.join(timeout=timeout)
        while not self._lines.empty():
            self.seen.append(self._lines.get_nowait())
        return "".join(self.seen)
