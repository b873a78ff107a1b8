"""Benchmark of the ledger modes: mirror snapshots and upsert CDC batches, verified.

``python -m bench.ledgers --records N`` runs two scenarios, each against one emulator (its
own process, rate limits lifted: the target's own work is measured) and one ledger that
persist across the scenario's runs:

- **mirror**: a first sync of N members (one email each, in six audiences), then the next
  day's snapshot with 1% churn (0.5% of N leave, as many new ones join), then that
  snapshot again unchanged;
- **upsert**: an initial load of N keyed rows, then a CDC batch of N/10 changes: a third
  change a row's email, a third move a row to another audience, a third are key-only
  deletes (``_sdc_deleted_at``), as a log-based tap sends them; then a batch of N/100
  such changes to other rows, a day's changes of a large table.

Each run reads its own generated file; the floor (``bench.floor``: stdlib JSON, trim, case,
SHA-256) reads the same file. Reported per run: wall seconds of both (start-up included),
their ratio (floor / target: 1.0 would be as fast as the floor), the target's peak RSS, and
its write requests against the fewest that could carry the changes, per list
``ceil(adds / 1900) + ceil(removes / 1900)``. Every run is verified: exit code 0, no request
the emulator found invalid, and every list holding exactly the expected members.
Nothing fails on time; the exit status is 1 only if a run was incorrect.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.emulator import ACCESS_TOKEN, AD_ACCOUNT_ID, RunningEmulator, running_emulator
from bench.measure import (
    ProcessRun,
    bench_env,
    compile_bytecode,
    machine_info,
    run_measured,
    tail,
    working_directory,
)
from bench.pinterest import RECORDS_PER_REQUEST, target_command
from bench.report import table
from bench.run import positive_int

AUDIENCES = ("newsletter", "cart", "vip", "orders", "app", "winback")
CHURN = 0.01
CDC_SHARES = (0.1, 0.01)
"""The CDC batches after the initial load, as shares of N: a large one, then a daily one."""
CDC_LABELS = ("N/10", "N/100")
_PERMUTE = 1_000_003  # a prime: i -> i * P mod N visits rows in a scattered, distinct order
_STREAM = "public-users"


def email(n: int, *, new: bool = False) -> str:
    """User ``n``'s email as the source spells it (a third not in canonical form)."""
    local = f"{'new' if new else 'user'}{n}"
    return f" {local.upper()}@Example.com" if n % 3 == 0 else f"{local}@example.com"


def digest(n: int, *, new: bool = False) -> str:
    """What Pinterest must hold for that email (computed here, not by the target)."""
    local = f"{'new' if new else 'user'}{n}"
    return hashlib.sha256(f"{local}@example.com".encode()).hexdigest()


def audience(n: int, shift: int = 0) -> str:
    return AUDIENCES[(n + shift) % len(AUDIENCES)]


@dataclass
class Step:
    """One run of a scenario: its input, what the lists must hold after it, the minimum
    write requests, and what was measured."""

    name: str
    records: int
    expected: Callable[[], dict[str, set[str]]]
    changes: dict[str, tuple[int, int]]
    """Per audience, (identifiers added, removed) by this run: what the requests must carry."""
    floor: ProcessRun | None = None
    target: ProcessRun | None = None
    writes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def minimum_writes(self) -> int:
        return sum(
            math.ceil(added / RECORDS_PER_REQUEST) + math.ceil(removed / RECORDS_PER_REQUEST)
            for added, removed in self.changes.values()
        )

    @property
    def ratio(self) -> float:
        assert self.floor is not None
        assert self.target is not None
        return self.floor.wall_seconds / self.target.wall_seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "records": self.records,
            "floor": self.floor.to_json() if self.floor else None,
            "target": self.target.to_json() if self.target else None,
            "ratio": round(self.ratio, 3) if self.floor and self.target else None,
            "write_requests": self.writes,
            "minimum_write_requests": self.minimum_writes,
            "problems": self.problems,
        }


def _write(path: Path, schema: dict[str, Any], records: Iterator[dict[str, Any]]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"type": "SCHEMA", "stream": _STREAM, **schema}) + "\n")
        for record in records:
            out.write(json.dumps({"type": "RECORD", "stream": _STREAM, "record": record}) + "\n")
            count += 1
            if count % 10_000 == 0:
                out.write(json.dumps({"type": "STATE", "value": {"position": count}}) + "\n")
        out.write(json.dumps({"type": "STATE", "value": {"position": count}}) + "\n")
    return count


_MIRROR_SCHEMA = {
    "schema": {
        "type": "object",
        "properties": {"email": {"type": "string"}, "audience_key": {"type": "string"}},
    },
    "key_properties": [],
}
_UPSERT_SCHEMA = {
    "schema": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "email": {"type": ["string", "null"]},
            "audience_key": {"type": ["string", "null"]},
            "_sdc_deleted_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "key_properties": ["id"],
}


