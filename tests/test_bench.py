"""The benchmark still runs and still checks correctness (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Runs the benchmark as a subprocess.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def test_the_benchmark_runs_and_its_sync_is_correct() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--records", "3000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "correctness: OK" in completed.stdout
    assert "(3)/(1) =" in completed.stdout
    assert "(3)/(2) =" in completed.stdout


def test_the_ledger_benchmark_runs_and_every_run_is_correct() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.ledgers", "--records", "3000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    for run in ("first sync", "1% churn", "unchanged", "initial load", "CDC batch"):
        line = next(line for line in completed.stdout.splitlines() if run in line)
        assert line.rstrip().endswith("ok"), line
    assert "WRONG" not in completed.stdout
