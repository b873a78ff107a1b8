"""Command line and orchestration of the benchmark (``python -m bench --help``).

Three programs read the same generated file on stdin, each as its own subprocess so that
records/s and peak RSS are measured the same way for all three:

(1) the floor (``bench.floor``): stdlib JSON decode + normalize + SHA-256, nothing else;
(2) the SDK baseline (``bench.sdk_baseline``): the cookiecutter target, discarding records;
(3) the installed ``target-pinterest-audiences`` against a fresh emulator, verified.

Each is also run once on a file holding only the SCHEMA message, to show how much of the
wall time is interpreter start-up and imports (it matters at 100k records). Nothing here
asserts on time: the only failing outcome is an incorrect sync.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.generate import REMOVE_SHARE, Expected, generate
from bench.measure import (
    ProcessRun,
    bench_env,
    compile_bytecode,
    machine_info,
    run_measured,
    tail,
    working_directory,
)
from bench.pinterest import EndToEnd, TargetSettings, run_end_to_end
from target_pinterest_audiences.emulator.config import ADS_READ_PER_MINUTE, ADS_WRITE_PER_MINUTE

DEFAULT_RECORDS = 100_000
DEFAULT_SEED = 20240601


def positive_int(text: str) -> int:
    """An argparse type: a count of at least 1, written 1000000, 1_000_000 or 1,000,000."""
    value = int(text.replace("_", "").replace(",", ""))
    if value < 1:
        msg = f"must be at least 1: {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        msg = f"must be between 0 and 1: {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Throughput and peak memory of target-pinterest-audiences against the least "
            "work possible (floor) and an empty singer-sdk target, on one synthetic "
            "stream, with the sync verified against the bundled Pinterest API emulator."
        ),
        epilog="""modes:
  (default)       floor, SDK baseline and the target on --records records; table + ratios
  --latency-ms / --write-rate-limit-per-minute
                  only the target, with its default settings, against an emulator with
                  that latency and Pinterest's rate limits (ads_write 400 per minute unless
                  overridden); reports elapsed time / the time the write limit alone needs
  --memory-check  only the target, at --memory-check-base and --memory-check-records;
                  reports both peak RSS values and their ratio

examples (from the repository root):
  .venv/bin/python -m bench                         # 100k records, about 10 s
  .venv/bin/python -m bench --records 2000          # smoke test, seconds
  .venv/bin/python -m bench --records 1000000 --json bench/out/1m.json
  .venv/bin/python -m bench --records 1000000 --latency-ms 300
  .venv/bin/python -m bench --memory-check --memory-check-records 10000000

Nothing here fails on time; the exit status is 1 only if a sync was not correct.""",
    )
    parser.add_argument(
        "--records",
        type=positive_int,
        default=DEFAULT_RECORDS,
        metavar="N",
        help=f"RECORD messages to generate (default {DEFAULT_RECORDS:,}; try 1000000, "
        "10000000); not used by --memory-check",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    parser.add_argument(
        "--remove-share",
        type=_share,
        default=REMOVE_SHARE,
        metavar="F",
        help=f"share of records that remove a user (default {REMOVE_SHARE}; 0 = adds only)",
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=1,
        metavar="K",
        help="default mode: run each measured program K times, keep the fastest (default 1)",
    )
    parser.add_argument(
        "--emulator",
        choices=("process", "thread"),
        default="process",
        help="run the emulator as its own process (default) or as a thread of this one",
    )
    latency = parser.add_argument_group("latency mode")
    latency.add_argument(
        "--latency-ms", type=float, default=None, help="emulator latency added to every request"
    )
    latency.add_argument(
        "--write-rate-limit-per-minute",
        type=positive_int,
        default=None,
        metavar="LIMIT",
        help=f"emulator ads_write limit (default Pinterest's {ADS_WRITE_PER_MINUTE}); with "
        "another limit the target gets max_write_requests_per_minute = 90%% of it, as its "
        "default is for Pinterest's",
    )
    latency.add_argument(
        "--max-parallel-requests",
        type=positive_int,
        default=None,
        metavar="P",
        help="the target's max_parallel_requests in latency mode (default: the target's)",
    )
    memory = parser.add_argument_group("memory mode")
    memory.add_argument(
        "--memory-check",
        action="store_true",
        help="run the target at two sizes and compare peak RSS",
    )
    memory.add_argument(
        "--memory-check-base",
        type=positive_int,
        default=DEFAULT_RECORDS,
        metavar="N",
        help=f"the smaller size (default {DEFAULT_RECORDS:,})",
    )
    memory.add_argument(
        "--memory-check-records",
        type=positive_int,
        default=1_000_000,
        metavar="N",
        help="the larger size (default 1,000,000; the goal is stated for 10,000,000)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="save results")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the generated stream, configs and logs here (default: a temp dir, removed)",
    )
    return parser


@dataclass
class Measured:
    """One program's best run on the file, plus its start-up cost."""

    label: str
    records: int
    run: ProcessRun
    startup: ProcessRun

    @property
    def rate(self) -> float:
        """Records per second of wall time, start-up included (what a user waits)."""
        return self.records / self.run.wall_seconds

    @property
    def rate_after_startup(self) -> float:
        """Records per second once imports are done."""
        return self.records / max(self.run.wall_seconds - self.startup.wall_seconds, 1e-9)

    def to_json(self) -> dict[str, Any]:
        """Numbers for --json."""
        return {
            "records_per_second": round(self.rate, 1),
            "records_per_second_after_startup": round(self.rate_after_startup, 1),
            "run": self.run.to_json(),
            "startup": self.startup.to_json(),
        }