def mirror_steps(n: int, workdir: Path) -> list[tuple[Step, Path]]:
    """Three snapshots: first sync, 1% churn, unchanged."""
    leave = new = max(1, int(n * CHURN / 2))

    def snapshot(members: range) -> Iterator[dict[str, Any]]:
        for i in members:
            yield {"email": email(i), "audience_key": audience(i)}

    def members(members: range) -> Callable[[], dict[str, set[str]]]:
        def expected() -> dict[str, set[str]]:
            lists: dict[str, set[str]] = {name: set() for name in AUDIENCES}
            for i in members:
                lists[audience(i)].add(digest(i))
            return lists

        return expected

    def counts(users: range) -> Counter[str]:
        return Counter(audience(i) for i in users)

    first, later = range(n), range(leave, n + new)
    joined, left = counts(range(n, n + new)), counts(range(leave))
    steps = []
    for name, users, changes in (
        ("mirror: first sync", first, {a: (c, 0) for a, c in counts(first).items()}),
        ("mirror: 1% churn", later, {a: (joined[a], left[a]) for a in AUDIENCES}),
        ("mirror: unchanged", later, {}),
    ):
        path = workdir / f"{name.split(': ')[1].replace(' ', '-').replace('%', '')}.jsonl"
        records = _write(path, _MIRROR_SCHEMA, snapshot(users))
        steps.append((Step(name, records, members(users), changes), path))
    return steps


def upsert_steps(n: int, workdir: Path) -> list[tuple[Step, Path]]:
    """An initial load of N rows, then CDC batches of N/10 and N/100 changes (other rows)."""
    sizes = [max(3, int(n * share)) for share in CDC_SHARES]
    order = [(j * _PERMUTE) % n for j in range(min(n, sum(sizes)))]  # distinct (P is prime)
    batches = [order[sum(sizes[:k]) : sum(sizes[: k + 1])] for k in range(len(sizes))]

    def after(done: int) -> Callable[[], dict[str, set[str]]]:
        """The lists after the initial load and the first ``done`` CDC batches (computed
        when the run is verified: at 10M rows, each is about a GB)."""

        def expected() -> dict[str, set[str]]:
            lists: dict[str, set[str]] = {name: set() for name in AUDIENCES}
            for i in range(n):
                lists[audience(i)].add(digest(i))
            for changed in batches[:done]:
                for j, i in enumerate(changed):
                    lists[audience(i)].discard(digest(i))
                    if j % 3 == 0:
                        lists[audience(i)].add(digest(i, new=True))
                    elif j % 3 == 1:
                        lists[audience(i, 1)].add(digest(i))
            return lists

        return expected

    initial_path = workdir / "initial.jsonl"
    steps = [
        (
            Step(
                "upsert: initial load",
                _write(initial_path, _UPSERT_SCHEMA, _initial_rows(n)),
                after(0),
                {a: (c, 0) for a, c in Counter(audience(i) for i in range(n)).items()},
            ),
            initial_path,
        )
    ]
    for number, (changed, label) in enumerate(zip(batches, CDC_LABELS, strict=True)):
        adds: Counter[str] = Counter()
        removes: Counter[str] = Counter()
        for j, i in enumerate(changed):
            removes[audience(i)] += 1
            if j % 3 == 0:
                adds[audience(i)] += 1
            elif j % 3 == 1:
                adds[audience(i, 1)] += 1
        path = workdir / f"cdc-{number}.jsonl"
        step = Step(
            f"upsert: CDC batch ({label})",
            _write(path, _UPSERT_SCHEMA, _cdc_rows(changed)),
            after(number + 1),
            {a: (adds[a], removes[a]) for a in AUDIENCES},
        )
        steps.append((step, path))
    return steps


def _initial_rows(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"id": i, "email": email(i), "audience_key": audience(i)}


def _cdc_rows(changed: list[int]) -> Iterator[dict[str, Any]]:
    """A third change the row's email, a third move it, a third delete it (key only)."""
    for j, i in enumerate(changed):
        kind = j % 3
        if kind == 0:
            yield {"id": i, "email": email(i, new=True), "audience_key": audience(i)}
        elif kind == 1:
            yield {"id": i, "email": email(i), "audience_key": audience(i, 1)}
        else:
            yield {"id": i, "_sdc_deleted_at": "2026-12-01T00:00:00+00:00"}


def _verify(step: Step, emulator: RunningEmulator, since: int) -> int:
    """Check the emulator after a run; return the request log's length now."""
    state = emulator.admin("state")
    for name in ("invalid_requests", "response_validation_errors", "non_sha256_records"):
        if state["counters"].get(name):
            step.problems.append(f"emulator {name} = {state['counters'][name]}")
    log = emulator.admin("requests")["requests"]
    step.writes = sum(
        1
        for entry in log[since:]
        if entry["method"] in ("POST", "PATCH")
        and "/customer_lists" in entry["path"]
        and entry["status"] == 200
    )
    items = state["ad_accounts"][AD_ACCOUNT_ID]["customer_lists"]
    lists = {item["name"]: item for item in items}
    if len(lists) != len(items):
        step.problems.append(f"{len(items)} lists for {len(lists)} names")
    for name, wanted in step.expected().items():
        item = lists.get(name)
        held = (
            set(emulator.admin(f"customer_lists/{item['id']}/members")["members"])
            if item
            else set()
        )
        if held != wanted:
            step.problems.append(
                f"list {name!r}: {len(wanted - held)} expected members missing, "
                f"{len(held - wanted)} unexpected; this run sent "
                f"{sent_to_list(log[since:], item['id'] if item else None)}"
            )
    return len(log)


