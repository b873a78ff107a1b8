"""Command line: ``python -m target_pinterest_audiences.emulator`` (``pinterest-api-emulator``).

Prints exactly one line to stdout, the API base URL (``http://HOST:PORT/v5``),
so a CI script can do ``URL=$(... | head -n1)``; everything else goes to
stderr. Runs until SIGTERM or SIGINT, then shuts down cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from .config import (
    ADS_READ_PER_MINUTE,
    ADS_WRITE_PER_MINUTE,
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_AD_ACCOUNT_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    RATE_LIMIT_WINDOW_SECONDS,
    EmulatorConfig,
)
from .faults import FaultConfigError, FaultInjector, parse_faults_json
from .server import Emulator

MATCHING_HELP = """\
matching model:
  Pinterest counts the users an upload matched, not the records uploaded. The emulator
  decides per record: a record matches a Pinterest user when a keyed BLAKE2b hash of its
  exact text, read as a number in [0, 1), is below --match-rate. The answer is the same
  for the same record in every run, so expected sizes can be computed; each matched
  record counts as one user (an email and an IDFA of one person are two).
  - customer list status: PROCESSING for --processing-seconds after every change, then
    READY with at least 100 matched users, else TOO_SMALL.
  - audience (CUSTOMER_LIST) size: the list's matched users as of its last completed
    processing; status READY (>= 100) or TOO_SMALL. While a change is processing the
    audience keeps its previous size; before the list's first processing completes it
    answers size null and status INITIALIZING.
  With the defaults (--match-rate 1, --processing-seconds 0) every record matches and
  every change is processed at once.
"""


def _match_rate(text: str) -> float:
    """A share between 0 and 1 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 (use --no-rate-limits to lift)")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments (one per ``EmulatorConfig`` setting)."""
    parser = argparse.ArgumentParser(
        prog="pinterest-api-emulator",
        description="Local emulator of the Pinterest Marketing API v5 (customer lists, "
        "audiences, OAuth refresh) with contract validation and fault injection.",
        epilog=MATCHING_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument(
        "--ad-account-id",
        action="extend",
        nargs="+",
        dest="ad_account_ids",
        metavar="ID",
        help=f"accessible ad account id(s); repeatable (default {DEFAULT_AD_ACCOUNT_ID})",
    )
    parser.add_argument(
        "--access-token",
        action="extend",
        nargs="+",
        dest="access_tokens",
        metavar="T",
        help=f"accepted bearer token(s); repeatable (default {DEFAULT_ACCESS_TOKEN})",
    )
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    parser.add_argument("--refresh-token", default=DEFAULT_REFRESH_TOKEN)
    parser.add_argument(
        "--no-rotate-refresh-tokens",
        dest="rotate_refresh_tokens",
        action="store_false",
        help="keep the same refresh token on refresh (default: rotate, as Pinterest does)",
    )
    parser.add_argument("--access-token-ttl-seconds", type=float, default=30 * 86400)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--write-rate-limit-per-minute",
        type=_positive_int,
        default=ADS_WRITE_PER_MINUTE,
        metavar="N",
        help="ads_write requests allowed per token per window (default "
        f"{ADS_WRITE_PER_MINUTE}, Pinterest's Standard access limit)",
    )
    parser.add_argument(
        "--read-rate-limit-per-minute",
        type=_positive_int,
        default=ADS_READ_PER_MINUTE,
        metavar="N",
        help=f"ads_read requests allowed per token per window (default {ADS_READ_PER_MINUTE})",
    )
    parser.add_argument(
        "--rate-limit-window-seconds",
        type=float,
        default=RATE_LIMIT_WINDOW_SECONDS,
        metavar="S",
        help="length of the sliding rate-limit window (default 60, Pinterest's minute)",
    )
    parser.add_argument(
        "--no-rate-limits",
        dest="rate_limits",
        action="store_false",
        help="lift both rate limits (for tests that need speed, not realism)",
    )
    parser.add_argument(
        "--processing-seconds",
        type=float,
        default=0.0,
        help="how long lists stay PROCESSING (and audiences keep their previous size) "
        "after each change (default 0; see the matching model below)",
    )
    parser.add_argument(
        "--match-rate",
        type=_match_rate,
        default=1.0,
        metavar="SHARE",
        help="share of uploaded records, 0 to 1, that match a Pinterest user (default 1: "
        "all; see the matching model below)",
    )
    parser.add_argument(
        "--faults-json",
        default=None,
        metavar="JSON",
        help='fault rules: a list, or {"rules": [...], "max_records_per_request": N, '
        '"rejected_records": [...]}',
    )
    parser.add_argument("--max-records-per-request", type=int, default=None)
    parser.add_argument(
        "--rejected-record",
        action="append",
        dest="rejected_records",
        default=[],
        metavar="RECORD",
        help="record that makes a create/PATCH fail with 400; repeatable",
    )
    parser.add_argument("--verbose", action="store_true", help="access log lines on stderr")
    return parser


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Turn parsed arguments into a validated EmulatorConfig."""
    faults: dict[str, Any] = {}
    if args.faults_json is not None:
        faults = parse_faults_json(args.faults_json)
        FaultInjector(faults)  # validate the shape before picking it apart
    max_records = args.max_records_per_request
    if max_records is None:
        max_records = faults.get("max_records_per_request")
    rejected = [*args.rejected_records, *faults.get("rejected_records", [])]
    config = EmulatorConfig(
        host=args.host,
        port=args.port,
        ad_account_ids=tuple(args.ad_account_ids or (DEFAULT_AD_ACCOUNT_ID,)),
        access_tokens=tuple(args.access_tokens or (DEFAULT_ACCESS_TOKEN,)),
        client_id=args.client_id,
        client_secret=args.client_secret,
        refresh_token=args.refresh_token,
        rotate_refresh_tokens=args.rotate_refresh_tokens,
        access_token_ttl_seconds=args.access_token_ttl_seconds,
        latency_ms=args.latency_ms,
        write_rate_limit_per_minute=args.write_rate_limit_per_minute if args.rate_limits else None,
        read_rate_limit_per_minute=args.read_rate_limit_per_minute if args.rate_limits else None,
        rate_limit_window_seconds=args.rate_limit_window_seconds,
        processing_seconds=args.processing_seconds,
        match_rate=args.match_rate,
        faults=tuple(faults.get("rules", [])),
        max_records_per_request=max_records,
        rejected_records=tuple(rejected),
        verbose=args.verbose,
    )
    FaultInjector(config.fault_config())  # fail at start-up, not on the first request
    return config


def main(argv: list[str] | None = None) -> int:
    """Run the emulator until SIGTERM/SIGINT; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except FaultConfigError as exc:
        print(f"pinterest-api-emulator: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    emulator = Emulator(config)
    try:
        emulator.start()
    except OSError as exc:
        print(
            f"pinterest-api-emulator: cannot listen on {config.host}:{config.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    try:
        print(emulator.url, flush=True)
        limits = config.rate_limits()
        print(
            f"pinterest-api-emulator: API at {emulator.url}, admin API at {emulator.admin_url}; "
            f"ad accounts {', '.join(config.ad_account_ids)}; rate limits per token per "
            f"{config.rate_limit_window_seconds:g} s: "
            + (", ".join(f"{name} {limit}" for name, limit in limits.items()) or "none"),
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("pinterest-api-emulator: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