def _say(text: str = "") -> None:
    print(text, flush=True)


def _generate(workdir: Path, records: int, args: argparse.Namespace) -> tuple[Path, Expected]:
    path = workdir / f"stream-{records}.jsonl"
    started = time.perf_counter()
    expected = generate(path, records, args.seed, args.remove_share)
    seconds = time.perf_counter() - started
    size = path.stat().st_size / 2**20
    summary = expected.summary()
    _say(
        f"generated {records:,} records ({summary['lines']:,} lines, {size:,.1f} MiB, "
        f"{summary['users']:,} users, {summary['audiences']} audiences, "
        f"{summary['removes']:,} removes, {summary['records_without_valid_identifier']:,} "
        f"records without a valid identifier, {summary['states']} STATE) in {seconds:.1f} s"
    )
    return path, expected


def _best(runs: Sequence[ProcessRun]) -> ProcessRun:
    return min(runs, key=lambda run: run.wall_seconds)


def _run_program(
    module: str, stream: Path, workdir: Path, label: str, repeat: int
) -> tuple[ProcessRun, list[str]]:
    problems: list[str] = []
    runs = []
    for attempt in range(repeat):
        run = run_measured(
            [sys.executable, "-m", module],
            stdin=stream,
            output_prefix=workdir / f"{label}-{attempt}",
            cwd=workdir,
            env=bench_env(),
        )
        if run.returncode != 0:
            problems.append(f"{label} exited {run.returncode}:\n{tail(run.stderr)}")
        runs.append(run)
    return _best(runs), problems


def _target(
    stream: Path,
    expected: Expected,
    workdir: Path,
    label: str,
    args: argparse.Namespace,
    settings: TargetSettings | None = None,
    *,
    latency_ms: float = 0.0,
    write_limit_per_minute: int | None = None,
) -> EndToEnd:
    return run_end_to_end(
        stream,
        expected,
        workdir,
        label=label,
        emulator_mode=args.emulator,
        settings=settings or TargetSettings(),
        latency_ms=latency_ms,
        write_limit_per_minute=write_limit_per_minute,
    )


