"""Crash safety: kill the target mid-run, re-run from the last STATE, get exact membership.

STATE is at-least-once: it is emitted only after Pinterest acknowledged every change read
before it. So after a SIGKILL the tap resumes from the last emitted bookmark, some changes
are sent twice, and because ADD and REMOVE are idempotent the final membership is exact.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from target_pinterest_audiences.emulator import Emulator, EmulatorConfig

from support import (
    assert_contract_kept,
    emulator_config,
    members_by_name,
    record,
    schema,
    sha,
    state,
    target_command,
)

# Every test here runs the installed console script as a subprocess.
pytestmark = pytest.mark.slow

CHUNKS = 30
PER_CHUNK = 12


def tap_output() -> list[tuple[int, list[dict[str, Any]]]]:
    """What a tap would emit: chunks of membership changes, each followed by its bookmark."""
    rng = random.Random(7)
    chunks = []
    for position in range(1, CHUNKS + 1):
        messages = [
            record(
                "members",
                email=f"user{rng.randrange(60):02d}@example.com",
                audience_key=rng.choice(["vip", "lapsed"]),
                in_audience=rng.random() < 0.7,
            )
            for _ in range(PER_CHUNK)
        ]
        messages.append(state({"position": position}))
        chunks.append((position, messages))
    return chunks


def expected_membership() -> dict[str, set[str]]:
    """Apply every change in order: the last change for a user in an audience wins."""
    members: dict[str, set[str]] = {}
    for _, messages in tap_output():
        for message in messages:
            if message["type"] != "RECORD":
                continue
            fields = message["record"]
            audience = members.setdefault(fields["audience_key"], set())
            if fields["in_audience"]:
                audience.add(sha(fields["email"]))
            else:
                audience.discard(sha(fields["email"]))
    return members


SCHEMA = schema("members", "email", "audience_key", "flag:in_audience")


class RunningTarget:
    """The console script fed line by line, as from a slow tap; stdout collected live."""

    def __init__(self, config_path: Path) -> None:
        self.process = subprocess.Popen(
            [*target_command(), "--config", str(config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.states: list[dict[str, Any]] = []
        self.stderr = ""
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.states.append(json.loads(line))

    def send(self, messages: list[dict[str, Any]]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("".join(json.dumps(m) + "\n" for m in messages))
        self.process.stdin.flush()

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()
        return code


def write_config(tmp_path: Path, emulator: Emulator, **overrides: Any) -> Path:
    path = tmp_path / "config.json"
    config = emulator_config(
        emulator, **{"records_per_request": 5, "checkpoint_interval_seconds": 1, **overrides}
    )
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def test_sigkill_mid_run_then_rerun_from_last_state_converges(tmp_path: Path) -> None:
    with Emulator(EmulatorConfig.without_rate_limits(latency_ms=40)) as emulator:
        config_path = write_config(tmp_path, emulator)
        chunks = tap_output()

        target = RunningTarget(config_path)
        target.send([SCHEMA])
        deadline = time.monotonic() + 60
        sent = 0
        # Feed slowly until the target has emitted two checkpoints, then kill it hard while
        # it still has unacknowledged changes and requests in flight.
        while len(target.states) < 2 and time.monotonic() < deadline and sent < CHUNKS - 5:
            target.send(chunks[sent][1])
            sent += 1
            time.sleep(0.12)
        target.send(chunks[sent][1][:6])  # half a chunk: read, not yet acknowledged
        time.sleep(0.05)
        target.process.send_signal(signal.SIGKILL)
        target.wait()
        assert len(target.states) >= 2, "the target emitted no checkpoint before the kill"

        # The tap resumes after the last bookmark the target confirmed.
        resume_after = target.states[-1]["position"]
        assert resume_after < sent
        replay = [SCHEMA]
        for position, messages in chunks:
            if position > resume_after:
                replay += messages
        rerun = subprocess.run(
            [*target_command(), "--config", str(config_path)],
            input="".join(json.dumps(m) + "\n" for m in replay),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

        assert rerun.returncode == 0, rerun.stderr
        assert json.loads(rerun.stdout.splitlines()[-1]) == {"position": CHUNKS}
        assert members_by_name(emulator) == expected_membership()
        assert_contract_kept(emulator)


def test_every_emitted_state_covers_only_acknowledged_changes(tmp_path: Path) -> None:
    """When a STATE appears, Pinterest already holds every change made before its bookmark.

    Checked live, each time a STATE line shows up: for every (audience, user) whose last
    change up to the bookmark was not overtaken by a later chunk already fed, the
    emulator's membership must match that change.
    """
    chunks = tap_output()
    with Emulator(EmulatorConfig.without_rate_limits(latency_ms=20)) as emulator:
        config_path = write_config(tmp_path, emulator)
        target = RunningTarget(config_path)
        target.send([SCHEMA])
        checked = 0
        for sent, (_, messages) in enumerate(chunks, start=1):
            target.send(messages)
            time.sleep(0.1)
            while checked < len(target.states):
                covered = target.states[checked]["position"]
                _assert_acknowledged(emulator, chunks, covered, sent)
                checked += 1
        assert target.process.stdin is not None
        target.process.stdin.close()
        assert target.wait() == 0, target.stderr
        assert checked >= 2, "too few checkpoints to test anything"
        assert members_by_name(emulator) == expected_membership()


def _last_changes(chunks: list[tuple[int, list[dict[str, Any]]]]) -> dict[tuple[str, str], bool]:
    last: dict[tuple[str, str], bool] = {}
    for _, messages in chunks:
        for message in messages:
            if message["type"] == "RECORD":
                fields = message["record"]
                last[(fields["audience_key"], sha(fields["email"]))] = fields["in_audience"]
    return last


def _assert_acknowledged(
    emulator: Emulator, chunks: list[tuple[int, list[dict[str, Any]]]], covered: int, sent: int
) -> None:
    before = _last_changes(chunks[:covered])
    overtaken = set(_last_changes(chunks[covered:sent]))
    members = members_by_name(emulator)
    for (audience, user), member in before.items():
        if (audience, user) not in overtaken:
            assert (user in members.get(audience, set())) == member, (audience, covered)


@pytest.mark.parametrize("healthy", [True, False], ids=["drain-succeeds", "drain-fails"])
def test_sigterm_drains_and_exits_non_zero_only_when_the_drain_fails(
    emulator: Emulator, tmp_path: Path, healthy: bool
) -> None:
    if not healthy:  # every write fails; reads work, so the records are read normally
        writes = [
            {"method": method, "path": "customer_lists", "action": "error", "status": 503}
            for method in ("POST", "PATCH")
        ]
        emulator.configure_faults({"rules": writes})
    config_path = write_config(
        tmp_path, emulator, checkpoint_interval_seconds=3600, max_retry_wait_seconds=1
    )
    target = RunningTarget(config_path)
    _, messages = tap_output()[0]
    target.send([SCHEMA, *messages])
    time.sleep(1.5)  # the records are read; stdin stays open, as with a tap still running

    target.process.send_signal(signal.SIGTERM)
    code = target.wait()

    if healthy:
        assert code == 0, target.stderr
        assert target.states == [{"position": 1}]
        first_chunk = {
            audience: members for audience, members in _apply(messages).items() if members
        }
        assert {k: v for k, v in members_by_name(emulator).items() if v} == first_chunk
    else:
        assert code != 0
        assert target.states == []
        assert "Stopping after signal" in target.stderr
    assert "Traceback" not in target.stderr


def _apply(messages: list[dict[str, Any]]) -> dict[str, set[str]]:
    members: dict[str, set[str]] = {}
    for message in messages:
        if message["type"] == "RECORD":
            fields = message["record"]
            audience = members.setdefault(fields["audience_key"], set())
            (audience.add if fields["in_audience"] else audience.discard)(sha(fields["email"]))
    return members


def test_sigterm_while_a_request_waits_for_a_slot_loses_nothing(tmp_path: Path) -> None:
    """The signal lands while the reading thread waits for a free request slot.

    The target finishes the record in hand, stops reading, and delivers every record it
    read (some had left the pending set but not reached Pinterest). It confirms the STATE
    after record 5 only if it read it.
    """
    with Emulator(EmulatorConfig.without_rate_limits(latency_ms=1500)) as emulator:
        config_path = write_config(
            tmp_path,
            emulator,
            records_per_request=2,
            max_parallel_requests=1,
            checkpoint_interval_seconds=3600,
        )
        emails = [f"slow{n}@example.com" for n in range(1, 7)]
        target = RunningTarget(config_path)
        target.send(
            [SCHEMA]
            + [record("members", email=e, audience_key="vip") for e in emails[:5]]
            + [state({"position": 5})]
            + [record("members", email=emails[5], audience_key="vip")]
        )
        # The list lookup (1.5 s) is answered, so the create is in flight and the next
        # requests wait for a slot. (A fixed sleep raced the target's start-up on a busy
        # machine: the signal could land during the lookup, before record 3 was read.)
        deadline = time.monotonic() + 30
        while not any(r["method"] == "GET" for r in emulator.requests()):
            assert time.monotonic() < deadline, "the target never looked its lists up"
            time.sleep(0.05)
        time.sleep(0.3)

        target.process.send_signal(signal.SIGTERM)
        code = target.wait(timeout=60)

        assert code == 0, target.stderr
        read = int(re.search(r"'members': (\d+) records read", target.stderr)[1])  # type: ignore[index]
        assert read >= 3
        assert target.states == ([{"position": 5}] if read == 6 else [])
        assert members_by_name(emulator) == {"vip": {sha(e) for e in emails[:read]}}
        assert "Traceback" not in target.stderr