def sent_to_list(entries: list[dict[str, Any]], list_id: str | None) -> str:
    """What a run's requests carried to one list, for the report of a wrong result."""
    carried: Counter[str] = Counter()
    for entry in entries:
        if list_id is not None and entry["path"].endswith(f"/customer_lists/{list_id}"):
            kind = entry.get("operation_type") or entry["method"]
            carried[f"{kind} {entry['status']}"] += entry.get("record_count") or 0
    return ", ".join(f"{count} records in {kind}" for kind, count in sorted(carried.items()))


def run_scenario(
    label: str, steps: list[tuple[Step, Path]], workdir: Path, config: dict[str, Any]
) -> list[Step]:
    """Run the steps in order against one emulator and one ledger."""
    with running_emulator(
        "process", latency_ms=0.0, write_limit_per_minute=None, log_path=workdir / f"{label}.emu"
    ) as emulator:
        # A kept --workdir may hold the ledger of an earlier run, which this new emulator
        # knows nothing about: start from an empty one, as the measured runs assume.
        for stale in workdir.glob(f"{label}.ledger.sqlite3*"):
            stale.unlink()
        config_path = workdir / f"{label}.config.json"
        config_path.write_text(
            json.dumps(
                {
                    **config,
                    "api_url": emulator.url,
                    "ad_account_id": AD_ACCOUNT_ID,
                    "access_token": ACCESS_TOKEN,
                    "ledger_path": str(workdir / f"{label}.ledger.sqlite3"),
                    # The emulator's limits are lifted: measure the target, not pacing.
                    "max_write_requests_per_minute": 6000,
                    "max_read_requests_per_minute": 6000,
                }
            ),
            encoding="utf-8",
        )
        config_path.chmod(0o600)
        since = 0
        for number, (step, path) in enumerate(steps):
            prefix = workdir / f"{label}-{number}"
            step.floor = run_measured(
                [sys.executable, "-m", "bench.floor"],
                stdin=path,
                output_prefix=prefix.with_name(prefix.name + "-floor"),
                cwd=workdir,
                env=bench_env(),
            )
            step.target = run_measured(
                [*target_command(), "--config", str(config_path)],
                stdin=path,
                output_prefix=prefix,
                cwd=workdir,
                env=bench_env(),
            )
            if step.target.returncode != 0:
                step.problems.append(
                    f"target exited {step.target.returncode}:\n{tail(step.target.stderr)}"
                )
            since = _verify(step, emulator, since)
    return [step for step, _ in steps]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledgers", description=__doc__)
    parser.add_argument("--records", type=positive_int, default=100_000, metavar="N")
    parser.add_argument("--modes", default="mirror,upsert", help="comma-separated: mirror, upsert")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    parser.add_argument("--workdir", type=Path, default=None, metavar="DIR")
    args = parser.parse_args(argv)
    modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = sorted(set(modes) - {"mirror", "upsert"})
    if unknown or not modes:
        parser.error(f"--modes: choose from mirror, upsert (not {', '.join(unknown) or 'nothing'})")
    if args.records < 3:
        parser.error("--records: at least 3 (the CDC batch changes a third of N/10 rows each way)")
    compile_bytecode()
    info = machine_info()
    results: list[Step] = []
    with working_directory(args.workdir, "bench-ledgers-") as workdir:
        if "mirror" in modes:
            results += run_scenario(
                "mirror",
                mirror_steps(args.records, workdir),
                workdir,
                {"sync_mode": "mirror", "max_removal_fraction": 1.0},
            )
        if "upsert" in modes:
            results += run_scenario(
                "upsert", upsert_steps(args.records, workdir), workdir, {"sync_mode": "upsert"}
            )
    print(f"machine:   {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    print(f"git:       {info['git_commit']}{' (dirty)' if info['git_dirty'] else ''}")
    print(f"load:      {' '.join(map(str, info['load_average_at_start']))} at start")
    print(f"records:   N = {args.records:,}\n")
    rows = [
        [
            step.name,
            f"{step.records:,}",
            f"{step.floor.wall_seconds:.2f}" if step.floor else "-",
            f"{step.target.wall_seconds:.2f}" if step.target else "-",
            f"{step.ratio:.3f}" if step.floor and step.target else "-",
            f"{step.target.peak_rss_mib:.1f}" if step.target else "-",
            f"{step.writes} / {step.minimum_writes}",
            "ok" if not step.problems else "WRONG",
        ]
        for step in results
    ]
    print(
        table(
            [
                "run",
                "records",
                "floor s",
                "target s",
                "floor/target",
                "peak RSS MiB",
                "writes / minimum",
                "lists",
            ],
            rows,
        )
    )
    for step in results:
        for problem in step.problems:
            print(f"\n{step.name}: {problem}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"machine": info, "steps": [s.to_json() for s in results]}, indent=2)
        )
    return 1 if any(step.problems for step in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