def compare(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], bool]:
    """The default mode: (1), (2), (3) on one file; the table and the ratios."""
    stream, expected = _generate(workdir, args.records, args)
    header_only, empty = _generate_quietly(workdir, args.seed)
    problems: list[str] = []

    measured: dict[str, Measured] = {}
    for key, module, label in (
        ("floor", "bench.floor", "(1) floor: json.loads + normalize + sha256"),
        ("sdk", "bench.sdk_baseline", "(2) singer-sdk minimal target (discards)"),
    ):
        _say(f"running {label} ...")
        run, failed = _run_program(module, stream, workdir, key, args.repeat)
        startup, failed_startup = _run_program(module, header_only, workdir, f"{key}-startup", 1)
        problems += failed + failed_startup
        measured[key] = Measured(label, args.records, run, startup)
    floor_out = measured["floor"].run.stdout.read_text(encoding="utf-8").strip()
    if floor_out and json.loads(floor_out)["records"] != args.records:
        problems.append(f"floor saw {floor_out}, expected {args.records} records")

    label = "(3) target-pinterest-audiences end to end"
    _say(f"running {label} ...")
    runs = [
        _target(stream, expected, workdir, f"target-{attempt}", args)
        for attempt in range(args.repeat)
    ]
    best = min(runs, key=lambda result: result.run.wall_seconds)
    target_startup = _target(header_only, empty, workdir, "target-startup", args)
    measured["target"] = Measured(label, args.records, best.run, target_startup.run)
    for result in [*runs, target_startup]:
        problems += result.problems

    rows = [
        [
            item.label,
            f"{item.rate:,.0f}",
            f"{item.rate_after_startup:,.0f}",
            f"{item.run.wall_seconds:.2f}",
            f"{item.startup.wall_seconds:.2f}",
            f"{item.run.cpu_seconds:.2f}",
            f"{item.run.peak_rss_mib:,.1f}",
        ]
        for item in measured.values()
    ]
    header = ["", "records/s", "excl. start-up", "wall s", "start-up s", "CPU s", "peak RSS MiB"]
    floor, sdk, target = measured["floor"], measured["sdk"], measured["target"]
    ratios = {
        "target_over_floor": target.rate / floor.rate,
        "target_over_sdk": target.rate / sdk.rate,
        "target_over_floor_after_startup": target.rate_after_startup / floor.rate_after_startup,
        "target_over_sdk_after_startup": target.rate_after_startup / sdk.rate_after_startup,
    }
    _say()
    _say(f"results for {args.records:,} records (best of {args.repeat}):")
    _say(report.table(header, rows))
    _say(
        f"  ratios of records/s: (3)/(1) = {ratios['target_over_floor']:.3f} "
        f"(the target is {1 / ratios['target_over_floor']:.1f}x slower than the floor), "
        f"(3)/(2) = {ratios['target_over_sdk']:.3f}"
    )
    _say(
        f"  excluding start-up:   (3)/(1) = {ratios['target_over_floor_after_startup']:.3f}, "
        f"(3)/(2) = {ratios['target_over_sdk_after_startup']:.3f}"
    )
    _emulator_line(best)
    _say(report.efficiency(best))
    _say(report.verdict(best) if not problems else _problems(problems))
    results = {
        "mode": "compare",
        "records": args.records,
        "generated": expected.summary(),
        "floor": floor.to_json(),
        "sdk_baseline": sdk.to_json(),
        "target": {**target.to_json(), "end_to_end": best.to_json()},
        "ratios": {key: round(value, 4) for key, value in ratios.items()},
        "problems": problems,
    }
    return results, not problems


def _generate_quietly(workdir: Path, seed: int) -> tuple[Path, Expected]:
    path = workdir / "stream-schema-only.jsonl"
    return path, generate(path, 0, seed)


def _emulator_line(result: EndToEnd) -> None:
    usage = result.emulator
    if usage.cpu_seconds is not None and usage.peak_rss_mib is not None:
        _say(
            f"  emulator process during (3): {usage.cpu_seconds:.2f} CPU s, "
            f"peak RSS {usage.peak_rss_mib:,.1f} MiB (not included above)"
        )


def _problems(problems: Sequence[str]) -> str:
    return "correctness: FAILED\n" + "\n".join(f"  - {problem}" for problem in problems)


