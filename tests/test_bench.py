"""The benchmark still runs and still checks correctness (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ledgers import sent_to_list
from bench.measure import compile_bytecode

# Runs the benchmark as a subprocess.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def bench(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <module> <args>`` from the repository root, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_benchmark_runs_and_its_sync_is_correct() -> None:
    completed = bench("bench", "--records", "3000")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "correctness: OK" in completed.stdout
    assert "(3)/(1) =" in completed.stdout
    assert "(3)/(2) =" in completed.stdout


def test_the_ledger_benchmark_runs_and_every_run_is_correct() -> None:
    completed = bench("bench.ledgers", "--records", "3000")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    for run in ("first sync", "1% churn", "unchanged", "initial load", "(N/10)", "(N/100)"):
        line = next(line for line in completed.stdout.splitlines() if run in line)
        assert line.rstrip().endswith("ok"), line
    assert "WRONG" not in completed.stdout


def test_a_wrong_list_is_reported_with_what_the_run_sent_it() -> None:
    log = [
        {
            "path": "/v5/ad_accounts/1/customer_lists/7",
            "method": "PATCH",
            "operation_type": "ADD",
            "status": 200,
            "record_count": 1900,
        },
        {
            "path": "/v5/ad_accounts/1/customer_lists/7",
            "method": "PATCH",
            "operation_type": "REMOVE",
            "status": 429,
            "record_count": 5,
        },
        {
            "path": "/v5/ad_accounts/1/customer_lists/8",
            "method": "PATCH",
            "operation_type": "ADD",
            "status": 200,
            "record_count": 3,
        },
    ]

    assert sent_to_list(log, "7") == "1900 records in ADD 200, 5 records in REMOVE 429"
    assert sent_to_list(log, None) == ""


def test_the_benchmark_writes_bytecode_as_an_installed_package_has_it() -> None:
    source = ROOT / "target_pinterest_audiences" / "rejects.py"
    compiled = Path(importlib.util.cache_from_source(str(source)))
    compiled.unlink(missing_ok=True)

    compile_bytecode()

    assert compiled.is_file()
