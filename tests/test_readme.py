"""The README, followed literally: every command block runs as written, in order, in one shell.

A newcomer copies the README block by block into one terminal, in a fresh clone. This test
does the same: it copies the working tree into a new git repository (a fresh clone of what
is being tested, uncommitted changes included), extracts every ```sh block of README.md in
order, and runs them in one bash session there (``set -euo pipefail``), each block's output
in its own file. A block that cannot run in CI carries ``<!-- not run: why -->`` on the line
above its fence (CONTRIBUTING.md). A block marked ``<!-- output of the block above -->`` is
what the previous command block prints, and must be exactly that (ports aside).

The only help the session gets from the test: Meltano's venv is linked from this checkout
(``make meltano-venv`` then finds it built and does nothing), PATH has nothing of this
checkout on it, and no variable steers Meltano or the target. Blocks use the emulator the
README starts on 127.0.0.1:8765, so sessions on this machine take turns (a file lock), and
the test checks the port is free first. No block may point at the real Pinterest API: the
test refuses to run a block that names it.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.meltano]

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
COMMAND_LANGUAGES = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<info>[^`\n]*)$")
NOT_RUN = re.compile(r"^<!-- not run: (?P<why>\S.*?) -->$")
OUTPUT = "<!-- output of the block above -->"
EMULATOR_PORT = 8765
REAL_API = re.compile(r"api\.pinterest\.com|--environment[ =]prod\b")
LOOPBACK_PORT = re.compile(r"127\.0\.0\.1:\d+")
SESSION_LOCK = Path(tempfile.gettempdir()) / "target-pinterest-audiences-readme.lock"


@dataclass(frozen=True)
class Block:
    """One fenced block of the README."""

    line: int  # 1-based line of the opening fence
    language: str
    text: str
    not_run: str | None  # the reason, when marked
    is_output: bool  # marked as the output of the command block before it

    @property
    def is_command(self) -> bool:
        return self.language in COMMAND_LANGUAGES


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block, with the marker comment on the line above its fence (if any)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body: list[str] = []
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            body.append(lines[end].removeprefix(indent))
            end += 1
        above = lines[index - 1].strip() if index > 0 else ""
        marked = NOT_RUN.match(above)
        blocks.append(
            Block(
                line=index + 1,
                language=opening["info"].strip().split(" ")[0].lower(),
                text="\n".join(body) + "\n",
                not_run=marked["why"] if marked else None,
                is_output=above == OUTPUT,
            )
        )
        index = end + 1
    return blocks


def session_script(blocks: list[Block], out: Path) -> str:
    """One bash script: each command block in turn, its output in out/<line>.txt."""
    parts = [
        "set -euo pipefail",
        # What the blocks left running in the background (the emulator) ends with the session.
        "trap 'status=$?; kill $(jobs -p) 2>/dev/null || true; wait; exit $status' EXIT",
    ]
    for block in blocks:
        parts.append(f'exec >"{out}/{block.line}.txt" 2>&1')
        parts.append(f'echo "{block.line}" >"{out}/last-block"')
        parts.append(block.text)
    parts.append(f'exec >"{out}/after.txt" 2>&1')
    # Read back what the README's emulator holds, before the session stops it.
    parts.append(
        f'curl -sS --fail http://127.0.0.1:{EMULATOR_PORT}/_emulator/state >"{out}/state.json"'
    )
    return "\n".join(parts) + "\n"


def copy_as_fresh_clone(destination: Path) -> None:
    """The working tree's files (tracked and new, not ignored) as a new git repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = REPO / os.fsdecode(name)
        if source.is_file() and not source.is_symlink():
            target = destination / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    git = ["git", "-c", "user.name=README test", "-c", "user.email=readme@test.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=destination, check=True)
    subprocess.run([*git, "add", "-A"], cwd=destination, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "fresh clone"], cwd=destination, check=True)


def session_environment() -> dict[str, str]:
    """The caller's environment minus anything of this checkout or steering the tools."""
    # MAKE*: under make test the session's make would run as a sub-make and print more.
    prefixes = (
        "MELTANO_",
        "TAP_",
        "TARGET_",
        "PINTEREST_",
        "VIRTUAL_ENV",
        "PYTHON",
        "MAKE",
        "MFLAGS",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PATH"] = os.pathsep.join(
        entry
        for entry in env.get("PATH", "").split(os.pathsep)
        if entry and not Path(entry).resolve().is_relative_to(REPO)
    )
    env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    return env


