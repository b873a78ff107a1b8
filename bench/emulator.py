"""Start the bundled Pinterest API emulator for one measured run, and read it back.

By default the emulator is its own process (``python -m target_pinterest_audiences.emulator
--port 0``): its CPU time and memory are then not charged to the benchmark process and can
be reported separately. On a 2-core machine it still competes with the target for CPU,
which the report says. ``thread`` mode runs it inside the benchmark process instead.

Either way the final state is read over the emulator's admin API (``/_emulator/...``), so
verification is the same code for both modes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AD_ACCOUNT_ID = "549755885175"  # the emulator's default ad account
ACCESS_TOKEN = "emulator-access-token"  # the emulator's default token (a public test value)

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class EmulatorUsage:
    """The emulator's own cost while the target ran (process mode only)."""

    mode: str
    cpu_seconds: float | None = None
    peak_rss_mib: float | None = None


class RunningEmulator:
    """A started emulator: its API URL and admin API, in either mode."""

    def __init__(self, url: str, mode: str, pid: int | None) -> None:
        self.url = url
        self.mode = mode
        self.pid = pid
        self._admin = url.removesuffix("/v5") + "/_emulator"

    def admin(self, path: str) -> Any:
        """GET ``/_emulator/<path>`` and decode the JSON answer."""
        with _NO_PROXY.open(f"{self._admin}/{path}", timeout=600) as response:
            return json.loads(response.read())

    def usage(self) -> EmulatorUsage:
        """CPU seconds and peak RSS so far, from ``/proc`` (call before reading state back,
        which costs the emulator memory the target run did not)."""
        if self.pid is None:
            return EmulatorUsage(self.mode)
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text(encoding="utf-8")
            status = Path(f"/proc/{self.pid}/status").read_text(encoding="utf-8")
        except OSError:
            return EmulatorUsage(self.mode)
        fields = stat.rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        hwm = next((line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")), 0)
        return EmulatorUsage(self.mode, cpu_seconds=cpu, peak_rss_mib=int(hwm) / 1024)


@contextmanager
def running_emulator(
    mode: str, *, latency_ms: float, write_limit_per_minute: int | None, log_path: Path
) -> Iterator[RunningEmulator]:
    """A fresh emulator (no lists yet: every run is a first sync), stopped on exit.

    ``write_limit_per_minute=None`` lifts the emulator's rate limits (the target's own cost
    is measured then); otherwise ads_write gets that limit and ads_read Pinterest's.
    """
    if mode == "thread":
        from target_pinterest_audiences.emulator import Emulator, EmulatorConfig

        if write_limit_per_minute is None:
            config = EmulatorConfig.without_rate_limits(latency_ms=latency_ms)
        else:
            config = EmulatorConfig(
                latency_ms=latency_ms, write_rate_limit_per_minute=write_limit_per_minute
            )
        with Emulator(config) as emulator:
            yield RunningEmulator(emulator.url, mode, None)
        return

    command = [sys.executable, "-m", "target_pinterest_audiences.emulator", "--port", "0"]
    command += ["--latency-ms", str(latency_ms)]
    if write_limit_per_minute is None:
        command += ["--no-rate-limits"]
    else:
        command += ["--write-rate-limit-per-minute", str(write_limit_per_minute)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log)
        try:
            assert process.stdout is not None
            url = process.stdout.readline().decode().strip()
            if not url.startswith("http"):
                msg = f"emulator did not start (see {log_path})"
                raise RuntimeError(msg)
            yield RunningEmulator(url, mode, process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
