"""Run one command and write its own wall time, CPU time and peak RSS to a JSON file.

Why a separate launcher: on Linux a child's ``ru_maxrss`` starts from the RSS of the
process that spawned it (with vfork/posix_spawn the child shares the parent's memory until
exec, and exec keeps the old high-water mark). Spawned directly from the benchmark, which
holds the expected membership of a 10M-record file, every program would report at least
the benchmark's own peak. This launcher is a fresh ``python -I -S`` with nothing but the
standard library loaded, so what it passes on is a few MiB, recorded as ``launcher_rss_mib``
(a reported peak at or below it is only an upper bound).

Usage: ``python -I -S bench/launch.py RESULT.json COMMAND [ARG...]``; stdin, stdout and
stderr are the command's. Stdlib only, and never imported by the package.
"""

import json
import os
import signal
import sys
import time


def _own_rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    """Spawn, wait, record; exit 0 unless the launcher itself failed."""
    result_path, *command = sys.argv[1:]
    launcher_rss = _own_rss_mib()
    started = time.perf_counter()
    pid = os.posix_spawnp(command[0], command, os.environ)
    # Ctrl-C reaches the whole process group: let the command handle it, then report.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(pid, signum))
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    result = {
        "returncode": os.waitstatus_to_exitcode(status),
        "wall_seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
        "launcher_rss_mib": launcher_rss,
    }
    with open(result_path, "w", encoding="utf-8") as out:
        json.dump(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
