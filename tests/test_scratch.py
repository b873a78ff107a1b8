"""Tests for target_pinterest_audiences.scratch: temporary folders that never outlive a run.

A dead owner is a real process that created its folder and died without cleaning up; a
live owner is this test process (flock locks belong to open files, so even this process
cannot take a lock it holds through another file).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from target_pinterest_audiences import scratch
from target_pinterest_audiences.scratch import LOCK_FILE, ScratchDirectory, remove_stale

PREFIX = "test-scratch-"


def age(folder: Path, seconds: float = 3600) -> None:
    """Pretend ``folder`` was made ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(folder, (then, then))


def killed_owner_folder(parent: Path) -> Path:
    """A folder whose owner process died without removing it (as after SIGKILL)."""
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from target_pinterest_audiences.scratch import ScratchDirectory\n"
        f"d = ScratchDirectory({PREFIX!r}, Path({str(parent)!r}))\n"
        "(d.path / 'snapshot.bin').write_bytes(b'x' * 1000)\n"
        "print(d.path, flush=True)\n"
        "os._exit(0)  # no finalizer, no cleanup: like SIGKILL\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    folder = Path(done.stdout.strip())
    assert folder.is_dir()
    return folder


def test_a_folder_is_named_after_its_owner_and_removed_on_close(tmp_path: Path) -> None:
    folder = ScratchDirectory(PREFIX, tmp_path)
    assert folder.path.parent == tmp_path
    assert folder.path.name.startswith(f"{PREFIX}{os.getpid()}-")
    assert (folder.path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    (folder.path / "data").write_text("x")

    folder.close()
    folder.close()  # idempotent

    assert not folder.path.exists()


def test_a_folder_is_removed_when_its_object_is_dropped(tmp_path: Path) -> None:
    path = ScratchDirectory(PREFIX, tmp_path).path
    assert not path.exists()  # the object died at once (no reference kept)


@pytest.mark.slow  # starts a Python process
def test_a_folder_is_removed_when_the_interpreter_exits_without_close(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from target_pinterest_audiences.scratch import ScratchDirectory\n"
        f"keep = ScratchDirectory({PREFIX!r}, Path({str(tmp_path)!r}))\n"
        "print(keep.path, flush=True)\n"
        "sys.exit(1)  # e.g. a start-up failure after the folder was made\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr  # the exit, not a failure before it
    assert "Traceback" not in done.stderr
    folder = Path(done.stdout.strip())
    assert folder.parent == tmp_path  # it was made, there
    assert not folder.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # starts a Python process
def test_a_folder_of_a_killed_run_is_removed(tmp_path: Path) -> None:
    stale = killed_owner_folder(tmp_path)
    age(stale)

    assert remove_stale(PREFIX, tmp_path) == [stale]
    assert not stale.exists()


def test_a_live_owners_folder_is_never_removed(tmp_path: Path) -> None:
    live = ScratchDirectory(PREFIX, tmp_path)
    age(live.path)
    try:
        assert remove_stale(PREFIX, tmp_path) == []
        assert live.path.is_dir()
    finally:
        live.close()


@pytest.mark.slow  # starts a Python process
def test_a_live_owners_folder_in_another_process_is_never_removed(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from target_pinterest_audiences.scratch import ScratchDirectory\n"
        f"d = ScratchDirectory({PREFIX!r}, Path({str(tmp_path)!r}))\n"
        "print(d.path, flush=True)\n"
        "sys.stdin.read()\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        folder = Path(owner.stdout.readline().strip())
        age(folder)
        assert remove_stale(PREFIX, tmp_path) == []
        assert folder.is_dir()
    finally:
        assert owner.stdin is not None
        owner.stdin.close()
        owner.wait(timeout=30)
    assert not folder.exists()  # its owner removed it on the way out


@pytest.mark.slow  # starts a Python process
def test_a_young_folder_is_left_alone_even_if_unlocked(tmp_path: Path) -> None:
    # Its owner may be between creating it and taking the lock.
    stale = killed_owner_folder(tmp_path)
    assert remove_stale(PREFIX, tmp_path) == []
    assert stale.is_dir()


@pytest.mark.slow  # starts a Python process
@pytest.mark.parametrize("kind", ["no-lock-file", "other-prefix", "a-file"])
def test_what_is_not_provably_ours_and_stale_is_left_alone(tmp_path: Path, kind: str) -> None:
    if kind == "no-lock-file":  # e.g. made by an older version: its owner is unknown
        thing = tmp_path / f"{PREFIX}abc"
        thing.mkdir()
    elif kind == "other-prefix":
        thing = killed_owner_folder(tmp_path).rename(tmp_path / "someone-else-123")
    else:
        thing = tmp_path / f"{PREFIX}file"
        thing.write_text("x")
    age(thing)

    assert remove_stale(PREFIX, tmp_path) == []
    assert thing.exists()


def test_an_unreadable_temp_directory_is_not_an_error(tmp_path: Path) -> None:
    assert remove_stale(PREFIX, tmp_path / "missing") == []


@pytest.mark.slow  # starts a Python process
def test_removing_stale_folders_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    age(killed_owner_folder(tmp_path))
    with caplog.at_level("INFO", logger=scratch.__name__):
        remove_stale(PREFIX, tmp_path)
    assert f"Removed 1 temporary folder(s) left in {tmp_path} by runs that were killed" in (
        caplog.text
    )
