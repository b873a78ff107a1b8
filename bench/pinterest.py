"""Benchmark (3): the installed target end to end against the emulator, then check it.

A throughput number is only worth reporting for a correct run, so every run is verified:
exit code 0, no request the emulator found invalid, only SHA-256 digests received, and
every customer list holding exactly what the generator says it should.

It also measures API efficiency: per list, write requests against the fewest that could
carry the identifiers Pinterest received, ``ceil(added / records_per_request) +
ceil(removed / records_per_request)`` (ADD and REMOVE cannot share a request).
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.emulator import ACCESS_TOKEN, AD_ACCOUNT_ID, EmulatorUsage, running_emulator
from bench.generate import Expected
from bench.measure import ProcessRun, bench_env, run_measured, tail

RECORDS_PER_REQUEST = 1900
"""The target's default ``records_per_request`` (not overridden by the benchmark)."""
_WRITE_METHODS = frozenset({"POST", "PATCH"})


@dataclass(frozen=True)
class TargetSettings:
    """The settings the benchmark gives the target on top of its defaults."""

    # Zero-latency runs measure the target's own cost: the ceilings at their maximum (the
    # universal 100 per second; every request still keeps the target's universal pace, 90
    # per second) against an emulator with its limits lifted. Latency mode
    # keeps the target's defaults (None) against Pinterest's limits.
    max_write_requests_per_minute: float | None = 6000.0
    max_read_requests_per_minute: float | None = 6000.0
    max_parallel_requests: int | None = None  # None: the target's default

    def config(self, api_url: str) -> dict[str, Any]:
        """The target's config file (all other settings stay at their defaults)."""
        config: dict[str, Any] = {
            "api_url": api_url,
            "ad_account_id": AD_ACCOUNT_ID,
            "access_token": ACCESS_TOKEN,
        }
        for key in (
            "max_write_requests_per_minute",
            "max_read_requests_per_minute",
            "max_parallel_requests",
        ):
            value = getattr(self, key)
            if value is not None:
                config[key] = value
        return config

    def describe(self) -> dict[str, Any]:
        """What was overridden, without the token."""
        return {
            key: value for key, value in self.config("<emulator>").items() if key != "access_token"
        }


@dataclass
class ListEfficiency:
    """One customer list: what it holds, what was sent, how many requests it took."""

    name: str
    list_id: str
    members: int
    expected_members: int
    added: int
    removed: int
    add_requests: int
    remove_requests: int

    @property
    def requests(self) -> int:
        """Write requests to this list (create + PATCHes)."""
        return self.add_requests + self.remove_requests

    @property
    def ideal_requests(self) -> int:
        """The fewest requests that could carry what was sent."""
        return math.ceil(self.added / RECORDS_PER_REQUEST) + math.ceil(
            self.removed / RECORDS_PER_REQUEST
        )


