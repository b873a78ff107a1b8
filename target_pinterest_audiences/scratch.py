"""Scratch data: folders that never outlive their run, and writes that fail clearly.

Mirror mode keeps its snapshot in a temporary folder. Every normal exit path removes it,
but a SIGKILLed (or OOM-killed) run cannot, and a 10M-member snapshot left in ``/tmp`` by
every killed run fills the disk. So each folder carries its owner's pid in its name and
an exclusive lock (``flock``) on a file inside, held for the owner's whole life; the kernel
drops the lock when the owner dies, however it dies. At start, a run removes the folders
of this prefix whose lock it can take: those are provably stale. A folder whose lock is
held belongs to a live run (also one in another PID namespace sharing the temp directory)
and is never touched, and neither is a folder younger than a minute (its owner may not have
taken the lock yet) or one without a lock file (not ours to judge).

Scratch data is large (a snapshot or a pass of upsert rows), and a full temporary
directory is the fault a user meets most: :func:`writing` turns its ``OSError`` into a
message that names the directory and the fix instead of a traceback.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from target_pinterest_audiences.errors import ScratchSpaceError

if sys.platform != "win32":  # Windows has no flock: no stale-folder cleaning there
    import fcntl

logger = logging.getLogger(__name__)

LOCK_FILE = "owner.lock"
# A folder this young may be between its creation and its owner taking the lock.
_MIN_STALE_AGE_SECONDS = 60.0


class ScratchDirectory:
    """A temporary folder owned (locked) by this process until :meth:`close`.

    Removed by :meth:`close`, or at the latest when the object is garbage-collected or the
    interpreter exits (an exception on the way out, ``sys.exit`` in a failed start-up).
    """

    def __init__(self, prefix: str, parent: Path | None = None) -> None:
        self.path = Path(
            tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent or tempfile.gettempdir())
        )
        lock = (self.path / LOCK_FILE).open("w", encoding="ascii")
        self._finalizer = weakref.finalize(self, _remove, self.path, lock)
        if sys.platform != "win32":
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write(f"{os.getpid()}\n")
        lock.flush()

    def close(self) -> None:
        """Remove the folder and everything in it (idempotent)."""
        self._finalizer()


def _remove(path: Path, lock: IO[str]) -> None:
    close_quietly(lock)  # on a full disk its pid may not have been written: close fails
    shutil.rmtree(path, ignore_errors=True)


def remove_stale(prefix: str, parent: Path | None = None) -> list[Path]:
    """Remove folders named ``prefix*`` whose owner is provably gone; return them."""
    if sys.platform == "win32":
        return []
    parent = Path(parent or tempfile.gettempdir())
    removed = []
    try:
        candidates = [entry for entry in parent.iterdir() if entry.name.startswith(prefix)]
    except OSError:
        return []
    now = time.time()
    for folder in candidates:
        try:
            if not folder.is_dir() or folder.is_symlink():
                continue
            if now - folder.stat().st_mtime < _MIN_STALE_AGE_SECONDS:
                continue
            if _owner_is_gone(folder / LOCK_FILE):
                shutil.rmtree(folder)
                removed.append(folder)
        except OSError as exc:  # another user's folder, a race with its owner: leave it
            logger.debug("Not removing %s: %s", folder, exc)
    if removed:
        logger.info(
            "Removed %d temporary folder(s) left in %s by runs that were killed",
            len(removed),
            parent,
        )
    return removed


def _owner_is_gone(lock_path: Path) -> bool:
    """Whether nobody holds the lock (then nobody can: it is only taken at creation)."""
    if sys.platform == "win32":
        return False
    try:
        handle = lock_path.open("r", encoding="ascii")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


@contextmanager
def writing(what: str) -> Iterator[None]:
    """Scratch writes inside: an ``OSError`` becomes a :class:`ScratchSpaceError`.

    Its message names ``what`` was being written, the directory, and the fix. It says
    nothing is lost because it is so: scratch data is rebuilt from the input, and the run
    stops before STATE moves past the records it held, so the re-run reads them again.
    """
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__  # never the file name: ours, but noise
        msg = (
            f"Cannot write {what} in the temporary directory {tempfile.gettempdir()} "
            f"({reason}). Free space there, or set TMPDIR to a directory on a disk with "
            "room, and run again: nothing is lost, the records after the last STATE are "
            "read again"
        )
        raise ScratchSpaceError(msg) from exc


def close_quietly(file: IO[Any]) -> None:
    """Close a scratch file whose data is no longer wanted, even after a failed write.

    Closing flushes the buffer, and after a write failed (full disk) it still holds the
    bytes that did not fit: the flush fails again. The file is closed all the same, and
    its data is scratch, so that second failure is dropped instead of hiding the first.
    """
    try:
        file.close()
    except OSError as exc:
        logger.debug("Dropped unwritten scratch data on close: %s", exc.strerror)