@dataclass
class Session:
    """What the README session printed, per block, and what the emulator held at the end."""

    blocks: list[Block]
    outputs: dict[int, str]
    state: dict[str, object]
    returncode: int
    root: Path

    def output_of(self, containing: str) -> str:
        """The output of the one command block whose text contains ``containing``."""
        (block,) = [b for b in self.blocks if b.is_command and containing in b.text]
        return self.outputs[block.line]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def run_session(script: Path, cwd: Path) -> int:
    """Run the session in its own process group; whatever it leaves running is killed."""
    process = subprocess.Popen(
        ["bash", str(script)],
        cwd=cwd,
        env=session_environment(),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return process.wait(timeout=1500)
    except subprocess.TimeoutExpired:
        return -1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # a timed-out session, or stragglers
        process.wait()


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    commands = [b for b in blocks if b.is_command and b.not_run is None]
    for block in commands:
        assert not REAL_API.search(block.text), (
            f"README.md line {block.line}: a block that runs in tests points at the real "
            "Pinterest API; mark it <!-- not run: why --> (CONTRIBUTING.md)"
        )
    work = tmp_path_factory.mktemp("newcomer")
    clone = work / "target-pinterest-audiences"
    out = work / "out"
    out.mkdir()
    copy_as_fresh_clone(clone)
    meltano_venv = REPO / ".venv-meltano"
    if not (meltano_venv / "bin" / "meltano").exists():
        pytest.fail("run make meltano-venv (make test does) before this test")
    (clone / ".venv-meltano").symlink_to(meltano_venv.resolve())
    script = work / "readme-session.sh"
    script.write_text(session_script(commands, out), encoding="utf-8")

    with SESSION_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one README session per machine at a time
        assert port_is_free(EMULATOR_PORT), (
            f"127.0.0.1:{EMULATOR_PORT} is in use: the README's emulator needs it"
        )
        returncode = run_session(script, clone)
    outputs = {
        int(path.stem): path.read_text(encoding="utf-8", errors="replace")
        for path in out.glob("*.txt")
        if path.stem.isdigit()
    }
    state_file = out / "state.json"
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.exists() else {}
    return Session(commands, outputs, state, returncode, work)


def test_the_readme_has_command_blocks_and_marks_every_one_it_does_not_run() -> None:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    commands = [b for b in blocks if b.is_command]
    assert len([b for b in commands if b.not_run is None]) >= 5
    for block in commands:
        assert block.language == "sh", f"README.md line {block.line}: use ```sh for commands"
    for previous, block in itertools.pairwise(blocks):
        if block.is_output:
            assert previous.is_command, f"README.md line {block.line}: output of what?"


def test_every_readme_command_block_runs_as_written(session: Session) -> None:
    if session.returncode != 0:
        last = (session.root / "out" / "last-block").read_text(encoding="utf-8").strip()
        pytest.fail(
            f"README.md block at line {last} failed (exit {session.returncode}):\n"
            + session.outputs.get(int(last), "(no output)")[-6000:]
        )
    ran = {b.line for b in session.blocks}
    assert ran <= set(session.outputs), "some blocks never ran"


def normalized(text: str) -> list[str]:
    return [LOOPBACK_PORT.sub("127.0.0.1:PORT", line.rstrip()) for line in text.splitlines()]


def test_each_sample_output_is_what_its_command_printed(session: Session) -> None:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    samples = 0
    for previous, block in itertools.pairwise(blocks):
        if not block.is_output:
            continue
        assert previous.line in session.outputs, f"README.md line {previous.line} did not run"
        printed = normalized(session.outputs[previous.line])
        sample = normalized(block.text)
        assert sample[0] in printed, f"README.md line {block.line}: {sample[0]!r} not printed"
        start = printed.index(sample[0])
        assert printed[start:] == sample, (
            f"README.md line {block.line}: the sample differs from what line "
            f"{previous.line} printed (python tools/update_readme.py regenerates it):\n"
            + "\n".join(printed[start:])
        )
        samples += 1
    assert samples >= 1


def members(session: Session, name: str) -> int:
    lists = session.state["ad_accounts"]["549755885175"]["customer_lists"]  # type: ignore[index]
    (item,) = [item for item in lists if item["name"] == name]
    return int(item["member_count"])


def test_the_meltano_section_syncs_the_sample_exports(session: Session) -> None:
    first = session.output_of("meltano run sync-audiences")
    assert "Audience 'vip_customers'" in first
    # vip_customers: 12 adds and 2 removals of which one was a member (see the CSV).
    assert members(session, "vip_customers") == 11


def test_the_own_project_loader_syncs_with_the_secret_from_dot_env(session: Session) -> None:
    project = session.root / "my-audiences"
    dot_env = (project / ".env").read_text(encoding="utf-8")
    assert "TARGET_PINTEREST_AUDIENCES_ACCESS_TOKEN=" in dot_env
    assert "emulator-access-token" not in (project / "meltano.yml").read_text(encoding="utf-8")
    assert members(session, "order_completed_last_30days") == 30
    assert members(session, "cart_abandoners") == 10
    # The session had the token in its environment too: without it, .env alone suffices.
    env = session_environment()
    env["PATH"] = os.pathsep.join([str(REPO / ".venv-meltano" / "bin"), env["PATH"]])
    completed = subprocess.run(
        ["meltano", "invoke", "target-pinterest-audiences", "--validate-config"],
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "OK   config is valid" in completed.stdout + completed.stderr


def test_make_demo_installed_the_target_without_development_tools(session: Session) -> None:
    bin_dir = session.root / "target-pinterest-audiences" / ".venv" / "bin"
    assert (bin_dir / "target-pinterest-audiences").exists()
    assert (bin_dir / "pinterest-api-emulator").exists()
    for tool in ("pytest", "ruff", "mypy", "pre-commit"):
        assert not (bin_dir / tool).exists(), f"make demo installed {tool}"