@dataclass
class EndToEnd:
    """One verified end-to-end run."""

    run: ProcessRun
    emulator: EmulatorUsage
    settings: TargetSettings
    latency_ms: float
    write_limit_per_minute: int | None
    lists: list[ListEfficiency] = field(default_factory=list)
    write_requests: int = 0
    rate_limited_writes: int = 0
    other_write_requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    state_messages: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the run was correct (timing plays no part)."""
        return not self.problems

    def efficiency(self) -> float | None:
        """List write requests / ideal, over all lists (1.0 is perfect)."""
        ideal = sum(item.ideal_requests for item in self.lists)
        return sum(item.requests for item in self.lists) / ideal if ideal else None

    def to_json(self) -> dict[str, Any]:
        """Everything measured, as plain JSON."""
        return {
            "process": self.run.to_json(),
            "emulator": asdict(self.emulator),
            "settings": self.settings.describe(),
            "latency_ms": self.latency_ms,
            "write_limit_per_minute": self.write_limit_per_minute,
            "write_requests": self.write_requests,
            "rate_limited_writes": self.rate_limited_writes,
            "other_write_requests": self.other_write_requests,
            "http_statuses": self.statuses,
            "state_messages": self.state_messages,
            "api_efficiency": self.efficiency(),
            "lists": [
                {**asdict(item), "requests": item.requests, "ideal_requests": item.ideal_requests}
                for item in self.lists
            ],
            "ok": self.ok,
            "problems": self.problems,
        }


def target_command() -> list[str]:
    """The installed console script, next to the interpreter running the benchmark."""
    script = Path(sys.executable).parent / "target-pinterest-audiences"
    if not script.exists():
        msg = f"{script} not found: run the benchmark with the project's venv python"
        raise SystemExit(msg)
    return [str(script)]


def run_end_to_end(
    stream: Path,
    expected: Expected,
    workdir: Path,
    *,
    label: str,
    emulator_mode: str,
    settings: TargetSettings,
    latency_ms: float = 0.0,
    write_limit_per_minute: int | None = None,
) -> EndToEnd:
    """Sync ``stream`` into a fresh emulator with the installed target, then verify."""
    with running_emulator(
        emulator_mode,
        latency_ms=latency_ms,
        write_limit_per_minute=write_limit_per_minute,
        log_path=workdir / f"{label}.emulator.log",
    ) as emulator:
        config_path = workdir / f"{label}.config.json"
        config_path.write_text(json.dumps(settings.config(emulator.url)), encoding="utf-8")
        config_path.chmod(0o600)
        run = run_measured(
            [*target_command(), "--config", str(config_path)],
            stdin=stream,
            output_prefix=workdir / label,
            cwd=workdir,
            env=bench_env(),
        )
        result = EndToEnd(
            run=run,
            emulator=emulator.usage(),
            settings=settings,
            latency_ms=latency_ms,
            write_limit_per_minute=write_limit_per_minute,
        )
        if run.returncode != 0:
            result.problems.append(
                f"target exited {run.returncode}; stderr ends:\n{tail(run.stderr)}"
            )
        _verify(result, expected, emulator.admin)
    result.state_messages = sum(
        1 for line in run.stdout.read_text(encoding="utf-8").splitlines() if line.strip()
    )
    if expected.states and not result.state_messages and run.returncode == 0:
        result.problems.append("the input carried STATE messages but the target emitted none")
    return result


def _verify(result: EndToEnd, expected: Expected, admin: Any) -> None:
    state = admin("state")
    counters = state["counters"]
    for name in ("invalid_requests", "response_validation_errors", "non_sha256_records"):
        if counters.get(name):
            result.problems.append(f"emulator {name} = {counters[name]} (expected 0)")
    result.statuses = counters.get("requests_by_status", {})

    log = admin("requests")["requests"]
    attempts = [
        entry
        for entry in log
        if entry["method"] in _WRITE_METHODS and "/oauth/" not in entry["path"]
    ]
    # Only accepted writes count against the budget; 429s are reported on their own.
    writes = [entry for entry in attempts if 200 <= (entry.get("status") or 0) < 300]
    result.write_requests = len(writes)
    result.rate_limited_writes = sum(1 for entry in attempts if entry.get("status") == 429)
    if len(log) >= counters.get("total_requests", 0):
        remove_requests = Counter(
            entry["path"].rsplit("/", 1)[1]
            for entry in writes
            if entry.get("operation_type") == "REMOVE"
        )
    else:  # the log was truncated; fall back to counting every PATCH batch as an add
        result.problems.append("emulator request log truncated; ADD/REMOVE split unknown")
        remove_requests = Counter()

    lists = state["ad_accounts"][AD_ACCOUNT_ID]["customer_lists"]
    by_name = {item["name"]: item for item in lists}
    if len(by_name) != len(lists):
        result.problems.append("two customer lists share a name")
    for extra in sorted(set(by_name) - set(expected.audiences())):
        result.problems.append(f"unexpected customer list {extra!r}")
    list_writes = 0
    for audience in expected.audiences():
        wanted = expected.members(audience)
        item = by_name.get(audience)
        if item is None:
            if wanted:
                result.problems.append(
                    f"no customer list for {audience!r} ({len(wanted)} members expected)"
                )
            continue
        members = set(admin(f"customer_lists/{item['id']}/members")["members"])
        if members != wanted:
            result.problems.append(
                f"list {audience!r}: {len(wanted - members)} expected members missing, "
                f"{len(members - wanted)} unexpected"
            )
        removes = remove_requests[item["id"]]
        result.lists.append(
            ListEfficiency(
                name=audience,
                list_id=item["id"],
                members=len(members),
                expected_members=len(wanted),
                added=item["num_uploaded_user_records"],
                removed=item["num_removed_user_records"],
                add_requests=item["num_batches"] - removes,
                remove_requests=removes,
            )
        )
        list_writes += item["num_batches"]
    result.other_write_requests = result.write_requests - list_writes