def latency(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], bool]:
    """Latency mode: is the target limited by Pinterest's write limit, or by latency?"""
    limit: int = args.write_rate_limit_per_minute or ADS_WRITE_PER_MINUTE
    latency_ms = args.latency_ms or 0.0
    per_second = limit / 60
    settings = TargetSettings(
        max_write_requests_per_minute=None if limit == ADS_WRITE_PER_MINUTE else 0.9 * limit,
        max_read_requests_per_minute=None,
        max_parallel_requests=args.max_parallel_requests,
    )
    stream, expected = _generate(workdir, args.records, args)
    _say(
        f"running (3) against an emulator with {latency_ms:g} ms latency and Pinterest's rate "
        f"limits (ads_write {limit}/min, ads_read {ADS_READ_PER_MINUTE}/min); target "
        f"settings {settings.describe()} ..."
    )
    result = _target(
        stream,
        expected,
        workdir,
        "target-latency",
        args,
        settings=settings,
        latency_ms=latency_ms,
        write_limit_per_minute=limit,
    )
    ideal = result.write_requests / per_second
    whole_minutes = math.ceil(result.write_requests / limit)
    ratio = result.run.wall_seconds / ideal if ideal else float("nan")
    _say()
    _say(f"latency mode, {args.records:,} records:")
    _say(
        f"  elapsed {result.run.wall_seconds:.1f} s (CPU {result.run.cpu_seconds:.1f} s, peak RSS "
        f"{result.run.peak_rss_mib:,.1f} MiB); {result.write_requests} accepted write requests, "
        f"{result.rate_limited_writes} answered 429"
    )
    _say(
        f"  the ads_write limit alone needs {result.write_requests} / {per_second:g} per s = "
        f"{ideal:.1f} s at a steady rate ({whole_minutes} minute window(s) of {limit}: a "
        "sliding window lets a burst go sooner)"
    )
    _say(f"  elapsed / write-limit time = {ratio:.3f} (goal <= 1.1 for a 1M-member first sync)")
    _emulator_line(result)
    _say(report.efficiency(result))
    _say(report.verdict(result))
    results = {
        "mode": "latency",
        "records": args.records,
        "generated": expected.summary(),
        "latency_ms": latency_ms,
        "write_rate_limit_per_minute": limit,
        "ideal_seconds": round(ideal, 3),
        "elapsed_seconds": round(result.run.wall_seconds, 3),
        "ratio": round(ratio, 4),
        "target": result.to_json(),
    }
    return results, result.ok


def memory_check(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], bool]:
    """Memory mode: peak RSS of the target should not grow with the input size."""
    runs: list[tuple[int, EndToEnd]] = []
    for records in (args.memory_check_base, args.memory_check_records):
        stream, expected = _generate(workdir, records, args)
        _say(f"running (3) on {records:,} records ...")
        runs.append((records, _target(stream, expected, workdir, f"target-mem-{records}", args)))
        stream.unlink()  # a 10M-record file is 2 GB; keep only what is needed at once
    rows = [
        [
            f"{records:,} records",
            f"{result.run.peak_rss_mib:,.1f}",
            f"{records / result.run.wall_seconds:,.0f}",
            f"{result.run.wall_seconds:.1f}",
            f"{result.efficiency() or 0:.3f}",
            "OK" if result.ok else "FAILED",
        ]
        for records, result in runs
    ]
    (small_n, small), (large_n, large) = runs
    ratio = large.run.peak_rss_mib / small.run.peak_rss_mib
    _say()
    _say("memory flatness of (3):")
    header = ["", "peak RSS MiB", "records/s", "wall s", "requests/ideal", "correct"]
    _say(report.table(header, rows))
    _say(
        f"  peak RSS ratio {large_n:,} / {small_n:,} = {ratio:.3f} "
        "(goal: 10M within 25% of 100k, i.e. <= 1.25)"
    )
    for _, result in runs:
        if not result.ok:
            _say(report.verdict(result))
    results = {
        "mode": "memory",
        "runs": [{"records": records, **result.to_json()} for records, result in runs],
        "peak_rss_ratio": round(ratio, 4),
    }
    return results, all(result.ok for _, result in runs)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected mode; exit status 1 only if a sync was incorrect."""
    parser = build_parser()
    args = parser.parse_args(argv)
    compile_bytecode()
    info = machine_info()
    _say(report.machine(info, args.emulator))
    _say()
    with working_directory(args.workdir, "bench-pinterest-") as workdir:
        if args.latency_ms is not None or args.write_rate_limit_per_minute is not None:
            results, ok = latency(args, workdir)
        elif args.memory_check:
            results, ok = memory_check(args, workdir)
        else:
            results, ok = compare(args, workdir)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "machine": info,
            "emulator_mode": args.emulator,
            "seed": args.seed,
            "remove_share": args.remove_share,
            **results,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        _say(f"results saved to {args.json}")
    return 0 if ok else 1
