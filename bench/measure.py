"""Run one measured subprocess; describe the machine.

Each program runs under ``bench/launch.py``, which spawns it and reports exactly that
process's wall time, CPU time and ``ru_maxrss`` (its peak RSS, like ``VmHWM``) from
``os.wait4``. Two traps this avoids: ``getrusage(RUSAGE_CHILDREN)`` reports the largest
of *all* children so far, hiding a smaller later run; and a child spawned straight from
this process would inherit this process's (large) peak RSS as its starting point (see the
launcher's docstring).
"""

from __future__ import annotations

import compileall
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
_LAUNCHER = Path(__file__).resolve().parent / "launch.py"


@dataclass(frozen=True)
class ProcessRun:
    """How one subprocess ran: exit code, wall and CPU time, peak RSS, where its output is."""

    command: tuple[str, ...]
    returncode: int
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    launcher_rss_mib: float
    stdout: Path
    stderr: Path

    def to_json(self) -> dict[str, Any]:
        """The run as plain numbers."""
        return {
            "command": list(self.command),
            "returncode": self.returncode,
            "wall_seconds": round(self.wall_seconds, 4),
            "cpu_seconds": round(self.cpu_seconds, 4),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "launcher_rss_mib": round(self.launcher_rss_mib, 1),
        }


def run_measured(
    command: Sequence[str],
    *,
    stdin: Path,
    output_prefix: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> ProcessRun:
    """Run ``command`` with ``stdin`` as its standard input and wait for it.

    stdout and stderr go to ``<output_prefix>.stdout`` / ``.stderr``: files, not pipes, so
    the parent never has to read concurrently and cannot slow the child down.
    """
    stdout_path = output_prefix.with_suffix(".stdout")
    stderr_path = output_prefix.with_suffix(".stderr")
    result_path = output_prefix.with_suffix(".usage.json")
    result_path.unlink(missing_ok=True)
    launcher = [sys.executable, "-I", "-S", str(_LAUNCHER), str(result_path), *command]
    with (
        stdin.open("rb") as stdin_file,
        stdout_path.open("wb") as stdout_file,
        stderr_path.open("wb") as stderr_file,
    ):
        process = subprocess.Popen(
            launcher,
            stdin=stdin_file,
            stdout=stdout_file,
            stderr=stderr_file,
            cwd=cwd,
            env=dict(env) if env is not None else None,
        )
        try:
            process.wait()
        except BaseException:
            process.terminate()  # the launcher passes it on to the command
            process.wait()
            raise
    try:
        usage = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        msg = f"launcher failed for {command[0]}; see {stderr_path}:\n{tail(stderr_path)}"
        raise RuntimeError(msg) from None
    return ProcessRun(
        command=tuple(command),
        returncode=usage["returncode"],
        wall_seconds=usage["wall_seconds"],
        cpu_seconds=usage["cpu_seconds"],
        peak_rss_mib=usage["peak_rss_mib"],
        launcher_rss_mib=usage["launcher_rss_mib"],
        stdout=stdout_path,
        stderr=stderr_path,
    )


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for failure messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def compile_bytecode() -> None:
    """Write the bytecode of the package and of ``bench``, as pip does when it installs.

    The development venv installs the package editable, which leaves compiling to the
    first import, and PYTHONDONTWRITEBYTECODE (common in CI and containers) turns that off:
    every start of the target would then compile its thirty-odd modules again (about
    0.15 s on a 2-core machine), which a pip- or Meltano-installed target never does.
    """
    for folder in ("target_pinterest_audiences", "bench"):
        compileall.compile_dir(REPO_ROOT / folder, quiet=1)


def bench_env() -> dict[str, str]:
    """Environment for subprocesses: ``bench`` importable, loopback never proxied."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    # --no-optional-locks: a benchmark must not touch the index of a tree others work in.
    try:
        result = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(REPO_ROOT), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip()


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, Python, SDK version and git commit, printed atop every report."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    memory_mib = 0
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                memory_mib = int(line.split()[1]) // 1024
    except OSError:
        pass
    try:
        from importlib.metadata import version

        sdk = version("singer-sdk")
    except Exception:
        sdk = "unknown"
    try:
        load = [round(value, 2) for value in os.getloadavg()]
    except OSError:
        load = []
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_mib": memory_mib,
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "singer_sdk": sdk,
        "git_commit": commit or "unknown",
        "git_dirty": dirty,
        "load_average_at_start": load,
    }


@contextmanager
def working_directory(path: Path | None, prefix: str) -> Iterator[Path]:
    """``path`` (created if needed, kept), or a temporary directory removed afterwards."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as temp:
        yield Path(temp)
